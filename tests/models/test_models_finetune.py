import numpy as np
import pytest

from metaemb.research.reference_finetune import finetune_embed_loop, finetune_embed_vmap
from models.checkpoint import Checkpoint
from models.data import NonFiniteEmbeddingError, TaskBatch
from models.finetune import finetune_embed
from models.blocks import init_params

from models_helpers import random_batch, small_spec

pytestmark = pytest.mark.unit


def ckpt_for(spec, seed=1):
    return Checkpoint(spec=spec, params=init_params(spec, seed), mode="limaml")


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernel", "autograd"])
@pytest.mark.parametrize("meta_block,meta_in", [("mlp", 5), ("id", 0), ("id", 5)])
@pytest.mark.parametrize("pooling", ["latest", "mean", "max", "cosine"])
def test_batched_equals_per_task_loop(meta_block, meta_in, pooling, use_kernel):
    spec = small_spec(meta_block, meta_in=meta_in)
    ck = ckpt_for(spec)
    batch = random_batch(B=14, L=9, meta_in=meta_in, seed=3)
    # chunks of 4 with varied lengths: exercises sorting, padding and masking
    got = finetune_embed(ck, batch, steps=3, lr=0.5, pooling=pooling, chunk_size=4, use_kernel=use_kernel)
    ref = finetune_embed_loop(ck, batch, steps=3, lr=0.5, pooling=pooling)
    assert got.shape == (14, spec.embedding_dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # and fine-tuning really moved the embeddings (the comparison is not vacuous)
    base = finetune_embed(ck, batch, steps=0, lr=0.5, pooling=pooling)
    assert np.abs(got - base).max() > 1e-3


@pytest.mark.parametrize("steps", [0, 1, 2])
@pytest.mark.parametrize("global_hidden,other_in,item_buckets", [((), 3, 50), ((16,), 0, 0), ((32, 16, 8), 3, 0)])
def test_kernel_equals_loop_on_other_shapes(steps, global_hidden, other_in, item_buckets):
    # 0 to 3 hidden global layers, no context features, no item table, k = 0..2
    spec = small_spec(other_in=other_in, global_hidden=global_hidden, item_buckets=item_buckets)
    ck = ckpt_for(spec)
    batch = random_batch(B=6, L=7, other_in=other_in, seed=13)
    np.testing.assert_allclose(finetune_embed(ck, batch, steps=steps, lr=0.5, pooling="mean", chunk_size=4),
                               finetune_embed_loop(ck, batch, steps=steps, lr=0.5, pooling="mean"), atol=1e-5, rtol=0)


def test_vmap_variant_equals_loop():
    spec = small_spec()
    ck = ckpt_for(spec)
    batch = random_batch(B=5, L=6, seed=4)
    np.testing.assert_allclose(finetune_embed_vmap(ck, batch, steps=2, lr=0.3, chunk_size=5),
                               finetune_embed_loop(ck, batch, steps=2, lr=0.3), atol=1e-5)


def test_padding_garbage_is_ignored_and_chunking_is_invariant():
    spec = small_spec()
    ck = ckpt_for(spec)
    batch = random_batch(B=17, seed=5)
    a = finetune_embed(ck, batch, steps=2, lr=0.5, chunk_size=4)
    pad = np.arange(batch.labels.shape[1])[None, :] >= batch.lengths[:, None]
    batch.x_meta[pad] = np.nan  # padding may hold anything
    batch.labels[pad] = 7.0
    b = finetune_embed(ck, batch, steps=2, lr=0.5, chunk_size=None)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_one_sample_task_gets_an_embedding():
    spec = small_spec()
    ck = ckpt_for(spec)
    batch = random_batch(B=3, L=1, seed=6)
    assert (batch.lengths == 1).all()
    e = finetune_embed(ck, batch, steps=3, lr=0.5)
    assert e.shape == (3, spec.embedding_dim) and np.isfinite(e).all()
    np.testing.assert_allclose(e, finetune_embed_loop(ck, batch, steps=3, lr=0.5), atol=1e-5)


def test_nan_input_names_the_tasks():
    spec = small_spec()
    batch = random_batch(B=10, min_len=3, seed=7)
    batch.x_other[4, 0, 1] = np.nan
    batch.x_other[8, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"x_other has NaN/inf.*indices \[4, 8\]"):
        finetune_embed(ckpt_for(spec), batch, steps=1, lr=0.1)


def test_bad_labels_lengths_and_dims_are_clear_errors():
    spec = small_spec()
    ck = ckpt_for(spec)
    b = random_batch(B=6, min_len=2, seed=8)
    b.labels[2, 0] = 0.5
    with pytest.raises(ValueError, match=r"labels outside \{0, 1\}.*indices \[2\]"):
        finetune_embed(ck, b, steps=1, lr=0.1)
    b = random_batch(B=6, seed=8)
    b.lengths[5] = 0
    with pytest.raises(ValueError, match=r"empty tasks.*indices \[5\]"):
        finetune_embed(ck, b, steps=1, lr=0.1)
    b = random_batch(B=6, seed=8)
    b.lengths[1] = 99
    with pytest.raises(ValueError, match=r"exceed the padded length"):
        finetune_embed(ck, b, steps=1, lr=0.1)
    b = random_batch(B=6, meta_in=4, seed=8)
    with pytest.raises(ValueError, match=r"x_meta has 4 columns but the model spec expects meta_in=5"):
        finetune_embed(ck, b, steps=1, lr=0.1)


def test_nonfinite_output_is_detected_and_names_tasks():
    spec = small_spec()
    ck = ckpt_for(spec)
    batch = random_batch(B=8, min_len=4, seed=9)
    # huge features on tasks 2 and 5 only: with an absurd lr their SGD steps overflow
    batch.x_meta[[2, 5]] *= 1e12
    with pytest.raises(NonFiniteEmbeddingError) as ei:
        finetune_embed(ck, batch, steps=3, lr=1.0, chunk_size=3)
    assert ei.value.task_indices == [2, 5]
    assert "2" in str(ei.value) and "lr" in str(ei.value)


def test_finetune_improves_auc_on_planted_preferences():
    from core.config import TrainConfig
    from models.metrics import auc
    from models.train import train
    from metaemb.research.reference_finetune import score

    from models_helpers import planted

    spec = small_spec(meta_in=4, item_buckets=0)
    cfg = TrainConfig(mode="limaml", epochs=5, tasks_per_batch=32, task_lr=1.0, meta_lr=3e-2, warmup_steps=3, seed=0)
    # meta features constant per task (entity features): after standardization,
    # per-sample noise in them would be as loud as a real feature
    ck = train(spec, cfg, planted(B=256, seed=1, meta_const=True))
    test = planted(B=128, seed=2, meta_const=True)
    ns = int(test.n_support[0])
    sup = TaskBatch(test.x_meta[:, :ns], test.x_other[:, :ns], test.item_ids[:, :ns], test.labels[:, :ns],
                    np.full(128, ns), test.task_ids)

    def query_auc(steps):
        e = finetune_embed(ck, sup, steps=steps, lr=1.0)
        s = score(ck.params, spec, test, e, stats=ck.input_stats)[:, ns:]
        return auc(test.labels[:, ns:], s)

    before, after = query_auc(0), query_auc(3)
    assert before < 0.65  # the preference sign is invisible without the task's labels
    assert after > before + 0.15, (before, after)


def test_min_samples_leaves_short_tasks_un_tuned():
    spec = small_spec()
    ck = ckpt_for(spec)
    batch = random_batch(B=12, L=9, seed=12)
    short = batch.lengths < 5
    assert short.any() and (~short).any()
    got = finetune_embed(ck, batch, steps=3, lr=0.5, chunk_size=4, min_samples=5)
    np.testing.assert_allclose(got[short], finetune_embed(ck, batch, steps=0, lr=0.5)[short], atol=1e-6)
    np.testing.assert_allclose(got[~short], finetune_embed_loop(ck, batch, steps=3, lr=0.5)[~short], atol=1e-5)
