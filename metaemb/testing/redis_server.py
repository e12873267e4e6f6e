"""A real redis-server (Debian's package) on a free loopback port, for tests and benchmarks.

    with serve() as connection:     # "127.0.0.1:PORT", what [feast] redis_connection takes
        ...
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from typing import Iterator

from metaemb.testing.loopback import free_port, stop


@contextlib.contextmanager
def serve() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: run `scripts/services.sh start redis` once "
                           "(it apt-get installs Debian's redis-server)")
    import redis

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="metaemb-redis-") as data:
        proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", data, "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--logfile", f"{data}/redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_ping(redis.Redis(host="127.0.0.1", port=port), port)
            yield f"127.0.0.1:{port}"
        finally:
            stop(proc)


def _wait_for_ping(client, port: int) -> None:
    import redis

    for _ in range(100):
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer PING on 127.0.0.1:{port}")
