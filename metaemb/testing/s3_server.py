"""A real S3 endpoint on loopback for tests and benchmarks: moto's standalone server.

    with serve(buckets=["lake"]) as endpoint:      # "http://127.0.0.1:PORT"
        ...                                          # any client, path-style, plain http

moto's server speaks S3's HTTP API (SigV4, multipart uploads, conditional PUTs) in a child
process; it accepts any credentials unless `authenticate=True`, which switches IAM checks on
from the first request (then every key pair that IAM did not issue is refused with 403).
MinIO is the production-like choice (docker-compose.yml) but is not installable from the
package registries this project builds from.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

from metaemb.testing.loopback import free_port, stop

# moto needs *some* credentials in every client; these are its documented test values.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def s3_section(endpoint: str) -> dict:
    """The config's [s3] section for this endpoint (path-style, plain http, us-east-1)."""
    return {"endpoint_url": endpoint, "path_style": True, "region": "us-east-1"}


def _wait_until_up(endpoint: str, proc: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with code {proc.returncode} before answering on {endpoint}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto server did not answer on {endpoint} within {timeout_s:.0f}s")


def create_buckets(endpoint: str, buckets: list[str]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)


@contextlib.contextmanager
def serve(buckets: list[str] = ("lake",), *, authenticate: bool = False) -> Iterator[str]:
    """Start moto's S3 server on a free loopback port, create the buckets, yield its URL, stop it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, **TEST_CREDENTIALS}
    if authenticate:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(len(buckets))  # the bucket creations, then IAM
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(endpoint, proc)
        create_buckets(endpoint, list(buckets))
        yield endpoint
    finally:
        stop(proc)


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers (a hung load balancer)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
