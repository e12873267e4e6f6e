"""Two namespaces of online rows, and the registry's one word on which of them readers see.

The online store holds the day in one of two feature views, core.tables.FEATURE_VIEWS
(meta_embedding_a, meta_embedding_b): the same entity, source and features, each with its own
online namespace (Redis: its own hash fields in every task's hash; SQLite: its own table). The
feature service (core.tables.FEATURE_SERVICE) names one of them. Every reader resolves the
service through Feast's registry (get_online_features, `metaemb lookup | serve | score`), so it
reads one namespace, which holds one run_date of one model version, whole.

A publish writes the day into the other namespace, where no reader looks, in batches of any
size; switch() then records the day's interval on that view and points the service at it. The
pointing is ONE registry write (the file registry is replaced atomically; S3 takes one PUT): a
kill -9 before it leaves the previous day served, after it the new one. The namespace switched away from is
removed after [feast] switch_grace_s, when no reader's cached registry names it any longer.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from core import tables


def day_interval(run_date: date) -> tuple[datetime, datetime]:
    """The materialization interval of a run_date: (run_date 00:00, run_date+1 00:00] UTC.

    Rows of run_date carry event_timestamp = run_date + 1 day 00:00; Feast's Spark store
    reads `BETWEEN start AND end` (both inclusive), so the start is moved 1 us past
    midnight to leave the previous day's rows (event_timestamp = run_date 00:00) out.
    """
    end = datetime(run_date.year, run_date.month, run_date.day, tzinfo=timezone.utc) + timedelta(days=1)
    return end - timedelta(days=1) + timedelta(microseconds=1), end


def interval_day(materialized_end: datetime) -> date:
    """The run_date whose rows an interval ending materialized_end holds (inverse of day_interval)."""
    return (materialized_end - timedelta(days=1)).date()


def served_view(store) -> str:
    """The feature view the feature service names: the namespace readers see."""
    service = store.get_feature_service(tables.FEATURE_SERVICE)
    return service.feature_view_projections[0].name


def other_view(view: str) -> str:
    a, b = tables.FEATURE_VIEWS
    return b if view == a else a


def served_day(store) -> date | None:
    """The run_date the served namespace holds (None: nothing published into it)."""
    ends = [end for _, end in store.get_feature_view(served_view(store)).materialization_intervals]
    return interval_day(max(ends)) if ends else None


def switch(store, view: str, run_date: date, record: bool = True) -> None:
    """Record that `view` holds run_date (record=False: Feast's materialize did), then point the
    feature service at it. Two registry writes: the first changes nothing a reader resolves (the
    service still names the other view); the second is the switch."""
    registry, project = store.registry, store.project
    start, end = day_interval(run_date)
    if record:
        registry.apply_materialization(store.get_feature_view(view), project, start, end, commit=True)
    service = store.get_feature_service(tables.FEATURE_SERVICE)
    fv = store.get_feature_view(view)
    registry.apply_feature_service(type(service)(name=service.name, features=[fv], description=service.description,
                                                 tags=service.tags, owner=service.owner), project, commit=True)
