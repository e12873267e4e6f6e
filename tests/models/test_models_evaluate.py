import json

import numpy as np
import pandas as pd
import pytest

from metaemb.datasets.movielens import to_interactions
from metaemb.research.evaluate import history_features

pytestmark = pytest.mark.unit

INTER = "var/data/ml-100k/ml-100k.inter"


def test_movielens_conversion(tmp_path):
    from core.config import PROJECT_ROOT

    to_interactions(PROJECT_ROOT / INTER, tmp_path / "i.parquet")
    back = pd.read_parquet(tmp_path / "i.parquet")
    assert list(back.columns) == ["user_id", "item_id", "event_timestamp", "label"]
    assert len(back) == 100_000 and str(back["event_timestamp"].dt.tz) == "UTC"
    assert set(back["label"].unique()) == {0, 1}
    raw = pd.read_csv(PROJECT_ROOT / INTER, sep="\t")
    assert back["label"].sum() == (raw["rating:float"] >= 4).sum()


def test_history_features_are_leak_free():
    df = pd.DataFrame({"task": [1, 1, 1, 1, 2], "ts": [10, 20, 20, 30, 5], "label": [1, 0, 1, 1, 0]})
    h = history_features(df, ["task"], "u", rate0=0.5)
    np.testing.assert_allclose(np.expm1(h["u_log_n"]), [0, 1, 1, 3, 0])  # same-timestamp events don't see each other
    np.testing.assert_allclose(h["u_rate"], [(0 + 1) / 2, (1 + 1) / 3, (1 + 1) / 3, (2 + 1) / 5, 0.5])


def test_evaluate_quick_writes_reports(tmp_path):
    from core import config as config_mod
    from metaemb.commands import evaluate as cmd

    cfg = config_mod.from_dict({"pipeline": {"cap_samples": 32}}, base_dir=tmp_path)
    src = config_mod.PROJECT_ROOT / INTER
    import argparse

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    args = p.parse_args(["--interactions", str(src), "--out", str(tmp_path / "ev"), "--quick", "--seeds", "1",
                         "--epochs", "2", "--max-events", "5000"])
    assert cmd.run(args, cfg) == 0
    rows = json.loads((tmp_path / "ev" / "report.json").read_text())
    keys = {(r["method"], r["meta_block"], r["fine_tune"], r["slice"]) for r in rows}
    assert all(set(r) == {"method", "meta_block", "fine_tune", "slice", "auc", "n_tasks"} for r in rows)
    # Table 3: three methods with the MLP meta block; Table 4: vanilla and LiMAML with the ID block
    assert {(m, b) for m, b, _, _ in keys} == {("vanilla", "mlp"), ("maml", "mlp"), ("limaml", "mlp"),
                                               ("vanilla", "id"), ("limaml", "id")}
    assert {ft for _, _, ft, _ in keys} == {False, True}
    assert {s for _, _, _, s in keys} <= {"all", "lt25", "ge25", "cold"} and ("vanilla", "mlp", False, "all") in keys
    assert len(rows) == 40
    for r in rows:
        assert r["n_tasks"] >= 0
        if r["slice"] == "all":
            assert r["n_tasks"] > 0 and 0.3 < r["auc"] < 1.0
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "| w/o fine-tune |" in md and "LiMAML" in md and "+0.00%" in md
    assert "## Table 4 layout" in md and "| MLP + ID embeddings (vanilla training) | n/a | no |" in md
    assert (tmp_path / "ev" / "auc_by_slice.png").stat().st_size > 1000
