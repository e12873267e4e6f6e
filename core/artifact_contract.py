"""The serving artifact's contract, shared by its writer (models.onnx_export, which is handed
this module) and its readers (serving.onnx_runtime, or any ONNX Runtime in an online model server).

One file per model version, beside the checkpoint: <checkpoint_dir>/<model_version>.onnx.
It is the global block as an ONNX graph whose first op standardizes the context columns
with the checkpoint's input_stats, plus a JSON document in the model's metadata_props under
METADATA_KEY (feature column order, item hashing, embedding size, default embedding, model
version). Graph inputs, all with a leading batch dimension:

    context      float32 [N, len(context_columns)]  raw values, in context_columns order
    item_bucket  int64   [N]   item_bucket(item_id, item_buckets), see below
    embedding    float32 [N, embedding_dim]  the task's published meta embedding
outputs: probability float32 [N], logit float32 [N].

The item hashing must be what the pipeline did (pipelines/labeled.py hashes
`xxhash64(cast(item_id as string))` in Spark; models.blocks.lookup reduces it with
torch.remainder, the non-negative floor modulo). Spark's xxhash64 of a string is XXH64 over
its UTF-8 bytes with seed 42, and of a null it is the seed, 42. tests/feast checks
item_hash against Spark's.

All artifact file I/O goes through write_artifact_bytes / read_artifact_bytes, so it can be
routed to object storage in one place.
"""

from __future__ import annotations

import hashlib

import numpy as np

from core.storage import Location, as_location

FORMAT = "metaemb-serving-artifact/1"
METADATA_KEY = "metaemb"
SUFFIX = ".onnx"
INPUTS = ("context", "item_bucket", "embedding")
OUTPUTS = ("probability", "logit")
SPARK_XXHASH64_SEED = 42  # Spark's xxhash64 default seed (XxHash64 in Catalyst)
ITEM_HASH = {
    "function": "xxhash64",
    "seed": SPARK_XXHASH64_SEED,
    "of": "item_id as a string (integers in decimal, as Spark casts them), UTF-8 bytes; null hashes to the seed",
    "as": "signed int64 (Spark's xxhash64)",
    "bucket": "hash mod item_buckets, non-negative (floor modulo: ((h % n) + n) % n)",
}
# The part of the metadata document that is the contract's, not the model's.
SHARED_METADATA = {"format": FORMAT, "item_hash": ITEM_HASH}


def graph_digest(graph) -> str:
    """sha256 of an ONNX graph, serialized deterministically: recorded in the metadata by the
    writer, recomputed by the reader to catch altered weights."""
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()


class ArtifactError(RuntimeError):
    """A serving artifact that cannot be used: missing, corrupt, or another model's."""


def artifact_path(checkpoint_dir, model_version: str) -> Location:
    """Beside the checkpoint: a local folder or s3://… (checkpoint_dir as a Location or a path)."""
    return as_location(checkpoint_dir) / f"{model_version}{SUFFIX}"


def write_artifact_bytes(path, data: bytes) -> None:
    """Write atomically (temp file + rename; one PUT on S3): a reader never sees half an artifact."""
    as_location(path).write_bytes_atomic(data)


def read_artifact_bytes(path) -> bytes:
    path = as_location(path)
    if not path.is_file():
        raise ArtifactError(f"serving artifact not found: {path}; write it with "
                            f"`metaemb export --model-version {path.name.removesuffix(SUFFIX)}`")
    return path.read_bytes()


def _spark_string(value) -> str | None:
    """cast(item_id as string) for the id types the data contract allows (integer, string)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"item_id {value!r} is a {type(value).__name__}: item ids must be integers or strings")
    return str(int(value))


def item_hash(values) -> np.ndarray:
    """Spark's xxhash64(cast(item_id as string)) for each value: int64 [N]."""
    import xxhash

    out = np.empty(len(values), dtype=np.uint64)
    for i, value in enumerate(values):
        s = _spark_string(value)
        out[i] = SPARK_XXHASH64_SEED if s is None else xxhash.xxh64_intdigest(s.encode("utf-8"), SPARK_XXHASH64_SEED)
    return out.view(np.int64)


def item_bucket(values, item_buckets: int) -> np.ndarray:
    """The item table row the model reads for each item_id: int64 [N] in [0, item_buckets)."""
    if item_buckets <= 0:
        return np.zeros(len(values), dtype=np.int64)
    return np.mod(item_hash(values), np.int64(item_buckets))  # numpy's mod is floor modulo, like torch.remainder
