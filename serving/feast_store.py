"""Feast side of metaemb: the store from config, apply, the two publish paths, lookups.

* `feature_store(cfg)` builds Feast's RepoConfig in memory from core.config (no YAML
  read), so the CLI, the DAGs and the tests never depend on the working directory.
  `render_yaml(cfg)` writes the same settings as a feature_store.yaml; the committed
  feature_repo/feature_store.yaml is render_yaml(defaults) (a test keeps them equal).
* `apply(cfg)` registers feature_repo/definitions.build(cfg) and creates the online table.
* `write_partition(cfg, run_date, method)` pushes one run_date partition of
  meta_embeddings into the online store, either through Feast's stock
  `FeatureStore.materialize` ("materialize") or through the bulk path ("fast"):
  delta-rs -> Arrow batches of `[feast] batch_rows` (DayRows) -> value protos serialized in
  bulk (numpy) -> the online store's own table / key layout, all batches in ONE transaction
  (SQLite: one `BEGIN..COMMIT`, WAL journal; Redis: one MULTI/EXEC), then
  `registry.apply_materialization` for the day's interval.
  A kill -9 at any point leaves either the previous state or the whole new day.
  With replace_all (a model version switch) the same transaction also removes every task
  the day lacks, so the store then holds one model version only.
* `lookup(cfg, keys)` reads through `get_online_features` (feature service `metaemb`).

The gated, logged stage that the pipeline calls is serving.publish.publish(), one layer
above this module. `metaemb feast render | apply` is the command line for these helpers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import struct
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from core import storage, tables
from core.config import Config
from pipelines import lake
from pipelines.spark import s3_spark_conf
from pipelines.faults import kill_point

log = logging.getLogger(__name__)

REDIS_PASSWORD_ENV = "METAEMB_REDIS_PASSWORD"
FEATURE_VIEW = "meta_embedding"
FEATURE_SERVICE = "metaemb"
ENTITY_KEY_SERIALIZATION_VERSION = 3
ATOMIC_REGISTRY_STORE = "serving.feast_registry.AtomicFileRegistryStore"


class PublishError(RuntimeError):
    """The partition cannot be published (missing, malformed); nothing was written."""


# --------------------------------------------------------------------------- config


def repo_dir(cfg: Config) -> Path:
    return cfg.path(cfg.feast.repo_path).resolve()


def _spark_conf_for_feast(cfg: Config, rel_to: Path | None) -> dict[str, str]:
    """Spark settings Feast uses only when it has to start a session itself (the CLI)."""
    # spark.jars takes no globs: name the Delta jars set-up fetched (delta-spark, delta-storage).
    jars_dir = cfg.path(cfg.spark.jars_dir).resolve()
    found = sorted(jars_dir.glob("delta-*.jar")) or [jars_dir / "delta-spark.jar", jars_dir / "delta-storage.jar"]
    jars = ",".join(str(j) if rel_to is None else os.path.relpath(j, rel_to) for j in found)
    conf = {
        "spark.master": cfg.spark.master,
        "spark.jars": jars,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
    }
    if cfg.uses_s3():
        conf.update(s3_spark_conf(cfg))
    return conf


def _redis_connection_string(cfg: Config, *, password_placeholder: bool = False) -> str:
    conn = cfg.feast.redis_connection
    if os.environ.get(REDIS_PASSWORD_ENV):
        # The password is never written to a file or a log: the in-memory RepoConfig gets
        # the value, a rendered YAML gets ${METAEMB_REDIS_PASSWORD} (Feast expands it).
        pw = "${%s}" % REDIS_PASSWORD_ENV if password_placeholder else os.environ[REDIS_PASSWORD_ENV]
        conn = f"{conn},password={pw}"
    return conn


def _registry_settings(cfg: Config, local_path) -> dict[str, Any]:
    """A local registry goes through the atomic file store; s3://… through Feast's own S3
    registry store (boto3; endpoint from $FEAST_S3_ENDPOINT_URL, set by repo_config)."""
    if storage.is_s3(cfg.feast.registry_path):
        return {"registry_type": "file", "path": cfg.location(cfg.feast.registry_path).uri, "cache_ttl_seconds": 0}
    return {"registry_type": "file", "path": local_path(cfg.feast.registry_path),
            "registry_store_type": ATOMIC_REGISTRY_STORE, "cache_ttl_seconds": 0}


def _s3_registry_environment(cfg: Config) -> None:
    """Feast's S3 registry store builds its boto3 client from the environment only."""
    settings = cfg.location(cfg.feast.registry_path).s3
    if settings.endpoint_url:
        os.environ["FEAST_S3_ENDPOINT_URL"] = settings.endpoint_url
    os.environ.setdefault("AWS_DEFAULT_REGION", settings.region)
    os.environ.setdefault("AWS_MAX_ATTEMPTS", str(settings.max_attempts))


