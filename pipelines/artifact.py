"""Write a checkpoint's serving artifact beside it: models.artifact builds the ONNX bytes,
core.artifact names the file, holds the parts of the contract that are not the model's and
does the file I/O. No Spark here: `metaemb export` runs it without a JVM."""

from __future__ import annotations

from core import artifact as contract
from core.storage import Location


def export_artifact(ckpt, checkpoint_dir, default=None, default_rule: str = "") -> Location:
    """<checkpoint_dir>/<version>.onnx for this checkpoint (replaced if present); its path.
    default / default_rule: the default embedding and how it was made (None: the meta block
    at the training mean features, models.artifact.MEAN_FEATURES_RULE)."""
    from models.artifact import build_artifact

    data = build_artifact(ckpt, contract.METADATA_KEY, {"format": contract.FORMAT, "item_hash": contract.ITEM_HASH},
                          default, default_rule)
    path = contract.artifact_path(checkpoint_dir, ckpt.version)
    contract.write_artifact_bytes(path, data)
    return path
