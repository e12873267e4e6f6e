"""A real `airflow backfill create --dag-id metaemb_daily` over 7 dates on SQLite metadata:
api-server, scheduler and dag-processor started on free loopback ports (scripts/airflow.sh
backfill starts them, retries `backfill create` on "database is locked", waits, stops them),
ending with every date present exactly once in every table."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from af_helpers import airflow_sh, config_for, table_counts, task_logs
from core import config as config_mod
from metaemb import airflow_env
from core import tables

FROM, TO = dt.date(2026, 10, 22), dt.date(2026, 10, 28)


@pytest.mark.slow
@pytest.mark.services
def test_backfill_create_seven_dates(airflow_project, spark):
    cfg_path = config_for(airflow_project, "backfill")
    cfg = config_mod.load(cfg_path)
    home = cfg.path(cfg.airflow.home)
    proc = airflow_sh(cfg_path, "backfill", FROM.isoformat(), TO.isoformat(), "--timeout", "3600",
                      check=False, timeout=3900)
    dates = [FROM + dt.timedelta(days=i) for i in range((TO - FROM).days + 1)]
    assert len(dates) >= 7
    reported = dict(re.findall(r"^\s+(\d{4}-\d\d-\d\d): (\w+)$", proc.stdout, re.M))
    took = re.search(r"succeeded in (\d+)s", proc.stdout)
    print(f"backfill {FROM}..{TO}: exit {proc.returncode}, {took.group(1) if took else '?'}s "
          f"(helper call incl. service start/stop {proc.seconds:.0f}s)")
    detail = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert reported == {d.isoformat(): "success" for d in dates}, \
        detail + "\n" + task_logs(home, "metaemb_daily", limit=1500)[-20000:]
    assert proc.returncode == 0, detail

    # Services are stopped afterwards (the helper started them, so it stops them).
    assert not any(airflow_env.running(cfg).values()), airflow_env.running(cfg)

    # Every date present exactly once in every table.
    keys = list(cfg.data.task_key)
    emb = table_counts(spark, cfg, tables.META_EMBEDDINGS, tables.RUN_DATE, keys)
    smp = table_counts(spark, cfg, tables.TASK_SAMPLES, tables.RUN_DATE, keys)
    lab = table_counts(spark, cfg, tables.LABELED_INTERACTIONS, "event_date",
                       keys + ["item_id", "event_timestamp"])
    for d in dates:
        rows, distinct = emb.get(d, (0, 0))
        assert rows > 0 and rows == distinct, (d, emb.get(d))
        assert smp.get(d, (0, 0)) == (rows, rows), (d, smp.get(d), rows)
        lrows, ldistinct = lab.get(d, (0, 0))
        assert lrows > 0 and lrows == ldistinct, (d, lab.get(d))
