import json

import numpy as np
import pandas as pd
import pytest

from metaemb.datasets.movielens import to_entity_features, to_interactions
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


def test_movielens_1m_layout_string_ids_and_user_features(tmp_path):
    """ML-1M's atomic files: string ids (`1m_1`, titles with quotes and commas), coded occupations."""
    (tmp_path / "ml.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1m_2\tBug's Life, A (1998)\t5\t978300760\n"
        '1m_1\t"Great Escape, The" (1963)\t3\t978300100\n'
        "1m_1\tBug's Life, A (1998)\t4\t978300200\n")
    (tmp_path / "ml.user").write_text(
        "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n"
        "1m_1\t1\tF\t10\t48067\n1m_2\t56\tM\t2\t\n")
    events = to_interactions(tmp_path / "ml.inter", tmp_path / "i.parquet")
    assert events["user_id"].tolist() == ["1m_1", "1m_1", "1m_2"]
    assert events["item_id"].tolist() == ['"Great Escape, The" (1963)', "Bug's Life, A (1998)", "Bug's Life, A (1998)"]
    assert events["label"].tolist() == [0, 1, 1]
    first = events["event_timestamp"].min()
    users = to_entity_features(tmp_path / "ml.user", tmp_path / "u.parquet", valid_from=first)
    back = pd.read_parquet(tmp_path / "u.parquet")
    assert list(back.columns) == ["user_id", "feature_timestamp", "age", "gender_f", "occupation_2", "occupation_10"]
    assert back["user_id"].tolist() == ["1m_1", "1m_2"] and (back["feature_timestamp"] == first).all()
    assert back[["age", "gender_f", "occupation_2", "occupation_10"]].values.tolist() == [[1, 1, 0, 1], [56, 0, 1, 0]]
    assert users.equals(back)


def test_movielens_100k_user_file_joins_the_integer_ids(tmp_path):
    from core.config import PROJECT_ROOT

    users = to_entity_features(PROJECT_ROOT / "var/data/ml-100k/ml-100k.user", tmp_path / "u.parquet",
                               valid_from=pd.Timestamp("1997-09-20", tz="UTC"))
    assert len(users) == 943 and users["user_id"].dtype == "int64"
    assert users.filter(like="occupation_").sum(axis=1).eq(1).all()  # one-hot: exactly one occupation each


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
