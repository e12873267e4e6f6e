"""What every loopback server here needs: a free port, and a stop that does not hang."""

from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair(offset: int, highest: int = 65535) -> int:
    """A free port p with p + offset free too and at most `highest` (a Redis Cluster node listens
    on p and on its bus port p + 10000)."""
    for _ in range(1000):
        port = free_port()
        if port + offset > highest:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port p with p + {offset} free and at most {highest}")


def stop(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited after grace_s."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
