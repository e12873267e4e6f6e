"""Meta-SGD: per-parameter inner-loop step sizes (learned in training, stored in the
checkpoint, used by the fine-tune), in the kernel and the autograd paths."""

import numpy as np
import pytest
import torch

from core.config import TrainConfig
from models import blocks
from models.blocks import init_params, lr_shapes
from models.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from models.data import prepare
from models.finetune import adapt, finetune_embed
from models.train import split_masks, train
from metaemb.research.reference_finetune import finetune_embed_loop
from models_helpers import planted, random_batch, small_spec

pytestmark = pytest.mark.unit


def random_scale(spec, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: 0.2 + 1.6 * torch.rand(shape, generator=g) for k, shape in lr_shapes(spec).items()}


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernel", "autograd"])
@pytest.mark.parametrize("meta_block,meta_in", [("mlp", 5), ("id", 0), ("id", 5)])
@pytest.mark.parametrize("steps", [1, 3])
def test_per_parameter_lr_equals_per_task_loop(meta_block, meta_in, steps, use_kernel):
    spec = small_spec(meta_block, meta_in=meta_in)
    ck = Checkpoint(spec=spec, params=init_params(spec, 1), lr_scale=random_scale(spec))
    batch = random_batch(B=14, L=9, meta_in=meta_in, seed=3)
    got = finetune_embed(ck, batch, steps=steps, lr=0.5, chunk_size=4, use_kernel=use_kernel)
    np.testing.assert_allclose(got, finetune_embed_loop(ck, batch, steps=steps, lr=0.5), atol=1e-5, rtol=0)
    # the learned step sizes matter: the scalar lr gives other embeddings
    plain = Checkpoint(spec=spec, params=ck.params)
    assert np.abs(got - finetune_embed(plain, batch, steps=steps, lr=0.5, chunk_size=4)).max() > 1e-3


def test_all_ones_lr_scale_is_the_scalar_lr():
    spec = small_spec()
    params = init_params(spec, 2)
    ones = {k: torch.ones(s) for k, s in lr_shapes(spec).items()}
    batch = random_batch(B=10, seed=4)
    np.testing.assert_allclose(finetune_embed(Checkpoint(spec=spec, params=params, lr_scale=ones), batch, steps=3, lr=0.4),
                               finetune_embed(Checkpoint(spec=spec, params=params), batch, steps=3, lr=0.4), atol=1e-5)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("meta_block,meta_in", [("mlp", 5), ("id", 5)])
def test_kernel_gives_autograds_gradient_wrt_the_learned_lrs(meta_block, meta_in, first_order):
    spec = small_spec(meta_block, meta_in=meta_in)
    t = prepare(random_batch(B=9, L=8, meta_in=meta_in, seed=2), spec)
    sup, qry = split_masks(t)
    out = []
    for use_kernel in (True, False):
        params = {k: v.requires_grad_(True) for k, v in init_params(spec, 3).items()}
        log_lr = {k: (0.3 * torch.randn(s, generator=torch.Generator().manual_seed(7))).requires_grad_(True)
                  for k, s in lr_shapes(spec).items()}
        lrs = {k: 0.5 * torch.exp(v) for k, v in log_lr.items()}
        p = adapt(params, spec, t, sup, 2, lrs, track=True, first_order=first_order, use_kernel=use_kernel)
        loss = blocks.masked_task_loss(blocks.logits(p, t.x_meta, t.x_other, t.item_ids, spec), t.labels, qry).mean()
        leaves = list(params.values()) + list(log_lr.values())
        out.append(torch.autograd.grad(loss, leaves, allow_unused=True))
    names = list(params) + [f"lr:{k}" for k in log_lr]
    for k, a, b in zip(names, *out):
        if b is None:
            assert a is None or not a.any(), k
        else:  # tolerance relative to the gradient's own scale (the lrs' are small per element)
            torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()) + 1e-9, rtol=1e-4, msg=k)
    lr_grads = out[1][len(params):]
    assert sum(float(g.abs().sum()) for g in lr_grads) > 1e-5  # the lrs get a real gradient


def test_meta_sgd_training_stores_learned_lrs_and_finetune_uses_them(tmp_path):
    spec = small_spec(meta_in=4, item_buckets=0)
    cfg = TrainConfig(mode="limaml", epochs=3, tasks_per_batch=32, task_lr=1.0, meta_lr=3e-2, warmup_steps=3, seed=0,
                      meta_sgd=True, meta_sgd_lr=0.05)
    ck = train(spec, cfg, planted(B=128, seed=1, meta_const=True))
    assert set(ck.lr_scale) == set(lr_shapes(spec))
    moved = max(float((v - 1).abs().max()) for v in ck.lr_scale.values())
    assert moved > 1e-2, "the step sizes were not learned"
    assert all((v > 0).all() for v in ck.lr_scale.values())
    assert set(ck.metrics["lr_scale"]) == set(lr_shapes(spec))
    path = save_checkpoint(ck, tmp_path)
    back = load_checkpoint(path, expect=spec)
    assert back.version == ck.version
    for k in ck.lr_scale:
        assert torch.equal(back.lr_scale[k], ck.lr_scale[k])
    batch = planted(B=16, seed=2, meta_const=True)
    np.testing.assert_allclose(finetune_embed(back, batch, steps=2, lr=1.0), finetune_embed_loop(back, batch, steps=2, lr=1.0), atol=1e-5)
    # the same weights without the learned lrs are another model (another version, other embeddings)
    plain = Checkpoint(spec=spec, params=ck.params, input_stats=ck.input_stats)
    assert plain.version != ck.version
    assert np.abs(finetune_embed(plain, batch, steps=2, lr=1.0) - finetune_embed(back, batch, steps=2, lr=1.0)).max() > 1e-4
    # a warm start carries the learned lrs on
    again = train(spec, {**cfg.__dict__, "epochs": 1}, planted(B=64, seed=3, meta_const=True), init=back)
    assert set(again.lr_scale) == set(ck.lr_scale)


def test_meta_sgd_is_limaml_only_and_bad_lr_scale_is_refused(tmp_path):
    spec = small_spec(meta_in=4, item_buckets=0)
    # maml and vanilla read the same [train] and train without learned step sizes
    assert train(spec, TrainConfig(mode="maml", epochs=1, meta_sgd=True), planted(B=16, seed=1)).lr_scale is None
    bad = {k: torch.ones(s) for k, s in lr_shapes(spec).items()}
    bad["meta.b1"] = -bad["meta.b1"]
    with pytest.raises(CheckpointError, match="lr_scale meta.b1"):
        save_checkpoint(Checkpoint(spec=spec, params=init_params(spec), lr_scale=bad), tmp_path)
    short = {k: torch.ones(s) for k, s in lr_shapes(spec).items() if k != "meta.w2"}
    with pytest.raises(CheckpointError, match="lr_scale names"):
        save_checkpoint(Checkpoint(spec=spec, params=init_params(spec), lr_scale=short), tmp_path)
