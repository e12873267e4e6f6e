"""The serving artifact (models/onnx_export.py -> ONNX, loaded by serving/onnx_runtime.py with ONNX
Runtime only): its probabilities equal the in-process global block's on real rows, its default
embedding, its metadata, and the ways a bad artifact is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core import artifact_contract as contract
from core.artifact_contract import ArtifactError
from core.config import TrainConfig
from metaemb.datasets.synthetic import CONTEXT_COLUMNS, FEATURE_COLUMNS, SyntheticSpec, generate
from models.checkpoint import Checkpoint
from models.data import TaskBatch
from models.finetune import finetune_embed
from models.blocks import init_params
from models.train import train
from models.onnx_export import default_embedding, global_logits
from models.blocks import ModelSpec
from models_helpers import SMALL, small_spec
from pipelines.train import export_artifact
from serving.onnx_runtime import load_artifact

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A model trained on synthetic interactions (the demo's generator), the interactions'
    rows and each user's fine-tuned embedding."""
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, SyntheticSpec(users=60, items=300, days=6, seed=3), progress=lambda line: None)
    events = pd.read_parquet(out / "interactions.parquet").sort_values(["user_id", "event_timestamp"])
    feats = pd.read_parquet(out / "entity_features.parquet").sort_values("feature_timestamp")
    rows = pd.merge_asof(events.sort_values("event_timestamp"), feats, left_on="event_timestamp",
                         right_on="feature_timestamp", by="user_id").sort_values(["user_id", "event_timestamp"])
    rows[FEATURE_COLUMNS] = rows[FEATURE_COLUMNS].fillna(0.0)
    batch, users = task_batch(rows)
    spec = ModelSpec(meta_in=len(FEATURE_COLUMNS), other_in=len(CONTEXT_COLUMNS), **SMALL)
    ckpt = train(spec, TrainConfig(epochs=4, tasks_per_batch=16, warmup_steps=1, meta_lr=1e-2), batch,
                 meta_columns=FEATURE_COLUMNS, context_columns=CONTEXT_COLUMNS)
    emb = finetune_embed(ckpt, batch, steps=2, lr=0.5)
    return ckpt, rows, dict(zip(users, emb))


