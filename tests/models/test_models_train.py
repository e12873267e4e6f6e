import pytest
import torch

from core.config import TrainConfig
from models.checkpoint import Checkpoint
from models.blocks import init_params
from models.train import train
from models.data import prepare
from models.train import evaluate_batch
from models_helpers import planted, small_spec

pytestmark = pytest.mark.unit

SPEC = small_spec(meta_in=4, item_buckets=0)


def query_loss(params, mode, batch, inner=1, stats=None):
    c = {"mode": mode, "inner_steps": inner, "task_lr": 1.0, "first_order": False}
    return evaluate_batch(params, SPEC, prepare(batch, SPEC, stats=stats), c)["loss"]


@pytest.fixture(scope="module")
def data():
    return planted(B=256, seed=1, shared=3.0), planted(B=96, seed=2, shared=3.0)


def cfg(mode, **kw):
    return TrainConfig(**{**dict(mode=mode, epochs=5, tasks_per_batch=32, task_lr=1.0, meta_lr=3e-2,
                                 warmup_steps=3, seed=0), **kw})


@pytest.mark.parametrize("mode,first_order", [("vanilla", False), ("limaml", False), ("limaml", True), ("maml", False)])
def test_training_reduces_query_loss(data, mode, first_order):
    tr, va = data
    before = query_loss(init_params(SPEC, 0), mode, va)
    lines = []
    ck = train(SPEC, cfg(mode, first_order=first_order), tr, valid=va, progress=lines.append)
    after = query_loss(ck.params, mode, va, stats=ck.input_stats)
    assert after < before - 0.05, (mode, before, after)
    assert ck.mode == mode and ck.train_config["first_order"] == first_order
    assert lines and "epoch 5/5" in lines[-1]
    assert len(ck.metrics["valid"]) == 5 and 1 <= ck.metrics["best_epoch"] <= 5


def test_adaptation_beats_vanilla_on_per_task_preferences(data):
    # the planted sign is visible only through the task's own labels: the model
    # trained to adapt (limaml) must end with a lower adapted query loss than vanilla
    tr, va = planted(B=256, seed=4, meta_const=True), planted(B=96, seed=5, meta_const=True)
    van = train(SPEC, cfg("vanilla"), tr)
    lim = train(SPEC, cfg("limaml", epochs=8), tr)  # standardized meta inputs: adaptation kicks in after ~5 epochs
    lv = query_loss(van.params, "vanilla", va, stats=van.input_stats)
    ll = query_loss(lim.params, "limaml", va, stats=lim.input_stats)
    assert ll < lv - 0.03, (lv, ll)


def test_warm_start_from_vanilla(data):
    tr, va = data
    van = train(SPEC, cfg("vanilla", epochs=2), tr)
    lim = train(SPEC, cfg("limaml", epochs=2), tr, init=van)
    assert lim.train_config["warm_start_from"] == van.version
    assert lim.version != van.version
    # a warm start really starts from the vanilla weights: zero epochs returns them unchanged
    same = train(SPEC, cfg("limaml", epochs=0, meta_sgd=False), tr, init=van)
    assert same.version == van.version
    # with Meta-SGD the same weights gain step sizes of 1 (another model, so another version)
    sgd = train(SPEC, cfg("limaml", epochs=0), tr, init=van)
    assert all(torch.equal(sgd.params[k], van.params[k]) for k in van.params)
    assert all(bool((v == 1).all()) for v in sgd.lr_scale.values()) and sgd.version != van.version


def test_bad_training_input_is_rejected(data):
    tr, _ = data
    with pytest.raises(ValueError, match="n_support"):
        train(SPEC, cfg("limaml"), planted(B=8, seed=3).__class__(**{**planted(B=8, seed=3).__dict__, "n_support": None}))
    with pytest.raises(ValueError, match="mode"):
        train(SPEC, {**cfg("limaml").__dict__, "mode": "reptile"}, tr)
    other = small_spec(meta_in=4, item_buckets=0, embedding_dim=4)
    with pytest.raises(ValueError, match="spec"):
        train(SPEC, cfg("limaml"), tr, init=Checkpoint(spec=other, params=init_params(other)))


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("meta_block,meta_in", [("mlp", 5), ("id", 0), ("id", 5)])
def test_kernel_inner_loop_gives_autograds_outer_gradient(meta_block, meta_in, first_order):
    # training through models.kernel's hand-written inner loop = through autograd's
    import torch

    from models import blocks
    from models.finetune import adapt
    from models.train import split_masks
    from models_helpers import random_batch

    spec = small_spec(meta_block, meta_in=meta_in)
    t = prepare(random_batch(B=9, L=8, meta_in=meta_in, seed=2), spec)
    sup, qry = split_masks(t)
    grads = []
    for use_kernel in (True, False):
        params = {k: v.requires_grad_(True) for k, v in init_params(spec, 3).items()}
        p = adapt(params, spec, t, sup, 3, 0.5, track=True, first_order=first_order, use_kernel=use_kernel)
        loss = blocks.masked_task_loss(blocks.logits(p, t.x_meta, t.x_other, t.item_ids, spec), t.labels, qry).mean()
        grads.append(torch.autograd.grad(loss, list(params.values()), allow_unused=True))
    for k, a, b in zip(params, *grads):
        if b is None:
            assert a is None or not a.any(), k
        else:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4, msg=k)
    assert max(float(g.abs().max()) for g in grads[1] if g is not None) > 1e-2


@pytest.mark.parametrize("mode", ["limaml", "maml"])
def test_inner_loop_on_support_rows_only_is_exact(mode):
    # task_losses runs the inner loop on the first max(n_support) rows (the rest are query):
    # the same outer loss and gradient as adapting over every row with the query masked out
    import torch

    from models import blocks
    from models.finetune import adapt
    from models.train import split_masks, task_losses
    from models_helpers import random_batch

    spec = small_spec(meta_in=5)
    t = prepare(random_batch(B=9, L=10, seed=5), spec)
    t.n_support = (t.lengths.float() * 0.5).long().clamp_min(1)  # longest support < L: rows get cut
    assert int(t.n_support.max()) < t.mask.shape[1]
    c = {"mode": mode, "inner_steps": 2, "task_lr": 0.5, "first_order": False}
    params = {k: v.requires_grad_(True) for k, v in init_params(spec, 1).items()}
    got, _, _ = task_losses(params, spec, t, c, track=True)
    g_got = torch.autograd.grad(got.sum(), list(params.values()), allow_unused=True)
    sup, qry = split_masks(t)
    p = adapt(params, spec, t, sup, 2, 0.5, which="meta" if mode == "limaml" else "all", track=True)
    ref = blocks.masked_task_loss(blocks.logits(p, t.x_meta, t.x_other, t.item_ids, spec), t.labels, qry)
    g_ref = torch.autograd.grad(ref.sum(), list(params.values()), allow_unused=True)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    for k, a, b in zip(params, g_got, g_ref):
        if b is None:
            assert a is None or not a.any(), k
        else:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4, msg=k)
