"""The serving artifact of a checkpoint: the global block (with its input standardization) as
ONNX, plus what a server needs to feed it. core/artifact_contract.py is the contract (graph
input/output names, metadata key, the shared metadata, the graph digest); models imports
nothing of the project, so the caller (pipelines/train.py) hands that module in.

ONNX rather than torch.export: an online model server loads it with ONNX Runtime alone, from
Python, Java, C++, C# or Go, without PyTorch or metaemb's code; a .pt2 of torch.export needs
PyTorch to run. torch.onnx.export (its torch.export-based exporter) writes the graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings

import numpy as np
import torch

from . import blocks
from .checkpoint import Checkpoint
from .data import standardize

# A task with no published embedding gets a default one. Training passes the mean of its tasks'
# meta-trained embeddings (mean_embedding); without data (an export of an older checkpoint
# that was never published) the fallback is the meta block at the training mean features.
MEAN_FEATURES_RULE = "meta block at the training mean of the meta features (standardized input 0), no fine-tune"


def mean_embedding(ckpt: Checkpoint, batch) -> np.ndarray:
    """float32 [embedding_dim]: the mean over the batch's tasks of the meta-trained embedding
    (k = 0) on each task's most recent sample, what embed publishes for a task it does not fine-tune."""
    from .finetune import finetune_embed

    return finetune_embed(ckpt, batch, steps=0, lr=0.0).mean(0).astype(np.float32)


def default_embedding(ckpt: Checkpoint) -> np.ndarray:
    """float32 [embedding_dim], the fallback default (MEAN_FEATURES_RULE): a function of the checkpoint alone."""
    spec, p = ckpt.spec, ckpt.params
    with torch.no_grad():
        e = torch.zeros(spec.embedding_dim)
        if "meta.w1" in p:  # standardized mean features = 0: the first layer gives its bias
            e = e + blocks.linear(torch.relu(p["meta.b1"]), p["meta.w2"], p["meta.b2"])
        if "meta.id_table" in p:  # an unseen task's id row: the table's mean row
            e = e + p["meta.id_table"].mean(0)
    return e.float().numpy()


def _context_stats(ckpt: Checkpoint) -> tuple[torch.Tensor, torch.Tensor]:
    stats = ckpt.input_stats
    if stats is None:  # a checkpoint without input standardization: identity
        return torch.zeros(ckpt.spec.other_in), torch.ones(ckpt.spec.other_in)
    return stats["other_mean"], stats["other_std"]


def global_logits(ckpt: Checkpoint, context: torch.Tensor, item_hashes: torch.Tensor,
                  embedding: torch.Tensor) -> torch.Tensor:
    """The global block in process, as fine-tune and training run it: logits [N] from raw
    context [N, other_in], Spark's item hashes [N] (reduced by blocks.lookup) and embeddings [N, E]."""
    _, g = blocks.split(ckpt.params)
    mean, std = _context_stats(ckpt)
    with torch.no_grad():
        pre = blocks.global_pre(g, standardize(context, mean, std), item_hashes, ckpt.spec)
        return blocks.global_from_pre(g, pre, embedding, ckpt.spec)


class GlobalBlock(torch.nn.Module):
    """What the ONNX graph computes: standardize the context, then the global block."""

    def __init__(self, ckpt: Checkpoint):
        super().__init__()
        self.spec = ckpt.spec
        mean, std = _context_stats(ckpt)
        self.register_buffer("context_mean", mean.clone())
        self.register_buffer("context_std", std.clamp_min(1e-6).clone())  # as data.standardize clamps
        _, g = blocks.split(ckpt.params)
        self.names = sorted(g)
        for name in self.names:
            self.register_buffer(name.replace(".", "_"), g[name].detach().clone().float())

    def forward(self, context, item_bucket, embedding):
        g = {name: getattr(self, name.replace(".", "_")) for name in self.names}
        x = (context - self.context_mean) / self.context_std
        logit = blocks.global_from_pre(g, blocks.global_pre(g, x, item_bucket, self.spec), embedding, self.spec)
        return torch.sigmoid(logit), logit


def metadata(ckpt: Checkpoint, contract, graph_sha256: str, default: np.ndarray | None = None,
             default_rule: str = "") -> dict:
    """The model's part of the metadata document."""
    if default is None:
        default, default_rule = default_embedding(ckpt), MEAN_FEATURES_RULE
    default = np.asarray(default, dtype=np.float32)
    if default.shape != (ckpt.spec.embedding_dim,) or not np.isfinite(default).all():
        raise ValueError(f"default embedding of shape {default.shape} (finite: {np.isfinite(default).all()}); "
                         f"model {ckpt.version} needs {ckpt.spec.embedding_dim} finite values")
    spec = ckpt.spec
    mean, std = _context_stats(ckpt)
    return {
        "model_version": ckpt.version,
        "mode": ckpt.mode,
        "context_columns": list(ckpt.context_columns),
        "context_standardization": {"mean": mean.tolist(), "std": std.tolist(), "applied_in_graph": True},
        "embedding_dim": spec.embedding_dim,
        "item_buckets": spec.item_buckets,
        "default_embedding": [float(x) for x in default],
        "default_embedding_rule": default_rule,
        "finetune": ckpt.finetune_choice,  # what the daily embeddings were fine-tuned with (None: the fallback)
        "inputs": list(contract.INPUTS),
        "outputs": list(contract.OUTPUTS),
        "graph_sha256": graph_sha256,
    }


def _example_inputs(spec) -> tuple[torch.Tensor, ...]:
    n = 2  # > 1: a batch of one would be specialized to a constant by the exporter
    return (torch.zeros(n, spec.other_in), torch.zeros(n, dtype=torch.int64), torch.zeros(n, spec.embedding_dim))


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints its progress, logs its optimizer passes and that torchvision is
    absent, and warns about its own internals: none of it is about this model (a failure
    still raises)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def build_artifact(ckpt: Checkpoint, contract, default: np.ndarray | None = None, default_rule: str = "") -> bytes:
    """The artifact's bytes: the ONNX model with the metadata document (the model's part plus
    contract.SHARED_METADATA) as JSON in metadata_props[contract.METADATA_KEY]. `contract`:
    core.artifact_contract. `default`: the default embedding (described by `default_rule`);
    None: default_embedding(ckpt)."""
    batch = torch.export.Dim("batch")
    names = list(contract.INPUTS)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            GlobalBlock(ckpt).eval(), _example_inputs(ckpt.spec), dynamo=True, external_data=False,
            input_names=names, output_names=list(contract.OUTPUTS),
            dynamic_shapes={name: {0: batch} for name in names}, verbose=False)
    model = program.model_proto
    model.producer_name = "metaemb"
    model.doc_string = f"metaemb global block, model version {ckpt.version}"
    entry = model.metadata_props.add()
    entry.key = contract.METADATA_KEY
    entry.value = json.dumps({**contract.SHARED_METADATA,
                              **metadata(ckpt, contract, contract.graph_digest(model.graph), default, default_rule)})
    return model.SerializeToString()

