"""Fixtures for the Feast tests: a real redis-server on a free loopback port (helpers in
feastutil.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server (Debian's package) on 127.0.0.1:<free port>; stopped after."""
    from metaemb.testing import redis_server as loopback_redis

    try:
        with loopback_redis.serve() as connection:
            yield connection
    except RuntimeError as e:
        pytest.fail(str(e))
