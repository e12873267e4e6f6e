"""A reader that looks tasks up through Feast, without pause, all through a publish that is
killed half way and then rerun, never sees two days mixed: each lookup returns one whole day,
day 1 until the switch and day 2 from then on (SQLite, a real Redis, a Redis Cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date

import numpy as np
import pytest

from pipelines.faults import PAUSE_AT_ENV, PAUSE_MARKER_ENV
from project_helpers import PROJECT_ROOT, make_config, online_store_config
from serving import feast_repo, publish
from serving_helpers import random_embeddings, write_meta_embeddings

pytestmark = pytest.mark.spark

D1, D2 = date(2026, 4, 1), date(2026, 4, 2)
N, SAMPLE = 600, 40

CHILD = r"""
import json, sys
from datetime import date
from core import config as config_mod
from serving import publish
cfg = config_mod.from_dict(json.loads(sys.argv[1]), source="<child>", base_dir=sys.argv[2])
publish.write_partition(cfg, date.fromisoformat(sys.argv[3]), "fast")
"""


class Reader(threading.Thread):
    """Looks the sample up again and again on one long-lived FeatureStore; records which day
    each lookup returned: "day1", "day2", or "mixed" (rows of both, or a task missing)."""

    def __init__(self, cfg, keys, days: dict[str, np.ndarray]):
        super().__init__(daemon=True)
        self.cfg, self.keys, self.days = cfg, keys, days
        self.seen: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        store = feast_repo.feature_store(self.cfg)
        try:
            while not self.stop.is_set():
                df = feast_repo.lookup(self.cfg, [{"user_id": k} for k in self.keys], store=store)
                got = {r.user_id: r.embedding for r in df.itertuples()}
                kinds = set()
                for k in self.keys:
                    v = got.get(k)
                    match = [name for name, emb in self.days.items()
                             if v is not None and np.array_equal(np.asarray(v, np.float32), emb[int(k[1:])])]
                    kinds.add(match[0] if match else "none")
                self.seen.append(kinds.pop() if len(kinds) == 1 and "none" not in kinds else "mixed")
        except BaseException as e:  # surfaced by the test
            self.error = e

    def read_for(self, seconds: float, at_least: int = 2, timeout_s: float = 60) -> int:
        """Let it read for `seconds` and at least `at_least` lookups; how many it made."""
        start, deadline = len(self.seen), time.monotonic() + timeout_s
        time.sleep(seconds)
        while len(self.seen) - start < at_least and self.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.seen) - start


@pytest.mark.parametrize("online, pause_at", [
    ("sqlite", "sqlite:mid-transaction"),
    pytest.param("redis", "redis:mid-write", marks=pytest.mark.services),
    pytest.param("redis_cluster", "redis:mid-write", marks=pytest.mark.services),
])
def test_a_reader_sees_one_whole_day_through_a_killed_and_a_rerun_publish(spark, tmp_path, online, pause_at,
                                                                          request):
    cfg = make_config(tmp_path, feast={"project": f"readers_{online}", "write_batch_rows": 50,
                                       "switch_grace_s": 0.5, **online_store_config(online, request)})
    keys = [f"u{i}" for i in range(N)]
    days = {"day1": random_embeddings(N, seed=31), "day2": random_embeddings(N, seed=32)}
    write_meta_embeddings(spark, cfg, D1, keys, days["day1"], model_version="v1")
    publish.write_partition(cfg, D1, "fast", store=feast_repo.apply(cfg))
    write_meta_embeddings(spark, cfg, D2, keys, days["day2"], model_version="v1")

    reader = Reader(cfg, keys[::N // SAMPLE], days)
    reader.start()
    try:
        assert reader.read_for(0.5) > 0, reader.error
        marker = tmp_path / "paused"
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), PAUSE_AT_ENV: pause_at, PAUSE_MARKER_ENV: str(marker)}
        import json

        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg.to_dict()), cfg.base_dir,
                                  D2.isoformat()], env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not marker.exists():
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.time() < deadline, "the publish never reached its pause point"
            time.sleep(0.05)
        assert reader.read_for(0.5) > 0  # while day 2 is half written
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert reader.read_for(0.3) > 0
        killed_at = len(reader.seen)
        publish.write_partition(cfg, D2, "fast")  # the rerun, with the reader still reading
        assert reader.read_for(0.5) > 0
    finally:
        reader.stop.set()
        reader.join(timeout=60)
    assert reader.error is None, reader.error
    seen = reader.seen
    assert "mixed" not in seen, f"a reader saw two days mixed: {seen.count('mixed')} of {len(seen)} lookups"
    assert set(seen[:killed_at]) == {"day1"}, "a killed publish changed what readers see"
    assert seen[-1] == "day2"
    switch = seen.index("day2")
    assert set(seen[switch:]) == {"day2"}, "readers went back to day 1 after the switch"