def _store_settings(cfg: Config, rel_to: Path | None, *, for_file: bool) -> dict[str, Any]:
    def p(value: str) -> str:
        path = cfg.path(value).resolve()
        return str(path) if rel_to is None else os.path.relpath(path, rel_to)

    if cfg.feast.online_store == "sqlite":
        online: dict[str, Any] = {"type": "sqlite", "path": p(cfg.feast.sqlite_path)}
    else:
        online = {"type": "redis", "connection_string": _redis_connection_string(cfg, password_placeholder=for_file)}
    settings: dict[str, Any] = {
        "project": cfg.feast.project,
        "provider": "local",
        "registry": _registry_settings(cfg, p),
        "online_store": online,
        "offline_store": {"type": "spark", "spark_conf": _spark_conf_for_feast(cfg, rel_to)},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }
    if cfg.feast.batch_engine == "spark":
        settings["batch_engine"] = {"type": "spark.engine", "partitions": cfg.spark.shuffle_partitions}
    return settings


def repo_config(cfg: Config):
    from feast.repo_config import RepoConfig

    settings = _store_settings(cfg, None, for_file=False)
    if cfg.feast.online_store == "sqlite":
        cfg.path(cfg.feast.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    if storage.is_s3(cfg.feast.registry_path):
        _s3_registry_environment(cfg)
    else:
        cfg.path(cfg.feast.registry_path).parent.mkdir(parents=True, exist_ok=True)
    rc = RepoConfig(**settings)
    rc.repo_path = repo_dir(cfg)
    return rc


def render_yaml(cfg: Config, *, relative: bool = True) -> str:
    """feature_store.yaml for `feast` CLI use of this config (paths relative to the repo)."""
    import yaml

    settings = _store_settings(cfg, repo_dir(cfg) if relative else None, for_file=True)
    header = (
        "# Generated from core.config by serving.feast_store.render_yaml -- edit the config,\n"
        "# not this file (tests/feast checks the committed copy matches the default config).\n"
        "# Paths are relative to this folder. For another config, write one with\n"
        "#   metaemb --config my.toml feast render --out my_store.yaml\n"
        "# and run: METAEMB_CONFIG=my.toml feast -c feature_repo -f my_store.yaml apply\n"
    )
    return header + yaml.safe_dump(settings, sort_keys=False)


def feature_store(cfg: Config):
    """Feast FeatureStore for this config (programmatic RepoConfig; no YAML read)."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_dir(cfg)), config=repo_config(cfg))


def definitions(cfg: Config) -> dict:
    """feature_repo/definitions.build(cfg), loaded from the repo folder of this config."""
    path = repo_dir(cfg) / "definitions.py"
    if not path.is_file():
        # a config file kept outside the project resolves the default "feature_repo" next to
        # itself; the declarations are code shipped with metaemb, so use the packaged ones
        from feature_repo import definitions as packaged

        log.info("no %s: using the packaged feature_repo definitions", path)
        return packaged.build(cfg)
    spec = importlib.util.spec_from_file_location("metaemb_feature_repo_definitions", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.build(cfg)


def apply(cfg: Config, store=None):
    """Register the entities, source, feature view and service; create the online table."""
    store = store or feature_store(cfg)
    objs = definitions(cfg)
    store.apply([*objs["entities"], objs["source"], objs["view"], objs["service"]])
    log.info("feast apply: project %s, feature view %s, online store %s",
             cfg.feast.project, FEATURE_VIEW, cfg.feast.online_store)
    return store


# ------------------------------------------------------------------------ the data


def day_interval(run_date: date) -> tuple[datetime, datetime]:
    """The materialization interval of a run_date: (run_date 00:00, run_date+1 00:00] UTC.

    Rows of run_date carry event_timestamp = run_date + 1 day 00:00; Feast's Spark store
    reads `BETWEEN start AND end` (both inclusive), so the start is moved 1 us past
    midnight to leave the previous day's rows (event_timestamp = run_date 00:00) out.
    """
    end = datetime(run_date.year, run_date.month, run_date.day, tzinfo=timezone.utc) + timedelta(days=1)
    return end - timedelta(days=1) + timedelta(microseconds=1), end


def served_day(materialized_end: datetime) -> date:
    """The run_date whose rows an interval ending materialized_end made current (inverse of day_interval)."""
    return (materialized_end - timedelta(days=1)).date()


def partition_columns(cfg: Config) -> list[str]:
    return [*cfg.data.task_key, tables.EMBEDDING, tables.N_SAMPLES, tables.MODEL_VERSION,
            tables.EVENT_TIMESTAMP, tables.CREATED_TIMESTAMP]


def read_partition(cfg: Config, run_date: date, columns: list[str] | None = None):
    """The run_date partition of meta_embeddings as one Arrow table (driver side, delta-rs).
    For small reads; publish, its gate and check stream the day (day_rows)."""
    _require_table(cfg)
    return lake.read_day(cfg, tables.META_EMBEDDINGS, run_date, columns or partition_columns(cfg))


def _require_table(cfg: Config) -> None:
    if not lake.table_exists(cfg, tables.META_EMBEDDINGS):
        raise PublishError(f"{cfg.table_location(tables.META_EMBEDDINGS)}: no Delta table meta_embeddings to publish from")


ROW = "_row"  # a row's number within its day, in the order every pass reads the day


@dataclass(frozen=True)
class DayRows:
    """One run_date partition of meta_embeddings, read as Arrow batches as often as a pass
    needs it. Publish, its gate and check hold one batch at a time, plus the day's keys for
    joins and the duplicate check (a few bytes a row), never the whole day: their memory
    stays flat from 100k to 1M tasks. Every pass yields the rows in the same order, so a
    row's number (ROW) names it across passes."""
    run_date: date
    scan: Callable[[list[str]], Iterator]  # columns -> pyarrow.RecordBatch stream

    def batches(self, columns: list[str]) -> Iterator:
        return iter(self.scan(columns))

    def keys(self, keys: list[str]):
        """The key columns and ROW, as one Arrow table."""
        parts, at = [], 0
        for batch in self.batches(keys):
            parts.append(pa.Table.from_batches([batch]).append_column(
                ROW, pa.array(np.arange(at, at + batch.num_rows, dtype=np.int64))))
            at += batch.num_rows
        if not parts:
            return pa.table({**{k: pa.array([], pa.string()) for k in keys}, ROW: pa.array([], pa.int64())})
        return pa.concat_tables(parts)

    @classmethod
    def of_table(cls, run_date: date, table, batch_rows: int = 65_536) -> "DayRows":
        """An in-memory table as a DayRows (tests, benches)."""
        return cls(run_date, lambda columns: table.select(columns).to_batches(max_chunksize=batch_rows))


def day_rows(cfg: Config, run_date: date, table=None) -> DayRows:
    """The run_date partition of meta_embeddings, streamed from Delta (or `table`, in memory)."""
    if isinstance(table, DayRows):
        return table
    if table is not None:
        return DayRows.of_table(run_date, table, cfg.feast.batch_rows)
    _require_table(cfg)
    return DayRows(run_date, lambda columns: lake.scan_day(cfg, tables.META_EMBEDDINGS, run_date, columns,
                                                           cfg.feast.batch_rows))


def check_keys(cfg: Config, day: DayRows) -> int:
    """The day's row count; PublishError on a null or duplicate task key."""
    keys = list(cfg.data.task_key)
    key_table = day.keys(keys)
    for k in keys:
        if key_table.column(k).null_count:
            raise PublishError(f"meta_embeddings: {key_table.column(k).null_count} rows with null key {k!r} "
                               f"on {day.run_date}")
    duplicates = duplicate_keys(key_table, keys)
    if duplicates:
        raise PublishError(f"meta_embeddings: duplicate task keys on {day.run_date} ({duplicates})")
    return key_table.num_rows


def duplicate_keys(key_table, keys: list[str]) -> int:
    """Rows whose task key an earlier row already has. Sorted, then neighbours compared: a
    hash group-by over 1M string keys held 160 MB at its peak, the sort 37 MB."""
    import pyarrow.compute as pc

    if key_table.num_rows < 2:
        return 0
    order = pc.sort_indices(key_table, sort_keys=[(k, "ascending") for k in keys])
    same = None
    for k in keys:
        column = key_table.column(k).take(order)
        equal = pc.equal(column.slice(1), column.slice(0, len(column) - 1))
        same = equal if same is None else pc.and_(same, equal)
    return int(pc.sum(same).as_py() or 0)


@dataclass
class _Encoded:
    rows: int
    entity_keys: list[bytes]  # Feast's serialize_entity_key() bytes, one per row
    values: dict[str, list[bytes]]  # feature name -> serialized ValueProto, one per row
    value_text: dict[str, list]  # feature name -> value_text column (SQLite)
    event_ts: list[datetime]  # naive UTC, as Feast's stores receive them
    created_ts: list[datetime | None]


def _entity_key_encoder(key_names: list[str]):
    """Vectorizable serialize_entity_key for string keys (format v3), checked against Feast's."""
    from feast.protos.feast.types.Value_pb2 import ValueType

    order = sorted(range(len(key_names)), key=lambda i: key_names[i])
    head = [struct.pack("<I", len(key_names))]
    for i in order:
        k = key_names[i].encode()
        head += [struct.pack("<I", ValueType.STRING), struct.pack("<I", len(k)), k]
    head_b = b"".join(head)
    tag = struct.pack("<I", ValueType.STRING)

    def encode(values_per_key: list[list[str]]) -> list[bytes]:
        cols = [values_per_key[i] for i in order]
        if len(cols) == 1:
            return [b"".join((head_b, tag, struct.pack("<I", len(e)), e))
                    for e in (v.encode() for v in cols[0])]
        out = []
        for vals in zip(*cols):
            parts = [head_b]
            for v in vals:
                e = v.encode()
                parts += [tag, struct.pack("<I", len(e)), e]
            out.append(b"".join(parts))
        return out

    return encode


def _check_entity_key(key_names: list[str], values: list[str], encoded: bytes) -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    ref = serialize_entity_key(
        EntityKeyProto(join_keys=key_names, entity_values=[ValueProto(string_val=v) for v in values]),
        entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
    )
    if ref != encoded:  # a Feast upgrade changed the key format: refuse rather than write garbage
        raise PublishError("bulk entity-key encoding differs from Feast's serialize_entity_key")


def encode_partition(cfg: Config, table) -> _Encoded:
    """Arrow rows (a batch of a day) -> Feast online-store records, serialized in bulk (no
    per-row protos). Keys unique across the day: check_keys."""
    import pyarrow.compute as pc
    from feast.protos.feast.types.Value_pb2 import FloatList, Value as ValueProto

    n = table.num_rows
    keys = cfg.data.task_key
    dim = cfg.model.embedding_dim
    key_values = []
    for k in keys:
        col = table.column(k)
        if col.null_count:
            raise PublishError(f"meta_embeddings: {col.null_count} rows with null key {k!r}")
        key_values.append(col.cast(pa.string()).to_pylist())
    entity_keys = _entity_key_encoder(keys)(key_values)
    if n:
        _check_entity_key(keys, [kv[0] for kv in key_values], entity_keys[0])

    # embedding: list<float> -> (n, dim) float32 -> ValueProto(float_list_val) bytes, whose
    # encoding is a constant prefix + the packed little-endian floats.
    emb_col = table.column(tables.EMBEDDING).combine_chunks()
    if emb_col.null_count:
        raise PublishError(f"meta_embeddings: {emb_col.null_count} rows with a null embedding")
    lengths = pc.list_value_length(emb_col).to_numpy(zero_copy_only=False)
    if n and (lengths != dim).any():
        bad = int((lengths != dim).sum())
        raise PublishError(f"meta_embeddings: {bad} embeddings are not {dim} long (model.embedding_dim)")
    flat = pc.list_flatten(emb_col).cast(pa.float32()).to_numpy(zero_copy_only=False)
    emb = np.ascontiguousarray(flat, dtype="<f4").reshape(n, dim)
    probe = ValueProto(float_list_val=FloatList(val=[1.0] * dim)).SerializeToString()
    prefix = probe[: len(probe) - 4 * dim]
    assert probe[len(prefix):] == np.ones(dim, "<f4").tobytes()
    width = len(prefix) + 4 * dim
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, len(prefix):] = emb.view(np.uint8).reshape(n, 4 * dim)
    blob = buf.tobytes()
    emb_bytes = [blob[i: i + width] for i in range(0, n * width, width)]

    # small-cardinality columns: one proto per distinct value
    def encode_small(values, make):
        cache: dict[Any, tuple[bytes, Any]] = {}
        out_b, out_t = [], []
        for v in values:
            hit = cache.get(v)
            if hit is None:
                proto = make(v)
                text = proto.string_val if proto.WhichOneof("val") == "string_val" else (
                    str(v) if v is not None else None)
                hit = cache[v] = (proto.SerializeToString(), text)
            out_b.append(hit[0])
            out_t.append(hit[1])
        return out_b, out_t

    ns_b, ns_t = encode_small(table.column(tables.N_SAMPLES).to_pylist(),
                              lambda v: ValueProto(int32_val=int(v)) if v is not None else ValueProto())
    mv_b, mv_t = encode_small(table.column(tables.MODEL_VERSION).to_pylist(),
                              lambda v: ValueProto(string_val=v) if v is not None else ValueProto())

    def naive_utc(col) -> list:
        # Spark's Arrow output is timestamp[us, UTC]; its Parquet files may hold INT96
        # (timestamp[ns], no zone) -- both are UTC instants
        micros = col.cast(pa.timestamp("us", tz=getattr(col.type, "tz", None))).cast(pa.int64())
        micros = micros.to_numpy(zero_copy_only=False)
        if col.null_count:
            raise PublishError(f"meta_embeddings: null timestamps in {col}")
        uniq, inverse = np.unique(micros, return_inverse=True)
        objs = [datetime(1970, 1, 1) + timedelta(microseconds=int(u)) for u in uniq]
        return [objs[i] for i in inverse]

    event_ts = naive_utc(table.column(tables.EVENT_TIMESTAMP).combine_chunks())
    created = table.column(tables.CREATED_TIMESTAMP).combine_chunks()
    created_ts = naive_utc(created) if created.null_count == 0 else [None] * n
    return _Encoded(
        rows=n, entity_keys=entity_keys,
        values={tables.EMBEDDING: emb_bytes, tables.N_SAMPLES: ns_b, tables.MODEL_VERSION: mv_b},
        value_text={tables.EMBEDDING: [None] * n, tables.N_SAMPLES: ns_t, tables.MODEL_VERSION: mv_t},
        event_ts=event_ts, created_ts=created_ts,
    )


