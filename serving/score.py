"""Score rows the way the online model would: each task's embedding and model_version read
through Feast (the online store `lookup` reads), the global block from the serving artifact of
that version (ONNX Runtime), one probability per row.

Protocol (docs/design.md, "Serving artifact and score"):
1. the input has the task key column(s) and item_id; nulls refused;
2. one Feast lookup for the distinct tasks;
3. the model version: the caller's artifact or pinned version, else the one version the online
   rows carry (several: refused), else (no task online) the LATEST checkpoint's;
4. an online row of another version than that: refused, naming both (its embedding would be
   fed to a global block trained with another meta block);
5. a task with no online row gets the artifact's default embedding (or, unknown_tasks="error",
   the call is refused);
6. context columns in the artifact's order, finite; item ids hashed as Spark hashed them.
Nothing is written anywhere: a refused call has no effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from core import storage, tables
from core.artifact_contract import ArtifactError
from core.config import Config
from serving import onnx_runtime
from serving import feast_repo

UNKNOWN_TASKS = ("default", "error")


class ScoreError(ValueError):
    """The rows cannot be scored as asked; the message names the column / version / store."""


class OnlineStoreError(RuntimeError):
    """The online store could not be read."""


@dataclass
class Scores:
    frame: object  # pandas: the task key(s), item_id, probability, embedding ("online" | "default")
    model_version: str
    tasks_online: int
    tasks_default: int


def read_input(cfg: Config, path: str | Path) -> pa.Table:
    """A score input (Parquet, CSV or Delta, as the data contract reads them): a local path,
    relative to the working directory, or s3://bucket/key (config [s3])."""
    from pipelines import contract

    where = cfg.location(str(path)) if storage.is_s3(str(path)) else storage.Location.local(path)
    if not where.exists():  # an unreachable endpoint raises StorageError here, naming the URI
        raise ScoreError(f"score input not found: {where}")
    try:
        schema = contract.file_schema(where)
        return contract.read_table(where, schema.names)
    except storage.StorageError:
        raise
    except Exception as e:
        raise ScoreError(f"{where}: unreadable as {contract.input_format(where)} ({type(e).__name__}: {e})") from e


def score(cfg: Config, rows, *, model_version: str | None = None, artifact: onnx_runtime.ServingArtifact | None = None,
          unknown_tasks: str = "default", store=None, source: str = "score input") -> Scores:
    """Probabilities for `rows` (a pyarrow Table, a pandas DataFrame, or a file path)."""
    if unknown_tasks not in UNKNOWN_TASKS:
        raise ValueError(f"unknown_tasks must be one of {UNKNOWN_TASKS}, got {unknown_tasks!r}")
    if isinstance(rows, (str, Path)):
        source, rows = str(rows), read_input(cfg, rows)
    table = rows if isinstance(rows, pa.Table) else _from_pandas(rows, source)
    keys = list(cfg.data.task_key)
    _require_columns(table, keys + [tables.ITEM_ID], source)
    key_values = _task_keys(table, keys, source)
    online = _online_rows(cfg, keys, sorted(set(key_values)), store)
    version = _model_version(cfg, online, model_version, artifact)
    artifact = artifact or onnx_runtime.load_for_version(cfg, version)
    _check_versions(online, version, artifact.source, pinned=model_version is not None)
    _require_columns(table, artifact.context_columns, source, what=f"context column of model {version}")
    embeddings, from_online = _embeddings(artifact, online, key_values, unknown_tasks, keys)
    context = _context(table, artifact.context_columns, source)
    try:
        buckets = artifact.item_buckets_of(table.column(tables.ITEM_ID).to_pylist())
    except ValueError as e:  # an item_id of a type the pipeline never hashed
        raise ScoreError(f"{source}: column '{tables.ITEM_ID}': {e}") from e
    probability = artifact.run(context, buckets, embeddings)
    frame = table.select(keys + [tables.ITEM_ID]).to_pandas()
    frame["probability"] = probability
    frame["embedding"] = np.where(from_online, "online", "default")
    tasks_online = len({k for k, ok in zip(key_values, from_online) if ok})
    return Scores(frame=frame, model_version=version, tasks_online=tasks_online,
                  tasks_default=len(set(key_values)) - tasks_online)


def _from_pandas(frame, source: str) -> pa.Table:
    columns = {}
    for name in frame.columns:
        try:
            columns[str(name)] = pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ScoreError(f"{source}: column '{name}' mixes types ({e}); give each column one type") from e
    return pa.table(columns)


def _require_columns(table: pa.Table, columns: list[str], source: str, what: str = "column") -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ScoreError(f"{source}: {what} {', '.join(repr(c) for c in missing)} missing; "
                         f"columns present: {', '.join(table.column_names)}")


def _task_keys(table: pa.Table, keys: list[str], source: str) -> list[tuple[str, ...]]:
    """Each row's task key as the strings meta_embeddings holds (Spark casts keys to string)."""
    columns = []
    for k in keys:
        col = table.column(k)
        if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise ScoreError(f"{source}: column '{k}' (task key) has type {col.type}; task keys are integers or strings")
        values = col.cast(pa.string()).to_pylist()
        bad = [i for i, v in enumerate(values) if v is None or v == ""]
        if bad:
            raise ScoreError(f"{source}: column '{k}' (task key) is empty in {len(bad)} row(s) (first rows: "
                             f"{', '.join(map(str, bad[:5]))}); every row needs its task key")
        columns.append(values)
    return list(zip(*columns))


