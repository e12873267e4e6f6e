"""The fine-tune chosen on validation (models.choice): the daily embed stage's embeddings are
the ones the evaluation scores, per support-size bucket, and the choice is what validation says."""

import copy

import numpy as np
import pytest

from core.config import TrainConfig
from models.checkpoint import load_checkpoint, save_checkpoint
from models.choice import (BUCKETS, FALLBACK, GRID, SHORT, FinetuneChoice, bucket_of, choose, finetune_chosen,
                           finetuned_embeddings, resolve, split)
from models.train import train
from models_helpers import planted, small_spec


@pytest.fixture(scope="module")
def trained():
    spec = small_spec(meta_in=4, item_buckets=0)
    cfg = TrainConfig(mode="limaml", epochs=2, tasks_per_batch=32, task_lr=0.3, inner_steps=3, meta_lr=3e-2,
                      warmup_steps=3, seed=0, meta_sgd=True, meta_sgd_lr=0.05)
    return train(spec, cfg, planted(B=96, L=40, seed=1, meta_const=True))


def two_buckets(B=40, seed=2):
    """Tasks with histories on both sides of SHORT."""
    batch = planted(B=B, L=40, seed=seed, meta_const=True)
    batch.lengths = np.where(np.arange(B) % 2 == 0, 8, 40)
    batch.n_support = (batch.lengths * 3) // 4
    return batch


@pytest.mark.unit
def test_embed_stage_fine_tune_is_the_one_the_evaluation_scores(trained):
    batch = two_buckets()
    choice = FinetuneChoice(steps=(1, 3), lr=(0.1, 0.3))
    served = finetune_chosen(trained, batch, choice)  # what pipelines.embed publishes
    buckets = bucket_of(batch.lengths)
    assert set(buckets) == {0, 1}
    for b in range(len(BUCKETS)):
        idx = np.flatnonzero(buckets == b)
        steps, lr = choice.of(b)
        scored = finetuned_embeddings(trained.params, trained.spec, batch.select(idx), batch.lengths[idx], steps, lr,
                                      stats=trained.input_stats, lr_scale=trained.lr_scale)
        np.testing.assert_allclose(served[idx], scored, atol=1e-5, err_msg=BUCKETS[b])
    # the buckets really are fine-tuned differently: one choice for both gives other embeddings
    same = finetune_chosen(trained, batch, FinetuneChoice(steps=(3, 3), lr=(0.3, 0.3)))
    assert np.abs(same[buckets == 0] - served[buckets == 0]).max() > 1e-4
    np.testing.assert_allclose(same[buckets == 1], served[buckets == 1], atol=1e-6)


@pytest.mark.unit
def test_choice_is_validations_best_per_bucket_and_survives_the_checkpoint(trained, tmp_path):
    support, query, n_support = split(two_buckets(B=60, seed=3))
    assert (bucket_of(n_support) == bucket_of(two_buckets(B=60, seed=3).n_support)).all()
    choice = choose(trained.params, trained.spec, support, query, n_support, stats=trained.input_stats,
                    lr_scale=trained.lr_scale)
    for b, name in enumerate(BUCKETS):
        scores = choice.validation[name]
        assert set(scores) == {f"{k},{lr:g}" for k, lr in GRID}
        steps, lr = choice.of(b)
        assert scores[f"{steps},{lr:g}"] == max(scores.values())
    assert sum(choice.validation["tasks"].values()) == 60
    # planted tasks are learnable only from their own labels: fine-tuning must win on long histories
    assert choice.of(1)[0] > 0
    ck = copy.copy(trained)
    ck.finetune_choice = choice.to_dict()
    back = load_checkpoint(save_checkpoint(ck, tmp_path), expect=ck.spec)
    assert resolve(back) == choice
    assert resolve(back, steps=2) == FinetuneChoice((2, 2), choice.lr)
    ck.finetune_choice = None
    assert resolve(ck) == FinetuneChoice((FALLBACK[0],) * 2, (FALLBACK[1],) * 2)
    assert list(bucket_of([SHORT - 1, SHORT])) == [0, 1]