# ----------------------------------------------------------------- online writers


def _sqlite_adapted(values: list) -> list:
    """values as sqlite3 would bind them: through the adapter registered for their type."""
    import sqlite3

    cache: dict[Any, Any] = {}
    out = []
    for v in values:
        hit = cache.get(v, cache)
        if hit is cache:
            adapt = sqlite3.adapters.get((type(v), sqlite3.PrepareProtocol))
            hit = cache[v] = adapt(v) if adapt is not None else v
        out.append(hit)
    return out


def _write_sqlite(store, encoded: Iterable[_Encoded], rows: int, replace_all: bool = False) -> None:
    """One transaction for the whole day, through the Feast SQLite store's connection, fed
    batch by batch (encoded); replace_all: the day's rows replace the table's (tasks the day
    lacks go). rows: the day's row count (where the kill point sits)."""
    from feast.infra.online_stores.sqlite import _quote_id, _table_id

    config = store.config
    fv = store.get_feature_view(FEATURE_VIEW)
    online = store._get_provider().online_store
    conn = online._get_conn(config)
    table = _table_id(config.project, fv, config.registry.enable_online_feature_view_versioning)
    cols = ["entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts"]
    upsert = (
        f"INSERT INTO {_quote_id(table)} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        "ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
    )
    # WAL: readers keep seeing the last committed day while the new one is written, and a
    # kill -9 before COMMIT leaves nothing of the new day (the WAL tail is discarded).
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # a day is tens of MB of B-tree pages: keep them in memory until COMMIT
    conn.execute("PRAGMA cache_size=-65536")  # KiB
    per_stmt = 200  # rows per statement: 1200 bound parameters, far under SQLite's limit
    one = "(" + ", ".join("?" * len(cols)) + ")"
    tail = upsert[upsert.index(" ON CONFLICT"):]
    head = upsert[: upsert.index(" VALUES ")] + " VALUES "
    written, paused = 0, False
    with conn:  # BEGIN ... COMMIT (ROLLBACK on error)
        if replace_all:
            conn.execute(f"DELETE FROM {_quote_id(table)}")
        for enc in encoded:
            names = sorted(enc.values)
            per_ent = max(1, per_stmt // len(names))
            stmt_full = head + ", ".join([one] * (per_ent * len(names))) + tail
            for idx, params in _sqlite_statements(enc, names, per_ent):
                conn.execute(stmt_full if len(idx) == per_ent else
                             head + ", ".join([one] * (len(idx) * len(names))) + tail, params)
                written += len(idx)
                if not paused and written >= rows // 2:
                    paused = True
                    kill_point("sqlite:mid-transaction")


def _sqlite_statements(enc: _Encoded, names: list[str], per_ent: int):
    """(row indices, bound parameters) of each multi-row upsert of one encoded batch.

    Rows go in (entity_key, feature_name) order (B-tree pages filled in sequence) and many
    rows per INSERT statement (one VDBE run per 200 rows instead of per row): together
    ~1.7x less CPU than executemany of single-row upserts on this box."""
    order = sorted(range(enc.rows), key=enc.entity_keys.__getitem__)
    ek = enc.entity_keys
    # timestamps bound as the values sqlite3 would adapt them to (Feast registers the
    # adapter), once per distinct timestamp: adapting 600k datetimes per row cost ~1.2 s
    ev, ct = _sqlite_adapted(enc.event_ts), _sqlite_adapted(enc.created_ts)
    vals = [enc.values[nm] for nm in names]
    texts = [enc.value_text[nm] for nm in names]
    for lo in range(0, enc.rows, per_ent):
        idx = order[lo: lo + per_ent]
        params = []
        for i in idx:
            e, t, c = ek[i], ev[i], ct[i]
            for j, nm in enumerate(names):
                params += (e, nm, vals[j][i], texts[j][i], t, c)
        yield idx, params


@dataclass
class RedisLayout:
    """Feast's Redis layout of the feature view: one hash per entity, key = entity key +
    project, fields = the event timestamp and one per feature (mmh3 of "<view>:<feature>")."""
    client: Any  # redis.Redis, Feast's client for this store
    project: bytes
    ts_field: bytes
    fields: dict[str, bytes]  # feature name -> hash field


def redis_layout(store) -> RedisLayout:
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name

    config = store.config
    fv = store.get_feature_view(FEATURE_VIEW)
    fv_name = _versioned_fv_name(fv, config)
    return RedisLayout(client=store._get_provider().online_store._get_client(config.online_store),
                       project=config.project.encode(), ts_field=f"_ts:{fv_name}".encode(),
                       fields={f.name: _mmh3(f"{fv_name}:{f.name}") for f in fv.features})


@dataclass
class RedisRows:
    """One encoded batch as Feast's Redis store lays it out (RedisLayout)."""
    layout: RedisLayout
    keys: list[bytes]
    ts_values: list[bytes]  # serialized Timestamp per row
    columns: list[list[bytes]]  # per layout field, the serialized ValueProto per row

    def hset_args(self, i: int) -> list[bytes]:
        args = [self.keys[i], self.layout.ts_field, self.ts_values[i]]
        for field_, col in zip(self.layout.fields.values(), self.columns):
            args += (field_, col[i])
        return args


def redis_rows(layout: RedisLayout, enc: _Encoded) -> RedisRows:
    from google.protobuf.timestamp_pb2 import Timestamp

    def ts_bytes(t: datetime) -> bytes:
        ts = Timestamp()
        ts.FromDatetime(t.replace(tzinfo=timezone.utc))
        return ts.SerializeToString()

    ts_by_value = {t: ts_bytes(t) for t in set(enc.event_ts)}
    return RedisRows(layout=layout, keys=[k + layout.project for k in enc.entity_keys],
                     ts_values=[ts_by_value[t] for t in enc.event_ts],
                     columns=[enc.values[name] for name in layout.fields])


def _resp_bulk(b: bytes) -> bytes:
    """One RESP bulk string (Redis protocol)."""
    return b"$%d\r\n%b\r\n" % (len(b), b)


def _project_entity_keys(cfg: Config, layout: RedisLayout) -> Iterator[bytes]:
    """Every Redis key of this project's tasks (SCAN, streamed). A key is Feast's entity
    key + project name; it is decoded whole, so a key of another project whose name ends
    like this one's is never taken."""
    from feast.infra.key_encoding_utils import deserialize_entity_key

    project, join_keys = layout.project, sorted(cfg.data.task_key)
    pattern = b"*" + b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in project)
    for key in layout.client.scan_iter(match=pattern, count=1000):
        try:
            entity = deserialize_entity_key(key[: len(key) - len(project)], ENTITY_KEY_SERIALIZATION_VERSION)
        except (ValueError, struct.error, UnicodeDecodeError):
            continue
        if list(entity.join_keys) == join_keys and len(entity.entity_values) == len(join_keys):
            yield key


