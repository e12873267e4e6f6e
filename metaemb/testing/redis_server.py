"""A real redis-server (Debian's package) on free loopback ports, for tests and benchmarks: one
server, or a Redis Cluster of several masters (`redis-server --cluster-enabled yes` each, joined
by `redis-cli --cluster create`).

    with serve() as connection:             # "127.0.0.1:PORT", what [feast] redis_connection takes
        ...
    with serve_cluster(3) as connection:    # "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" (redis_type = redis_cluster)
        ...
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from metaemb.testing.loopback import free_port, free_port_pair, stop

CLUSTER_BUS_OFFSET = 10_000  # Redis Cluster's bus port is the node's port + 10000


def _exe(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed: `bash scripts/install-services.sh` apt-get installs Debian's "
                           "redis-server (it has redis-server and redis-cli)")
    return exe


def _start(folder: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [_exe("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--logfile", str(folder / "redis.log"), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def serve() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="metaemb-redis-") as data:
        proc = _start(Path(data), port)
        try:
            _wait_for_ping(port, proc, Path(data) / "redis.log")
            yield f"127.0.0.1:{port}"
        finally:
            stop(proc)


@contextlib.contextmanager
def serve_cluster(masters: int = 3, timeout_s: float = 60) -> Iterator[str]:
    """A Redis Cluster of `masters` masters (no replicas) on loopback, its 16384 slots shared out."""
    import redis

    ports = []
    while len(ports) < masters:  # each node also listens on its cluster bus port, port + 10000
        port = free_port_pair(CLUSTER_BUS_OFFSET)
        if port not in ports and port + CLUSTER_BUS_OFFSET not in ports:
            ports.append(port)
    with tempfile.TemporaryDirectory(prefix="metaemb-redis-cluster-") as data:
        procs = []
        try:
            for port in ports:
                folder = Path(data) / str(port)
                folder.mkdir()
                procs.append(_start(folder, port, "--cluster-enabled", "yes", "--cluster-config-file",
                                    str(folder / "nodes.conf"), "--cluster-node-timeout", "5000"))
            for port, proc in zip(ports, procs):
                _wait_for_ping(port, proc, Path(data) / str(port) / "redis.log")
            nodes = [f"127.0.0.1:{p}" for p in ports]
            created = subprocess.run([_exe("redis-cli"), "--cluster", "create", *nodes, "--cluster-replicas", "0",
                                      "--cluster-yes"], capture_output=True, text=True, timeout=timeout_s)
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}{created.stderr[-2000:]}")
            deadline = time.monotonic() + timeout_s
            while not all(redis.Redis(port=p, socket_timeout=2).cluster("info").get("cluster_state") == "ok"
                          for p in ports):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the loopback Redis Cluster on {nodes} did not reach cluster_state:ok")
                time.sleep(0.2)
            yield ",".join(nodes)
        finally:
            for proc in procs:
                stop(proc)


def _wait_for_ping(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 20) -> None:
    """Until the server we started answers PING on its port (short socket timeouts: a port that
    another process took in the meantime must not hang us)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"redis-server on 127.0.0.1:{port} exited with code {proc.returncode}: {tail}")
        try:
            if client.ping():
                return
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer PING on 127.0.0.1:{port} within {timeout_s:.0f}s")
