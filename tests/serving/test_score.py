"""metaemb score: embeddings and model versions read through Feast (SQLite), probabilities from
the model version's serving artifact; the refusals; and the item hashing against Spark's."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from core import artifact_contract as contract
from core import tables
from core.artifact_contract import ArtifactError
from metaemb import cli
from models.checkpoint import Checkpoint, save_checkpoint
from models.blocks import init_params
from models.onnx_export import global_logits
from models.blocks import ModelSpec
from pipelines.train import export_artifact
from serving import feast_repo, slots
from serving import publish
from serving.onnx_runtime import load_artifact, load_for_version
from serving.score import OnlineStoreError, ScoreError, score

from project_helpers import make_config
from serving_helpers import event_ts, random_embeddings, toml_file
from metaemb.testing.loopback import free_port

pytestmark = pytest.mark.spark

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
CONTEXT = ["ctx_0", "ctx_1", "ctx_2"]
USERS = [f"u{i}" for i in range(30)]
OTHERS = [f"s{i}" for i in range(5)]  # published under model C, whose artifact takes 4-long embeddings


def checkpoint(seed: int, embedding_dim: int = 8) -> Checkpoint:
    spec = ModelSpec(meta_in=4, other_in=len(CONTEXT), meta_hidden=16, embedding_dim=embedding_dim,
                     global_hidden=(32, 16), item_buckets=50, item_dim=4)
    g = torch.Generator().manual_seed(seed)
    stats = {"meta_mean": torch.randn(4, generator=g), "meta_std": torch.rand(4, generator=g) + 0.5,
             "other_mean": torch.randn(3, generator=g) * 3, "other_std": torch.rand(3, generator=g) * 2 + 0.5}
    return Checkpoint(spec=spec, params=init_params(spec, seed), context_columns=CONTEXT,
                      meta_columns=[f"m{i}" for i in range(4)], input_stats=stats)


def day_table(keys, emb: np.ndarray, run_date: date, model_version: str) -> pa.Table:
    """A meta_embeddings partition as publish reads it (no Spark needed to push it online)."""
    n = len(keys)
    return pa.table({
        "user_id": keys, tables.EMBEDDING: list(emb.astype(np.float32)),
        tables.N_SAMPLES: pa.array(np.full(n, 5), pa.int32()), tables.MODEL_VERSION: [model_version] * n,
        tables.EVENT_TIMESTAMP: pa.array([event_ts(run_date)] * n, pa.timestamp("us", tz="UTC")),
        tables.CREATED_TIMESTAMP: pa.array([event_ts(run_date)] * n, pa.timestamp("us", tz="UTC"))})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Model A online for USERS (day 1); rows of model C's version for OTHERS, 8 long, written
    into the served namespace by someone else than a publish (Feast's write_to_online_store: a
    publish serves one version only); B is LATEST and has nothing online. Each model's artifact
    is exported beside it."""
    tmp = tmp_path_factory.mktemp("score")
    cfg = make_config(tmp, model={"embedding_dim": 8})
    models = cfg.path(cfg.model.checkpoint_dir)
    a, c, b = checkpoint(1), checkpoint(3, embedding_dim=4), checkpoint(2)
    for ckpt in (a, c, b):
        save_checkpoint(ckpt, models)
        export_artifact(ckpt, models)
    store = feast_repo.apply(cfg)
    publish.write_partition(cfg, D1, "fast", store=store, table=day_table(
        USERS, random_embeddings(len(USERS), 8, seed=1), D1, a.version))
    others = day_table(OTHERS, random_embeddings(len(OTHERS), 8), D2, c.version).to_pandas()
    store = feast_repo.feature_store(cfg)
    store.write_to_online_store(slots.served_view(store), others)
    return cfg, a, b, c, tmp