def task_batch(rows: pd.DataFrame) -> tuple[TaskBatch, list]:
    groups = [g for _, g in rows.groupby("user_id", sort=True)]
    L = max(len(g) for g in groups)
    pad = lambda g, cols: np.pad(g[cols].to_numpy(np.float32), ((0, L - len(g)), (0, 0)))  # noqa: E731
    lengths = np.array([len(g) for g in groups])
    return TaskBatch(
        x_meta=np.stack([pad(g, FEATURE_COLUMNS) for g in groups]),
        x_other=np.stack([pad(g, CONTEXT_COLUMNS) for g in groups]),
        item_ids=np.stack([np.pad(contract.item_hash(g["item_id"].tolist()), (0, L - len(g))) for g in groups]),
        labels=np.stack([np.pad(g["label"].to_numpy(np.float32), (0, L - len(g))) for g in groups]),
        lengths=lengths, task_ids=np.array([g["user_id"].iloc[0] for g in groups]),
        n_support=np.maximum(1, (lengths * 3) // 4)), [g["user_id"].iloc[0] for g in groups]


def test_artifact_probabilities_equal_the_in_process_global_block_on_real_rows(real, tmp_path):
    ckpt, rows, emb = real
    sample = rows.sample(500, random_state=0)
    context = sample[CONTEXT_COLUMNS].to_numpy(np.float32)
    items = sample["item_id"].tolist()
    embedding = np.stack([emb[u] for u in sample["user_id"]])
    artifact = load_artifact(export_artifact(ckpt, tmp_path), expect_version=ckpt.version)
    got = artifact.predict(context, items, embedding)
    want = torch.sigmoid(global_logits(ckpt, torch.from_numpy(context), torch.from_numpy(contract.item_hash(items)),
                                       torch.from_numpy(embedding))).numpy()
    assert got.shape == (500,) and got.std() > 1e-3  # the rows matter: not a constant
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_metadata_says_what_a_server_needs(real, tmp_path):
    ckpt, _, _ = real
    artifact = load_artifact(export_artifact(ckpt, tmp_path))
    meta = artifact.meta
    assert meta["model_version"] == ckpt.version and meta["format"] == contract.FORMAT
    assert meta["context_columns"] == CONTEXT_COLUMNS and meta["embedding_dim"] == ckpt.spec.embedding_dim
    assert meta["item_buckets"] == ckpt.spec.item_buckets and meta["item_hash"]["seed"] == 42
    np.testing.assert_allclose(meta["context_standardization"]["mean"], ckpt.input_stats["other_mean"].numpy())
    # models imports nothing of the project: the graph it writes carries the contract's names
    assert [i.name for i in artifact.session.get_inputs()] == list(contract.INPUTS)
    assert [o.name for o in artifact.session.get_outputs()] == list(contract.OUTPUTS)
    # ONNX Runtime alone reads the metadata (what a non-Python server does)
    runtime_meta = json.loads(artifact.session.get_modelmeta().custom_metadata_map[contract.METADATA_KEY])
    assert runtime_meta["default_embedding"] == meta["default_embedding"]


def test_training_default_is_the_mean_meta_trained_embedding(real, tmp_path):
    """What train passes: the mean of the tasks' k = 0 embeddings, which is not the (near zero)
    embedding of the mean features, and lies among the embeddings that get published."""
    from models.onnx_export import mean_embedding
    from models_helpers import planted

    ckpt, _, emb = real
    batch = planted(B=40, meta_in=ckpt.spec.meta_in, other_in=ckpt.spec.other_in)
    mean = mean_embedding(ckpt, batch)
    np.testing.assert_allclose(mean, finetune_embed(ckpt, batch, steps=0, lr=0.0).mean(0), atol=1e-6)
    artifact = load_artifact(export_artifact(ckpt, tmp_path, mean, "mean of 40 tasks"))
    assert artifact.meta["default_embedding_rule"] == "mean of 40 tasks"
    np.testing.assert_allclose(artifact.default_embedding, mean, atol=1e-7)
    with pytest.raises(ValueError, match="default embedding of shape \\(3,\\)"):
        export_artifact(ckpt, tmp_path, mean[:3], "wrong")


def test_fallback_default_is_the_meta_block_at_the_mean_features(real):
    """= the embedding a task whose latest sample has the training mean features gets with k = 0."""
    ckpt, _, _ = real
    mean = ckpt.input_stats["meta_mean"].numpy()
    one = TaskBatch(x_meta=mean[None, None], x_other=np.zeros((1, 1, ckpt.spec.other_in), np.float32),
                    item_ids=np.zeros((1, 1), np.int64), labels=np.zeros((1, 1), np.float32),
                    lengths=np.array([1]), task_ids=np.array([0]))
    np.testing.assert_allclose(default_embedding(ckpt), finetune_embed(ckpt, one, steps=0, lr=0.5)[0], atol=1e-6)


@pytest.mark.parametrize("variant", [dict(other_in=0), dict(item_buckets=0), dict(meta_block="id"),
                                     dict(global_hidden=()), dict(stats=False)])
def test_other_model_shapes_export_too(variant, tmp_path):
    stats = variant.pop("stats", True)
    spec = small_spec(**variant)
    rng = np.random.default_rng(1)
    ckpt = Checkpoint(spec=spec, params=init_params(spec, 2), context_columns=[f"c{i}" for i in range(spec.other_in)],
                      input_stats={"meta_mean": torch.randn(spec.meta_in), "meta_std": torch.rand(spec.meta_in) + 0.5,
                                   "other_mean": torch.randn(spec.other_in), "other_std": torch.rand(spec.other_in) + 0.5}
                      if stats else None)
    context = rng.normal(size=(64, spec.other_in)).astype(np.float32)
    items = ["a", "", "é", -1, 2**63 - 1] + [int(i) for i in rng.integers(-(2**62), 2**62, 59)]
    embedding = rng.normal(size=(64, spec.embedding_dim)).astype(np.float32)
    got = load_artifact(export_artifact(ckpt, tmp_path)).predict(context, items, embedding)
    want = torch.sigmoid(global_logits(ckpt, torch.from_numpy(context), torch.from_numpy(contract.item_hash(items)),
                                       torch.from_numpy(embedding))).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_item_bucket_is_the_floor_modulo_the_model_uses():
    ids = [-5, 0, 7, "x", 2**63 - 1, -(2**63), None]
    hashes = contract.item_hash(ids)
    assert hashes[-1] == 42  # Spark: xxhash64(null) is the seed
    buckets = contract.item_bucket(ids, 1000)
    assert ((0 <= buckets) & (buckets < 1000)).all()
    assert buckets.tolist() == torch.remainder(torch.from_numpy(hashes), 1000).tolist()
    with pytest.raises(ValueError, match="integers or strings"):
        contract.item_hash([1.5])


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def exported(real, tmp_path):
    return real[0], Path(export_artifact(real[0], tmp_path))  # a local Location: os.fspath works


def test_missing_artifact_names_the_file_and_the_command(tmp_path):
    with pytest.raises(ArtifactError, match=r"not found: .*abc123\.onnx.*metaemb export --model-version abc123"):
        load_artifact(tmp_path / "abc123.onnx")


def test_truncated_artifact_is_refused(exported):
    _, path = exported
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=str(path)):
        load_artifact(path)


def test_altered_weights_are_refused(exported):
    ckpt, path = exported
    data = bytearray(path.read_bytes())
    raw = ckpt.params["global.b1"].numpy().tobytes()  # a bias, stored as raw float bytes in the graph
    at = bytes(data).find(raw)
    assert at > 0
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 .* does not match"):
        load_artifact(path)


def test_artifact_of_another_shape_or_version_is_refused(exported):
    import onnx

    ckpt, path = exported
    with pytest.raises(ArtifactError, match=f"holds model version {ckpt.version}, not 0123456789ab"):
        load_artifact(path, expect_version="0123456789ab")
    model = onnx.load_model_from_string(path.read_bytes())
    meta = json.loads(model.metadata_props[0].value)
    meta["embedding_dim"] = 4
    meta["default_embedding"] = meta["default_embedding"][:4]
    model.metadata_props[0].value = json.dumps(meta)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ArtifactError, match=r"graph input 'embedding' is \['batch', 8\] wide, the metadata says 4"):
        load_artifact(path)


def test_not_an_artifact_is_refused(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"not protobuf at all \xff\xfe")
    with pytest.raises(ArtifactError, match="corrupt serving artifact"):
        load_artifact(path)
