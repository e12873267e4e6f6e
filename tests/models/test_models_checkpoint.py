from pathlib import Path

import pytest
import torch

from models.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

from models.blocks import init_params
from models_helpers import small_spec

pytestmark = pytest.mark.unit


def make(seed=0, **kw):
    spec = small_spec(**kw)
    return Checkpoint(spec=spec, params=init_params(spec, seed), mode="limaml", train_config={"mode": "limaml", "epochs": 3},
                      meta_columns=[f"m{i}" for i in range(spec.meta_in)], context_columns=["c0", "c1", "c2"],
                      metrics={"valid": [{"auc": 0.7}]})


def test_roundtrip_and_latest(tmp_path):
    ck = make()
    path = save_checkpoint(ck, tmp_path)
    assert path == tmp_path / f"{ck.version}.pt" and len(ck.version) == 12
    assert (tmp_path / "LATEST").read_text().strip() == ck.version
    back = load_checkpoint(tmp_path, expect=ck.spec)
    assert back.version == ck.version and back.spec == ck.spec and back.mode == "limaml"
    assert back.meta_columns == ck.meta_columns and back.context_columns == ck.context_columns
    assert back.train_config == ck.train_config and back.metrics == ck.metrics
    for k in ck.params:
        assert torch.equal(back.params[k], ck.params[k])
    # a second model becomes LATEST; the first stays loadable by file
    ck2 = make(seed=1)
    save_checkpoint(ck2, tmp_path)
    assert load_checkpoint(tmp_path).version == ck2.version
    assert load_checkpoint(path).version == ck.version
    assert not list(tmp_path.glob("*.tmp"))


def test_version_is_a_stable_content_hash():
    a, b, c = make(0), make(0), make(1)
    assert a.version == b.version != c.version
    d = make(0)
    d.params["meta.b1"] = d.params["meta.b1"] + 1e-3
    assert Checkpoint(spec=d.spec, params=d.params).version != a.version


def test_missing_corrupt_and_tampered(tmp_path):
    with pytest.raises(CheckpointError, match="no LATEST"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    ck = make()
    path = save_checkpoint(ck, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)
    blob = torch.load(tmp_path.parent / "x.pt" if False else __import__("io").BytesIO(data), weights_only=True)
    blob["params"]["meta.b1"] += 1.0
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="content hash"):
        load_checkpoint(path)


def test_mismatched_spec_is_refused_with_names(tmp_path):
    ck = make()
    save_checkpoint(ck, tmp_path)
    with pytest.raises(CheckpointError, match=r"meta_in: checkpoint 5 vs expected 7"):
        load_checkpoint(tmp_path, expect=small_spec(meta_in=7))
    bad = make()
    bad.params["global.w1"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"global.w1 has shape \(3, 3\)"):
        save_checkpoint(bad, Path(tmp_path) / "other")