def _write_redis(store, cfg: Config, encoded: Iterable[_Encoded], replace_all: bool = False) -> None:
    """One MULTI/EXEC for the whole day, fed batch by batch (encoded): Redis applies all of
    it or (killed client) none. replace_all (a version switch): the same transaction first
    removes the feature view's fields from every task of the project (their hashes vanish),
    then sets the day's rows.

    The HSETs are packed here as RESP rather than sent through redis-py's
    `pipeline(transaction=True)` (the same MULTI/EXEC, in metaemb.bench_publish), because
    that made the whole publish of a 100k-row day 1.3x-1.6x slower on the 2-core dev box
    (2026-12-04, both in one run each): `metaemb bench publish --rows 100000
    --online-store redis` 2.40 s hand-packed vs 3.09 s redis-py; 8 interleaved repeats of
    the two, median 3.26 s vs 5.29 s (best 2.38 vs 4.40 s). Lookups were identical.
    """
    layout = redis_layout(store)
    head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (1 + len(layout.fields)))
    ts_field, fields = _resp_bulk(layout.ts_field), [_resp_bulk(f) for f in layout.fields.values()]

    def packed(rows: RedisRows, lo: int, hi: int) -> bytes:
        ts_resp = {v: _resp_bulk(v) for v in set(rows.ts_values[lo:hi])}
        out = []
        for i in range(lo, hi):
            out += [head, _resp_bulk(rows.keys[i]), ts_field, ts_resp[rows.ts_values[i]]]
            for field_, col in zip(fields, rows.columns):
                out += (field_, _resp_bulk(col[i]))
        return b"".join(out)

    # MULTI, the day's HSETs streamed in chunks, EXEC -- on one connection. Redis queues
    # the commands and runs them only at EXEC, atomically; if this process dies before
    # EXEC reaches the server, the connection drops and Redis discards the whole queue.
    conn = layout.client.connection_pool.get_connection()
    queued, chunk, paused = 0, 5000, False
    try:
        conn.send_command("MULTI")
        if replace_all:  # SCAN runs on another connection: it sees the store before this transaction
            for key in _project_entity_keys(cfg, layout):
                conn.send_command("HDEL", key, layout.ts_field, *layout.fields.values())
                queued += 1
        for enc in encoded:
            rows = redis_rows(layout, enc)
            for lo in range(0, enc.rows, chunk):
                conn.send_packed_command([packed(rows, lo, min(lo + chunk, enc.rows))], check_health=False)
                if not paused:
                    paused = True
                    kill_point("redis:mid-multi")
            queued += enc.rows
        conn.send_command("EXEC")
        first = conn.read_response()
        if first not in (b"OK", "OK", True):
            raise PublishError(f"redis MULTI failed: {first!r}")
        for _ in range(queued):
            reply = conn.read_response()  # QUEUED (an error here aborts the EXEC)
            if isinstance(reply, Exception):
                raise PublishError(f"redis refused a queued command: {reply}")
        result = conn.read_response()
        if result is None or isinstance(result, Exception):
            raise PublishError(f"redis EXEC failed: {result!r}")
        errors = [r for r in result if isinstance(r, Exception)]
        if errors:
            raise PublishError(f"redis EXEC: {len(errors)} commands failed, first: {errors[0]}")
    except BaseException:
        conn.disconnect()  # never hand a connection with a half-sent MULTI back to the pool
        raise
    finally:
        layout.client.connection_pool.release(conn)


