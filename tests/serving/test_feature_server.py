"""`metaemb serve` (Feast's HTTP feature server) answers /get-online-features with the vectors
`metaemb lookup` reads, on SQLite and on a real redis-server; a real subprocess on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from serving import feast_repo
from serving import publish

from project_helpers import make_config
from serving_helpers import random_embeddings, toml_file, write_meta_embeddings
from metaemb.testing.loopback import free_port

pytestmark = [pytest.mark.spark, pytest.mark.services]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
D1 = date(2026, 3, 1)
KEYS = [f"u{i}" for i in range(20)]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def server_for(tmp_path):
    procs = []

    def start(cfg):
        port = free_port()
        cmd = [sys.executable, "-m", "metaemb", "--config", str(toml_file(cfg, tmp_path / "metaemb.toml")),
               "serve", "--port", str(port)]
        log = open(tmp_path / "serve.log", "w")
        proc = subprocess.Popen(cmd, cwd=str(PROJECT_ROOT), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, start_new_session=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    return url
            except OSError:
                time.sleep(0.5)
        pytest.fail("metaemb serve did not answer /health in 120 s:\n" + (tmp_path / "serve.log").read_text()[-3000:])

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.services
@pytest.mark.parametrize("online", ["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def test_http_feature_server_serves_what_lookup_reads(spark, tmp_path, online, request, server_for):
    extra = {"online_store": "redis", "redis_connection": request.getfixturevalue("redis_server")} \
        if online == "redis" else {}
    cfg = make_config(tmp_path, feast=extra)
    emb = random_embeddings(len(KEYS), seed=21)
    write_meta_embeddings(spark, cfg, D1, KEYS, emb, model_version="m1")
    publish.write_partition(cfg, D1, "fast", store=feast_repo.apply(cfg))
    url = server_for(cfg)

    asked = ["u3", "u17", "missing"]
    got = post(f"{url}/get-online-features", {"feature_service": "metaemb", "entities": {"user_id": asked}})
    names = got["metadata"]["feature_names"]
    columns = {name: got["results"][i] for i, name in enumerate(names)}
    assert columns["user_id"]["values"] == asked
    served = columns["embedding"]["values"]
    want = feast_repo.lookup(cfg, [{"user_id": k} for k in asked])
    for key, http_vec, sdk_vec in zip(asked, served, want["embedding"]):
        if key == "missing":
            # no value (Feast's status for it differs by store: NOT_FOUND on SQLite, PRESENT on Redis)
            assert http_vec is None and sdk_vec is None
            continue
        np.testing.assert_array_equal(np.asarray(http_vec, dtype=np.float32), np.asarray(sdk_vec, dtype=np.float32))
        np.testing.assert_array_equal(np.asarray(http_vec, dtype=np.float32), emb[KEYS.index(key)])
    assert columns["model_version"]["values"][:2] == ["m1", "m1"]
