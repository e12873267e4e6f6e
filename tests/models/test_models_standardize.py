"""Input standardization: stats learned in train(), stored in the checkpoint, applied on every path."""

import numpy as np
import pytest
import torch

from core.config import TrainConfig
from metaemb.research.reference_finetune import finetune_embed_loop, finetune_embed_vmap, score
from models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from models.data import TaskBatch
from models.metrics import auc
from models.finetune import finetune_embed
from models.blocks import init_params
from models.train import train
from models_helpers import planted, random_batch, small_spec

pytestmark = pytest.mark.unit

SPEC = small_spec(meta_in=4, item_buckets=0)
CFG = TrainConfig(mode="limaml", epochs=4, tasks_per_batch=32, task_lr=1.0, meta_lr=3e-2, warmup_steps=3, seed=0)


def scaled(b: TaskBatch, meta_scale=1000.0, meta_shift=5000.0, other_scale=1.0) -> TaskBatch:
    """Like the daily pipeline's raw features (tenure_days 0..250, counts): one meta
    column scaled by 1000 and shifted, optionally the other features scaled too."""
    xm = b.x_meta.copy()
    xm[..., 0] = xm[..., 0] * meta_scale + meta_shift
    return TaskBatch(xm, b.x_other * other_scale, b.item_ids, b.labels, b.lengths, b.task_ids, b.n_support)


def query_auc(ck, test: TaskBatch, steps=3):
    ns = int(test.n_support[0])
    sup = TaskBatch(test.x_meta[:, :ns], test.x_other[:, :ns], test.item_ids[:, :ns], test.labels[:, :ns],
                    np.full(len(test), ns), test.task_ids)
    e = finetune_embed(ck, sup, steps=steps, lr=1.0)
    s = score(ck.params, ck.spec, test, e, stats=ck.input_stats)[:, ns:]
    return e, auc(test.labels[:, ns:], s)


def test_scaled_meta_column_gives_sane_embeddings_and_same_auc():
    tr, te = planted(B=256, seed=1, shared=3.0, meta_const=True), planted(B=128, seed=2, shared=3.0, meta_const=True)
    ref = train(SPEC, CFG, tr)
    big = train(SPEC, CFG, scaled(tr))
    st = big.input_stats
    assert abs(float(st["meta_mean"][0]) - 6000.0) < 50 and abs(float(st["meta_std"][0]) - 100.0) < 5
    e_ref, a_ref = query_auc(ref, te)
    e_big, a_big = query_auc(big, scaled(te))
    assert np.isfinite(e_big).all()
    norms = np.linalg.norm(e_big, axis=1)
    assert norms.max() < 50, norms.max()
    assert a_ref > 0.7 and abs(a_big - a_ref) < 0.02, (a_ref, a_big)
    # standardization is affine-invariant: the two runs are the same model up to rounding
    np.testing.assert_allclose(e_big, e_ref, atol=1e-2)


def test_zero_variance_column_is_finite():
    tr = planted(B=64, seed=3)
    tr.x_meta[..., 1] = 7.0  # constant column: std 0
    ck = train(SPEC, TrainConfig(**{**CFG.__dict__, "epochs": 1}), tr)
    assert float(ck.input_stats["meta_std"][1]) == 1.0
    assert all(torch.isfinite(v).all() for v in ck.input_stats.values())
    te = planted(B=16, seed=4)
    te.x_meta[..., 1] = 8.0  # a value never seen in training: still a modest input, no NaN
    e = finetune_embed(ck, te, steps=2, lr=1.0)
    assert np.isfinite(e).all() and np.linalg.norm(e, axis=1).max() < 50


def random_stats(spec, seed=0):
    """Close to (but not exactly) the statistics of the raw batch below: x*20+50 / x*20-30."""
    g = torch.Generator().manual_seed(seed)
    r = lambda n: torch.rand(n, generator=g)  # noqa: E731
    return {"meta_mean": 50 + 4 * r(spec.meta_in) - 2, "meta_std": 20 * (0.8 + 0.4 * r(spec.meta_in)),
            "other_mean": -30 + 4 * r(spec.other_in) - 2, "other_std": 20 * (0.8 + 0.4 * r(spec.other_in))}


@pytest.mark.parametrize("meta_block,meta_in", [("mlp", 5), ("id", 5)])
def test_batched_equals_loop_with_stats(meta_block, meta_in):
    spec = small_spec(meta_block, meta_in=meta_in)
    stats = random_stats(spec)
    ck = Checkpoint(spec=spec, params=init_params(spec, 1), mode="limaml", input_stats=stats)
    b = random_batch(B=14, L=9, meta_in=meta_in, seed=3)
    raw = TaskBatch(b.x_meta * 20 + 50, b.x_other * 20 - 30, b.item_ids, b.labels, b.lengths, b.task_ids)
    got = finetune_embed(ck, raw, steps=3, lr=0.5, chunk_size=4)
    np.testing.assert_allclose(got, finetune_embed_loop(ck, raw, steps=3, lr=0.5), atol=1e-5, rtol=0)
    if meta_block == "mlp":
        np.testing.assert_allclose(finetune_embed_vmap(ck, raw, steps=3, lr=0.5, chunk_size=5), got, atol=1e-5)
    # the stats are really applied: identity stats give different embeddings
    plain = Checkpoint(spec=spec, params=ck.params, mode="limaml")
    assert np.abs(finetune_embed(plain, raw, steps=3, lr=0.5) - got).max() > 1e-3


def test_stats_are_saved_loaded_and_hashed(tmp_path):
    spec = small_spec()
    params = init_params(spec, 0)
    a = Checkpoint(spec=spec, params=params, input_stats=random_stats(spec, 0))
    b = Checkpoint(spec=spec, params=params, input_stats=random_stats(spec, 1))
    old = Checkpoint(spec=spec, params=params)
    assert len({a.version, b.version, old.version}) == 3
    back = load_checkpoint(save_checkpoint(a, tmp_path / "a"))
    assert back.version == a.version
    for k, v in a.input_stats.items():
        assert torch.equal(back.input_stats[k], v)
    # a checkpoint written before standardization existed loads with identity stats
    blob_path = save_checkpoint(old, tmp_path / "old")
    blob = torch.load(blob_path, weights_only=True)
    assert "input_stats" not in blob
    back_old = load_checkpoint(blob_path)
    assert back_old.input_stats is None and back_old.version == old.version


def test_finite_rows_is_isfinite_all_even_when_a_row_sum_overflows():
    import torch

    from models.data import finite_rows

    a = torch.randn(4, 3, 5)
    a[0, 1, 2], a[1, 0, 0], a[2, 2, 4] = float("nan"), float("inf"), -float("inf")
    a[3, 1, 1] = a[3, 1, 2] = 3e38  # finite, but the row's sum is inf
    assert torch.equal(finite_rows(a), torch.isfinite(a).all(-1))
