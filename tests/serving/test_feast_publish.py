"""Feast side, end to end on real parts: Delta table -> feast apply -> publish (fast and
stock materialize) -> get_online_features, on SQLite and on a real redis-server; the
publish gate; kill -9 in the middle of a publish (a real subprocess)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from core import config as config_mod
from core import tables
from serving import day, feast_repo, publish, publish_log, slots
from serving.gate import GateError
from serving.online import encode
from serving.online import redis as redis_store
from pipelines.faults import PAUSE_AT_ENV, PAUSE_MARKER_ENV

from project_helpers import make_config, online_store_config
from serving_helpers import random_embeddings, write_meta_embeddings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
N = 200


def keys(n=N, prefix="u"):
    return [f"{prefix}{i}" for i in range(n)]


def all_rows(cfg, n=N):
    df = feast_repo.lookup(cfg, [{"user_id": k} for k in keys(n)] + [{"user_id": "missing"}])
    return df.sort_values("user_id").reset_index(drop=True)


def sqlite_dump(cfg) -> list:
    """The rows of the served view's table."""
    con = sqlite3.connect(cfg.path(cfg.feast.sqlite_path))
    try:
        return con.execute(
            f"SELECT entity_key, feature_name, value, event_ts FROM {cfg.feast.project}_{served_view(cfg)} "
            "ORDER BY entity_key, feature_name").fetchall()
    finally:
        con.close()


def served_view(cfg) -> str:
    return slots.served_view(feast_repo.feature_store(cfg))


def served_intervals(cfg) -> list:
    """The materialization intervals the registry records for the served view."""
    store = feast_repo.feature_store(cfg)
    return [tuple(i) for i in store.get_feature_view(slots.served_view(store)).materialization_intervals]


# ------------------------------------------------------------------ repo / apply


@pytest.mark.unit
def test_committed_feature_store_yaml_is_the_default_config_rendered():
    committed = (PROJECT_ROOT / "feature_repo" / "feature_store.yaml").read_text()
    default = config_mod.from_dict({}, source="<defaults>", base_dir=PROJECT_ROOT)
    assert committed == feast_repo.render_yaml(default), (
        "feature_repo/feature_store.yaml drifted from core.config defaults: regenerate with "
        "`metaemb feast render > feature_repo/feature_store.yaml`")
    from feast.repo_config import load_repo_config

    rc = load_repo_config(PROJECT_ROOT / "feature_repo", PROJECT_ROOT / "feature_repo" / "feature_store.yaml")
    assert rc.project == default.feast.project and rc.online_store.type == "sqlite"


