"""Load and run a serving artifact with ONNX Runtime only (no PyTorch, no metaemb model code):
what an online model server does with <checkpoint_dir>/<version>.onnx (core/artifact_contract.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from core import artifact_contract as contract
from core.artifact_contract import ArtifactError
from core.config import Config
from core.storage import Location


@dataclass
class ServingArtifact:
    source: str  # where it was read from, for messages
    meta: dict
    session: object  # onnxruntime.InferenceSession

    @property
    def model_version(self) -> str:
        return self.meta["model_version"]

    @property
    def context_columns(self) -> list[str]:
        return list(self.meta["context_columns"])

    @property
    def embedding_dim(self) -> int:
        return int(self.meta["embedding_dim"])

    @property
    def default_embedding(self) -> np.ndarray:
        return np.asarray(self.meta["default_embedding"], dtype=np.float32)

    def item_buckets_of(self, item_ids) -> np.ndarray:
        return contract.item_bucket(item_ids, int(self.meta["item_buckets"]))

    def predict(self, context: np.ndarray, item_ids, embedding: np.ndarray) -> np.ndarray:
        """Probabilities [N] from raw context [N, len(context_columns)], item ids and embeddings [N, E]."""
        return self.run(context, self.item_buckets_of(item_ids), embedding)

    def run(self, context: np.ndarray, item_buckets: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """predict() with the item ids already reduced to item_buckets_of(item_ids)."""
        n = len(item_buckets)
        feeds = dict(zip(contract.INPUTS, (
            np.ascontiguousarray(context, dtype=np.float32).reshape(n, len(self.context_columns)),
            np.asarray(item_buckets, dtype=np.int64),
            np.ascontiguousarray(embedding, dtype=np.float32).reshape(n, self.embedding_dim))))
        return self.session.run([contract.OUTPUTS[0]], feeds)[0]

def artifact_path(cfg: Config, model_version: str) -> Location:
    return contract.artifact_path(cfg.location(cfg.model.checkpoint_dir), model_version)


def load_artifact(path, expect_version: str | None = None) -> ServingArtifact:
    """Read, verify and open an artifact; ArtifactError naming the file if it is unusable."""
    data = contract.read_artifact_bytes(path)
    meta = _metadata(data, str(path))
    if expect_version is not None and meta["model_version"] != expect_version:
        raise ArtifactError(f"{path}: holds model version {meta['model_version']}, not {expect_version}; "
                            f"re-export it with `metaemb export --model-version {expect_version}`")
    return ServingArtifact(source=str(path), meta=meta, session=_session(data, meta, str(path)))


def read_metadata(path) -> dict:
    """The artifact's metadata document, verified, without starting ONNX Runtime."""
    return _metadata(contract.read_artifact_bytes(path), str(path))


def load_for_version(cfg: Config, model_version: str) -> ServingArtifact:
    return load_artifact(artifact_path(cfg, model_version), expect_version=model_version)


def _metadata(data: bytes, where: str) -> dict:
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # truncated, or not protobuf at all
        raise ArtifactError(f"{where}: corrupt serving artifact, not a readable ONNX model ({type(e).__name__}: {e}); "
                            "re-export it with `metaemb export`") from e
    props = {p.key: p.value for p in model.metadata_props}
    try:
        meta = json.loads(props[contract.METADATA_KEY])
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"{where}: an ONNX model without metaemb's metadata; not a metaemb serving artifact") from e
    if meta.get("format") != contract.FORMAT:
        raise ArtifactError(f"{where}: artifact format {meta.get('format')!r}, this metaemb reads {contract.FORMAT!r}; "
                            "re-export it with this metaemb's `metaemb export`")
    digest = contract.graph_digest(model.graph)
    if digest != meta.get("graph_sha256"):
        raise ArtifactError(f"{where}: the graph's sha256 {digest[:12]} does not match the recorded "
                            f"{str(meta.get('graph_sha256'))[:12]} (file altered or corrupt); re-export it")
    _check_shapes(model, meta, where)
    return meta


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _check_shapes(model, meta: dict, where: str) -> None:
    """The graph's inputs agree with the metadata: the artifact has the shape it claims."""
    inputs = {i.name: _dims(i) for i in model.graph.input}
    width = {"context": len(meta["context_columns"]), "embedding": meta["embedding_dim"]}
    if sorted(inputs) != sorted(contract.INPUTS):
        raise ArtifactError(f"{where}: graph inputs {sorted(inputs)}, a metaemb artifact has {list(contract.INPUTS)}")
    for name, want in width.items():
        got = inputs[name][1] if len(inputs[name]) == 2 else None
        if got != want:
            raise ArtifactError(f"{where}: graph input {name!r} is {inputs[name]} wide, the metadata says {want}")
    if len(meta["default_embedding"]) != meta["embedding_dim"]:
        raise ArtifactError(f"{where}: default embedding has {len(meta['default_embedding'])} values, "
                            f"embedding_dim is {meta['embedding_dim']}")


def _session(data: bytes, meta: dict, where: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ArtifactError(f"{where}: ONNX Runtime cannot load the artifact ({type(e).__name__}: {e})") from e