def rows(users, n=40, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    items = [int(i) for i in rng.integers(-(2**40), 2**40, n)]
    df = pd.DataFrame({"user_id": [users[i % len(users)] for i in range(n)], "item_id": items})
    for j, c in enumerate(CONTEXT):
        df[c] = rng.normal(size=n) * 3 + j
    return df


def run_cli(cfg, tmp, *args) -> int:
    return cli.main(["--config", str(toml_file(cfg, tmp / "metaemb.toml")), *args])


def test_score_uses_the_online_embedding_or_the_default(served):
    cfg, a, *_ = served
    df = rows(USERS[:10] + ["new-1", "new-2"])
    out = score(cfg, df)
    assert out.model_version == a.version and (out.tasks_online, out.tasks_default) == (10, 2)
    online = feast_repo.lookup(cfg, [{"user_id": u} for u in df["user_id"]])
    default = load_for_version(cfg, a.version).default_embedding
    embedding = np.stack([np.asarray(e, np.float32) if e is not None else default for e in online["embedding"]])
    assert (out.frame["embedding"] == np.where(df["user_id"].str.startswith("new"), "default", "online")).all()
    items = df["item_id"].tolist()
    want = torch.sigmoid(global_logits(a, torch.tensor(df[CONTEXT].to_numpy(np.float32)),
                                       torch.from_numpy(contract.item_hash(items)), torch.from_numpy(embedding)))
    np.testing.assert_allclose(out.frame["probability"].to_numpy(), want.numpy(), rtol=0, atol=1e-5)
    assert out.frame["user_id"].tolist() == df["user_id"].tolist()


def test_cli_score_writes_the_scores(served, capsys):
    cfg, a, _, _, tmp = served
    src, dst = tmp / "in.csv", tmp / "scores.csv"
    rows(USERS[:5] + ["new-1"], n=12).to_csv(src, index=False)
    assert run_cli(cfg, tmp, "score", "--input", str(src), "--out", str(dst)) == 0
    got = pd.read_csv(dst)
    assert len(got) == 12 and got["probability"].between(0, 1).all()
    assert f"scored 12 rows with model version {a.version}: 5 task(s) embedded online, 1 with the default" \
        in capsys.readouterr().err


def test_only_new_tasks_score_with_the_latest_model(served):
    cfg, _, b, *_ = served
    df = rows(["new-1", "new-2"], n=4)
    out = score(cfg, df)
    assert out.model_version == b.version and out.tasks_default == 2
    latest = load_for_version(cfg, b.version)
    want = latest.predict(df[CONTEXT].to_numpy(), df["item_id"].tolist(), np.tile(latest.default_embedding, (4, 1)))
    np.testing.assert_allclose(out.frame["probability"], want, atol=1e-6)


def test_another_model_version_is_refused_naming_both(served, capsys):
    cfg, a, b, _, tmp = served
    with pytest.raises(ScoreError, match=f"holds embeddings of model version {a.version} .* but the artifact is "
                                         f"model version {b.version} \\(pinned by --model-version"):
        score(cfg, rows(USERS), model_version=b.version)
    held = load_for_version(cfg, b.version)
    with pytest.raises(ScoreError, match=f"model version {a.version} .* artifact is model version {b.version} "
                                         "\\(the artifact given"):
        score(cfg, rows(USERS), artifact=held)
    src = tmp / "mismatch.parquet"
    rows(USERS).to_parquet(src)
    assert run_cli(cfg, tmp, "score", "--input", str(src), "--model-version", b.version) == 2
    err = capsys.readouterr().err
    assert "model version mismatch" in err and a.version in err and b.version in err


def test_tasks_of_two_model_versions_are_refused_unless_pinned(served):
    cfg, *_ = served
    with pytest.raises(ScoreError, match="several model versions .*pick one with --model-version"):
        score(cfg, rows(USERS[:2] + OTHERS[:1]))


def test_an_artifact_of_another_shape_is_refused(served):
    cfg, _, _, c, _ = served
    with pytest.raises(ArtifactError, match=f"model {c.version} takes 4-long embeddings, but the online store "
                                            "holds 8 values for task s0"):
        score(cfg, rows(OTHERS))


def test_bad_input_is_refused_naming_the_column(served, tmp_path):
    cfg, a, *_ = served
    with pytest.raises(ScoreError, match="score input: context column of model .* 'ctx_1' missing"):
        score(cfg, rows(USERS).drop(columns=["ctx_1"]))
    src = tmp_path / "no_item.csv"
    rows(USERS).drop(columns=["item_id"]).to_csv(src, index=False)
    with pytest.raises(ScoreError, match=f"{src}: column 'item_id' missing"):
        score(cfg, src)
    with pytest.raises(ScoreError, match=f"score input not found: {tmp_path / 'nope.parquet'}"):
        score(cfg, tmp_path / "nope.parquet")
    df = rows(USERS)
    df.loc[3, "ctx_2"] = np.nan
    with pytest.raises(ScoreError, match="context column 'ctx_2' is null, NaN or inf in 1 row\\(s\\) \\(first rows: 3\\)"):
        score(cfg, df)
    df = rows(USERS)
    df.loc[5, "user_id"] = None
    with pytest.raises(ScoreError, match="column 'user_id' \\(task key\\) is empty in 1 row"):
        score(cfg, df)
    with pytest.raises(ScoreError, match="1 task\\(s\\) have no embedding online .*nobody"):
        score(cfg, rows(USERS[:3] + ["nobody"]), unknown_tasks="error")


def test_a_missing_or_corrupt_artifact_is_refused(served, tmp_path):
    cfg, a, *_ = served
    models = tmp_path / "models"
    shutil.copytree(cfg.path(cfg.model.checkpoint_dir), models)
    moved = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint_dir=str(models)))
    (models / f"{a.version}.onnx").unlink()
    with pytest.raises(ArtifactError, match=f"not found: {models}/{a.version}.onnx.*metaemb export --model-version"):
        score(moved, rows(USERS))
    (models / f"{a.version}.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ArtifactError, match=f"{models}/{a.version}.onnx"):
        score(moved, rows(USERS))


def test_export_writes_the_artifact_of_an_existing_checkpoint(served, tmp_path, capsys):
    """Its default embedding: the mean of the version's first day in meta_embeddings."""
    from deltalake import write_deltalake

    cfg, a, *_ = served
    models = tmp_path / "models"
    shutil.copytree(cfg.path(cfg.model.checkpoint_dir), models)
    (models / f"{a.version}.onnx").unlink()
    moved = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint_dir=str(models)),
                                pipeline=dataclasses.replace(cfg.pipeline, storage_root=str(tmp_path / "lake")))
    first, later = random_embeddings(6, 8, seed=5), random_embeddings(6, 8, seed=6)
    for day, emb, version in ((D2, later, a.version), (D1, first, a.version), (D1, later, "other")):
        write_deltalake(moved.table_location(tables.META_EMBEDDINGS).uri, day_table(
            [f"{version}{i}" for i in range(6)], emb, day, version).append_column(
            tables.RUN_DATE, pa.array([day] * 6, pa.date32())), mode="append", partition_by=[tables.RUN_DATE])
    assert run_cli(moved, tmp_path, "export", "--model-version", a.version) == 0
    out = capsys.readouterr().out
    assert f"model version {a.version}: serving artifact {models}/{a.version}.onnx" in out
    assert f"mean embedding of its first day in meta_embeddings, {D1} (6 tasks)" in out
    exported = load_artifact(models / f"{a.version}.onnx")
    assert exported.model_version == a.version
    np.testing.assert_allclose(exported.default_embedding, first.mean(0), atol=1e-6)
    assert run_cli(moved, tmp_path, "export", "--model-version", "000000000000") == 2
    assert "checkpoint file not found" in capsys.readouterr().err


