"""`metaemb status` reads stage_log / publish_log (real Delta) and exits non-zero when stale."""

import datetime as dt

import pytest

from metaemb.status import status
from pipelines import lake
from serving.publish_log import log_publish

pytestmark = pytest.mark.spark

D = dt.date(2026, 10, 30)


def test_status_reports_stages_and_freshness(spark, cfg, tmp_path):
    lines = []
    assert status(cfg, expect_date=D, progress=lines.append) == 1  # nothing ran yet
    for stage, rows in (("labeled", 900), ("samples", 100), ("embed", 100), ("publish", 100)):
        lake.log_stage(cfg, stage, {D: rows}, 1.0, "model=abc123" if stage == "embed" else "")
    log_publish(cfg, D, status="published", method="fast", rows=100, seconds=0.5, gate=None, view="meta_embedding_b")
    lines.clear()
    plot = tmp_path / "status.png"
    assert status(cfg, expect_date=D, plot_path=str(plot), progress=lines.append) == 0
    text = "\n".join(lines)
    assert "2026-10-30  labeled+samples+embed+publish" in text and "model=abc123" in text
    assert "latest published: 2026-10-30" in text and "in meta_embedding_b; expected 2026-10-30: OK" in text
    assert plot.stat().st_size > 1000
    lines.clear()
    assert status(cfg, expect_date=D + dt.timedelta(days=1), progress=lines.append) == 1
    assert "STALE" in lines[-1]