def describe_store(cfg: Config) -> str:
    if cfg.feast.online_store == "sqlite":
        return f"sqlite online store {cfg.path(cfg.feast.sqlite_path)} (registry {cfg.path(cfg.feast.registry_path)})"
    host = cfg.feast.redis_connection.split(",")[0]  # no password in messages
    return f"redis online store {host} (registry {cfg.path(cfg.feast.registry_path)})"


def _online_rows(cfg: Config, keys: list[str], task_keys: list[tuple], store) -> dict[tuple, tuple]:
    """task key -> (embedding, model_version) for the tasks the online store has."""
    if cfg.feast.online_store == "sqlite" and store is None and not cfg.path(cfg.feast.sqlite_path).is_file():
        # Feast would create an empty database and answer "no embedding" for every task
        raise OnlineStoreError(f"{describe_store(cfg)}: the database file does not exist; run `metaemb apply` "
                               "and publish a day first, or check [feast] sqlite_path")
    try:
        df = feast_repo.lookup(cfg, [dict(zip(keys, k)) for k in task_keys], store=store)
    except Exception as e:
        raise OnlineStoreError(f"{describe_store(cfg)} could not be read: {type(e).__name__}: {e}") from e
    out = {}
    for row in df.itertuples(index=False):
        rec = row._asdict()
        emb, version = rec.get(tables.EMBEDDING), rec.get(tables.MODEL_VERSION)
        if emb is not None and not (isinstance(emb, float) and emb != emb):
            out[tuple(str(rec[k]) for k in keys)] = (np.asarray(emb, dtype=np.float32), version)
    return out


def _model_version(cfg: Config, online: dict, pinned: str | None, held) -> str:
    if held is not None:
        if pinned is not None and pinned != held.model_version:
            raise ScoreError(f"model version {pinned} was asked for, but the artifact given ({held.source}) "
                             f"is model version {held.model_version}")
        return held.model_version
    if pinned is not None:
        return pinned
    versions = sorted({v for _, v in online.values()})
    if len(versions) > 1:
        raise ScoreError(f"the online store serves several model versions for these tasks ({', '.join(versions)}); "
                         "pick one with --model-version")
    if versions:
        return versions[0]
    return _latest_version(cfg)


def _latest_version(cfg: Config) -> str:
    latest = cfg.location(cfg.model.checkpoint_dir) / "LATEST"
    if not latest.is_file():
        raise ArtifactError(f"no task of the input is online and {latest} does not exist: pass --model-version")
    return latest.read_text().strip()


def _check_versions(online: dict, version: str, artifact_source: str, pinned: bool) -> None:
    other = {k: v for k, (_, v) in online.items() if v != version}
    if other:
        first = sorted(other.items())[:5]
        shown = ", ".join(f"{','.join(k)} ({v})" for k, v in first)
        why = "pinned by --model-version" if pinned else "the artifact given"
        raise ScoreError(f"model version mismatch: the online store holds embeddings of model version "
                         f"{sorted(set(other.values()))[0]} for {len(other)} task(s) (first: {shown}), but the artifact "
                         f"is model version {version} ({why}, {artifact_source}); score with --model-version "
                         f"{sorted(set(other.values()))[0]}, or publish embeddings of {version} first")


def _embeddings(artifact, online: dict, key_values: list[tuple], unknown_tasks: str, keys: list[str]):
    dim = artifact.embedding_dim
    for k, (emb, version) in online.items():
        if emb.shape != (dim,):
            raise ArtifactError(f"{artifact.source}: model {artifact.model_version} takes {dim}-long embeddings, "
                                f"but the online store holds {emb.shape[0]} values for task {','.join(k)} "
                                f"(model version {version}): an artifact of another shape")
    from_online = np.array([k in online for k in key_values], dtype=bool)
    if unknown_tasks == "error" and not from_online.all():
        missing = sorted({k for k, ok in zip(key_values, from_online) if not ok})
        raise ScoreError(f"{len(missing)} task(s) have no embedding online ({keys}: "
                         f"{', '.join(','.join(k) for k in missing[:5])}{' ...' if len(missing) > 5 else ''})")
    default = artifact.default_embedding
    return np.stack([online[k][0] if ok else default for k, ok in zip(key_values, from_online)]) \
        if key_values else np.zeros((0, dim), np.float32), from_online


def _context(table: pa.Table, columns: list[str], source: str) -> np.ndarray:
    """[N, len(columns)] float32 in the artifact's column order; finite (the training data was)."""
    out = np.zeros((table.num_rows, len(columns)), dtype=np.float32)
    for j, c in enumerate(columns):
        col = table.column(c)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
                or pa.types.is_decimal(col.type)):
            raise ScoreError(f"{source}: context column '{c}' has type {col.type}; it must be numeric")
        values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ScoreError(f"{source}: context column '{c}' is null, NaN or inf in {bad.size} row(s) "
                             f"(first rows: {', '.join(map(str, bad[:5]))})")
        out[:, j] = values
    return out