@dataclass
class WriteResult:
    rows: int
    seconds: float
    method: str
    interval: tuple[datetime, datetime]
    phases: dict[str, float] | None = None  # fast path: keys / write / registry seconds


def latest_materialized(store) -> datetime | None:
    """End of the newest interval the registry records for the feature view."""
    fv = store.get_feature_view(FEATURE_VIEW)
    ends = [end for _, end in fv.materialization_intervals]
    return max(ends) if ends else None


def write_partition(cfg: Config, run_date: date, method: str | None = None, store=None,
                    table=None, redis_write: Callable | None = None, replace_all: bool = False) -> WriteResult:
    """Push one run_date partition into the online store; no gate (see publish.publish).
    table: the day's rows (a DayRows, or an Arrow table in memory); None reads them from
    Delta, streamed. redis_write(store, encoded batches) replaces the fast path's Redis writer
    (the publish bench passes redis-py's pipeline to compare). replace_all: in the same
    transaction, remove the online rows of tasks the day lacks (publish sets it at a model
    version switch)."""
    method = method or cfg.feast.publish_method
    if replace_all and method != "fast":
        raise PublishError(f"{run_date}: a model version switch replaces the whole online store in one transaction, "
                           f"which only publish_method = 'fast' does (not {method!r}); publish this date with "
                           "[feast] publish_method = \"fast\"")
    store = store or feature_store(cfg)
    start, end = day_interval(run_date)
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    if method == "materialize":
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress bars
            store.materialize(start_date=start, end_date=end, feature_views=[FEATURE_VIEW])
        rows = getattr(table, "num_rows", -1)  # an Arrow table's; Feast's materialize does not count
    elif method == "fast":
        day = day_rows(cfg, run_date, table)
        rows = check_keys(cfg, day)
        t1 = time.perf_counter()
        phases["keys"] = t1 - t0
        encoded = (encode_partition(cfg, pa.Table.from_batches([batch]))
                   for batch in day.batches(partition_columns(cfg)))
        if cfg.feast.online_store == "sqlite":
            _write_sqlite(store, encoded, rows, replace_all=replace_all)
        elif redis_write is not None and not replace_all:
            redis_write(store, encoded)
        else:
            _write_redis(store, cfg, encoded, replace_all=replace_all)
        t2 = time.perf_counter()
        phases["write"] = t2 - t1  # read, encode and write, streamed batch by batch
        fv = store.get_feature_view(FEATURE_VIEW)
        store.registry.apply_materialization(fv, store.project, start, end, commit=True)
        phases["registry"] = time.perf_counter() - t2
    else:
        raise ValueError(f"unknown publish method {method!r}")
    seconds = time.perf_counter() - t0
    counted = f"{rows} rows" if rows >= 0 else "rows (not counted: Feast's materialize does not report them)"
    log.info("published %s: %s in %.2fs via %s into %s", run_date, counted, seconds, method,
             cfg.feast.online_store)
    return WriteResult(rows=rows, seconds=seconds, method=method, interval=(start, end),
                       phases=phases if method == "fast" else None)


# ------------------------------------------------------------------------- lookups


def lookup(cfg: Config, keys: list[dict], store=None):
    """Online lookup through Feast's get_online_features: one row per key dict (pandas)."""
    store = store or feature_store(cfg)
    rows = [{k: str(v) for k, v in key.items()} for key in keys]
    for row in rows:
        missing = [k for k in cfg.data.task_key if k not in row]
        if missing:
            raise ValueError(f"lookup key {row} lacks task key column(s) {missing}")
    service = store.get_feature_service(FEATURE_SERVICE)
    return store.get_online_features(features=service, entity_rows=rows).to_df()