@pytest.mark.spark
def test_feast_cli_apply_on_the_repo_as_written(spark, tmp_path):
    """The real `feast apply` CLI over feature_repo/, driven by a METAEMB_CONFIG file."""
    cfg_file = tmp_path / "metaemb.toml"
    cfg_file.write_text(
        f'[pipeline]\nstorage_root = "{tmp_path / "lake"}"\n'
        f'[feast]\nregistry_path = "{tmp_path / "feast" / "registry.db"}"\n'
        f'sqlite_path = "{tmp_path / "feast" / "online.db"}"\nproject = "cli_apply"\n'
        f'[spark]\njars_dir = "{PROJECT_ROOT / ".jars"}"\nmaster = "local[1]"\n'
    )
    cfg = config_mod.load(cfg_file)
    write_meta_embeddings(spark, cfg, D1, keys(20), random_embeddings(20))  # source validation reads it
    yaml_file = tmp_path / "feature_store.yaml"
    yaml_file.write_text(feast_repo.render_yaml(cfg, relative=False))
    env = {**os.environ, "METAEMB_CONFIG": str(cfg_file)}
    feast_exe = str(Path(sys.executable).parent / "feast")
    proc = subprocess.run([feast_exe, "-c", str(PROJECT_ROOT / "feature_repo"), "-f", str(yaml_file), "apply"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    store = feast_repo.feature_store(cfg)
    for view in tables.FEATURE_VIEWS:
        fv = store.get_feature_view(view)
        assert [f.name for f in fv.features] == ["embedding", "n_samples", "model_version"]
        assert fv.batch_source.path == str(cfg.table_location(tables.META_EMBEDDINGS))
    assert slots.served_view(store) == tables.FEATURE_VIEWS[0]
    assert sorted(e.name for e in store.list_entities()) == ["user_id"]
    # ...and a publish + lookup through the CLI-applied registry works
    publish.write_partition(cfg, D1, "fast", store=store)
    out = feast_repo.lookup(cfg, [{"user_id": "u3"}])
    np.testing.assert_allclose(out["embedding"][0], random_embeddings(20)[3], rtol=0, atol=0)


# ------------------------------------------------------- fast == stock materialize


def _two_stores(tmp_path, **feast_extra):
    """Two configs over ONE lake: store A published with fast, store B with materialize."""
    lake = {"storage_root": str(tmp_path / "lake")}
    a = make_config(tmp_path / "a", pipeline=lake, feast={"project": "fast_p", **feast_extra})
    b = make_config(tmp_path / "b", pipeline=lake, feast={"project": "mat_p", **feast_extra})
    return a, b


@pytest.mark.spark
@pytest.mark.parametrize("online", ["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def test_fast_and_materialize_give_identical_lookups(spark, tmp_path, online, request):
    extra = {}
    if online == "redis":
        extra = {"online_store": "redis", "redis_connection": request.getfixturevalue("redis_server")}
    a, b = _two_stores(tmp_path, **extra)
    emb1 = random_embeddings(N, seed=1)
    write_meta_embeddings(spark, a, D1, keys(), emb1, model_version="m1")
    # write_partition = publish without gate/log (those are covered below); same store calls
    ra = publish.write_partition(a, D1, "fast", store=feast_repo.apply(a))
    publish.write_partition(b, D1, "materialize", store=feast_repo.apply(b))
    assert ra.rows == N
    la, lb = all_rows(a), all_rows(b)
    assert la.equals(lb), (la.head(), lb.head())
    row = la[la.user_id == "u7"].iloc[0]
    np.testing.assert_array_equal(np.asarray(row["embedding"], dtype=np.float32), emb1[7])
    assert row["model_version"] == "m1" and int(row["n_samples"]) == 8
    assert la[la.user_id == "missing"]["embedding"].isna().all()
    # the registry knows both stores serve the same interval, from the same namespace
    assert served_intervals(a) == served_intervals(b) == [slots.day_interval(D1)]
    assert served_view(a) == served_view(b) == tables.FEATURE_VIEWS[1]
    # day 2: a subset of keys with new values -> both paths agree again, and serve day 2 alone
    emb2 = random_embeddings(N, seed=2) * 0.1 + emb1  # small drift
    write_meta_embeddings(spark, a, D2, keys(150), emb2[:150], model_version="m2")
    publish.write_partition(a, D2, "fast")
    publish.write_partition(b, D2, "materialize")
    la2, lb2 = all_rows(a), all_rows(b)
    assert la2.equals(lb2)
    assert (la2.model_version == "m2").sum() == 150 and la2.embedding.isna().sum() == N - 150 + 1


@pytest.mark.spark
def test_republish_same_date_is_idempotent(spark, cfg):
    emb = random_embeddings(N, seed=3)
    write_meta_embeddings(spark, cfg, D1, keys(), emb)
    publish.publish(cfg, D1)
    before, dump1 = all_rows(cfg), sqlite_dump(cfg)
    res = publish.publish(cfg, D1)
    assert res.status == "published" and res.rows == N
    assert all_rows(cfg).equals(before)
    assert sqlite_dump(cfg) == dump1 and len(dump1) == 3 * N
    assert set(served_intervals(cfg)) == {slots.day_interval(D1)}
    log = publish_log.publish_log(cfg)
    assert [(r.run_date, r.status, r.rows, r.method) for r in log.itertuples()] == [(D1, "published", N, "fast")] * 2


# ---------------------------------------------------------------------------- gate


@pytest.mark.spark
def test_gate_blocks_nan_and_row_drop_and_leaves_store_untouched(spark, cfg):
    write_meta_embeddings(spark, cfg, D1, keys(), random_embeddings(N, seed=4))
    publish.publish(cfg, D1)
    served, dump = all_rows(cfg), sqlite_dump(cfg)

    bad = random_embeddings(N, seed=5)
    bad[3, 0] = np.nan
    bad[9, 5] = np.inf
    write_meta_embeddings(spark, cfg, D2, keys(), bad)
    with pytest.raises(GateError) as e:
        publish.publish(cfg, D2)
    msg = str(e.value)
    assert "2 embeddings are null or hold NaN/inf" in msg and "nan_inf_rows=2" in msg and f"rows={N}" in msg
    assert sqlite_dump(cfg) == dump and all_rows(cfg).equals(served)

    write_meta_embeddings(spark, cfg, D2, keys(10), random_embeddings(10, seed=6))  # 95% drop
    with pytest.raises(GateError) as e:
        publish.publish(cfg, D2)
    msg = str(e.value)
    assert f"row count 10 vs {N} on {D1}" in msg and "ratio 0.05 outside [0.5, 2]" in msg
    assert "prev_rows=200" in msg and "row_ratio=0.05" in msg
    assert sqlite_dump(cfg) == dump and all_rows(cfg).equals(served)

    # drift: same keys, unrelated vectors -> mean cosine ~ 0 -> drift ~ 1 > 0.5
    write_meta_embeddings(spark, cfg, D2, keys(), random_embeddings(N, seed=7))
    with pytest.raises(GateError, match=r"drift 1 - mean cosine = [01]\.\d+ over 200 common keys"):
        publish.publish(cfg, D2)
    assert sqlite_dump(cfg) == dump

    statuses = list(publish_log.publish_log(cfg)["status"])
    assert statuses == ["published", "blocked", "blocked", "blocked"]
    assert served_intervals(cfg) == [slots.day_interval(D1)]


# ------------------------------------------------------------------------ kill -9

_CHILD = r"""
import json, sys
from datetime import date
from core import config as config_mod
from serving import day
from serving import feast_repo
from serving.online import encode
from serving.online import redis as redis_store
from serving import publish
cfg = config_mod.from_dict(json.loads(sys.argv[1]), source="<child>", base_dir=sys.argv[2])
publish.write_partition(cfg, date.fromisoformat(sys.argv[3]), "fast")  # reads the day through delta-rs
print("DONE")
"""


def _publish_in_child(cfg, run_date, tmp_path, pause_at=None):
    marker = tmp_path / "paused"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    if pause_at:
        env.update({PAUSE_AT_ENV: pause_at, PAUSE_MARKER_ENV: str(marker)})
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(cfg.to_dict()), cfg.base_dir, run_date.isoformat()],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if pause_at is None:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "DONE" in out, err[-3000:]
        return None
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "child never reached the pause point"
        time.sleep(0.05)
    return proc


def rows_in(cfg, view: str) -> int:
    """Rows (SQLite) or task hashes (Redis) that hold the view's namespace."""
    store = feast_repo.feature_store(cfg)
    if cfg.feast.online_store == "sqlite":
        con = sqlite3.connect(cfg.path(cfg.feast.sqlite_path))
        try:
            return con.execute(f"SELECT COUNT(*) FROM {cfg.feast.project}_{view}").fetchone()[0]
        finally:
            con.close()
    client, ns = redis_store.connect(cfg), redis_store.namespace(store, view)
    try:
        return sum(bool(client.hexists(k, ns.ts_field)) for k in client.scan_iter(match=b"*" + ns.project))
    finally:
        client.close()


KILLS = [("sqlite", "sqlite:mid-transaction", D1), ("sqlite", "publish:after-switch", D2)] + [
    pytest.param("redis", where, serves, marks=pytest.mark.services)
    for where, serves in (("redis:mid-write", D1), ("publish:before-switch", D1), ("publish:after-switch", D2),
                          ("redis:mid-clean", D2))] + [
    pytest.param("redis_cluster", where, serves, marks=pytest.mark.services)
    for where, serves in (("redis:mid-write", D1), ("redis:mid-clean", D2))]


@pytest.mark.spark
@pytest.mark.parametrize("online,pause_at,serves", KILLS)
def test_kill9_mid_publish_serves_one_whole_day(spark, tmp_path, online, pause_at, serves, request):
    """Killed before the switch: day 1 stays served; after it: day 2 is. Either way whole, and a
    rerun completes and leaves only the served namespace."""
    extra = {"project": f"killtest_{pause_at.replace(':', '_').replace('-', '_')}", "write_batch_rows": 100,
             **online_store_config(online, request)}
    cfg = make_config(tmp_path, feast=extra)
    n = 1000
    emb1, emb2 = random_embeddings(n, seed=8), random_embeddings(n, seed=9)
    write_meta_embeddings(spark, cfg, D1, keys(n), emb1, model_version="day1")
    publish.write_partition(cfg, D1, "fast", store=feast_repo.apply(cfg))
    day1 = all_rows(cfg, n)
    assert set(day1.model_version.dropna()) == {"day1"}

    write_meta_embeddings(spark, cfg, D2, keys(n), emb2, model_version="day2")
    proc = _publish_in_child(cfg, D2, tmp_path, pause_at=pause_at)
    try:
        paused = all_rows(cfg, n)  # what readers get while the child is parked there
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    after = all_rows(cfg, n)
    assert set(after.model_version.dropna()) == {"day1" if serves == D1 else "day2"}, "readers see a mix of two days"
    assert after.equals(paused) and (after.equals(day1) if serves == D1 else True)
    assert served_intervals(cfg)[-1] == slots.day_interval(serves)

    # a rerun completes, serves the whole of day 2, and leaves nothing in the other namespace
    publish.write_partition(cfg, D2, "fast")
    day2 = all_rows(cfg, n)
    assert set(day2.model_version.dropna()) == {"day2"}
    got = np.stack(day2[day2.user_id != "missing"].sort_values(
        "user_id", key=lambda s: s.str[1:].astype(int))["embedding"].to_numpy()).astype(np.float32)
    np.testing.assert_array_equal(got, emb2)
    assert rows_in(cfg, slots.other_view(served_view(cfg))) == 0
    assert rows_in(cfg, served_view(cfg)) == (3 * n if online == "sqlite" else n)


@pytest.mark.spark
def test_read_partition_through_delta_rs_equals_spark_rows(spark, cfg):
    from pyspark.sql import functions as F

    emb = random_embeddings(50, seed=11)
    write_meta_embeddings(spark, cfg, D1, keys(50), emb)
    write_meta_embeddings(spark, cfg, D2, keys(30, "w"), random_embeddings(30, seed=12))
    got = day.read_partition(cfg, D1)
    ref = (spark.read.format("delta").load(str(cfg.table_location(tables.META_EMBEDDINGS)))
           .where(F.col("run_date") == F.lit(D1)).drop("run_date").toArrow())
    enc = encode.encoding(cfg)
    a = encode.encode_batch(enc, got)
    b = encode.encode_batch(enc, ref)
    order_a = np.argsort(a.entity_keys)
    order_b = np.argsort(b.entity_keys)
    assert a.rows == b.rows == 50
    for name in a.values:
        assert [a.values[name][i] for i in order_a] == [b.values[name][i] for i in order_b]
    assert [a.event_ts[i] for i in order_a] == [b.event_ts[i] for i in order_b]