def test_an_online_store_that_is_down_is_named(served, tmp_path):
    cfg, *_ = served
    redis_down = dataclasses.replace(cfg, feast=dataclasses.replace(
        cfg.feast, online_store="redis", redis_connection=f"127.0.0.1:{free_port()}"))
    with pytest.raises(OnlineStoreError, match="redis online store 127.0.0.1:\\d+ .*could not be read"):
        score(redis_down, rows(USERS))
    no_db = dataclasses.replace(cfg, feast=dataclasses.replace(cfg.feast, sqlite_path=str(tmp_path / "none.db")))
    with pytest.raises(OnlineStoreError, match="none.db .*does not exist"):
        score(no_db, rows(USERS))


def test_item_hash_is_sparks_xxhash64(spark):
    """Spark's xxhash64 of the id cast to string (pipelines/labeled.py), and its floor modulo."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    rng = np.random.default_rng(0)
    ints = [0, 1, -1, 42, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)] + [
        int(i) for i in rng.integers(-(2**63), 2**63 - 1, 150, dtype=np.int64)]
    alphabet = list("abcXYZ019 -_/") + ["é", "ß", "日本", "🙂"]
    strings = ["", "a", "item-1", "0042", " 7", "x" * 33, "y" * 100] + [
        "".join(rng.choice(alphabet, size=int(rng.integers(1, 40)))) for _ in range(150)]
    for values, kind in ((ints + [None], T.LongType()), (strings + [None], T.StringType())):
        df = spark.createDataFrame([(i, v) for i, v in enumerate(values)],
                                   T.StructType([T.StructField("i", T.IntegerType()), T.StructField("item_id", kind)]))
        h = F.xxhash64(F.col("item_id").cast("string"))
        got = df.select("i", h.alias("h"), F.pmod(h, F.lit(4096)).alias("b")).orderBy("i").collect()
        assert [r.h for r in got] == contract.item_hash(values).tolist()
        assert [r.b for r in got] == contract.item_bucket(values, 4096).tolist()
