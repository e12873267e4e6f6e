"""Typed configuration, in one place, for the CLI, the DAGs and the tests.

The file format is TOML (`metaemb.toml`). A config file only needs the keys it
changes: everything else takes the defaults below. Unknown keys and out-of-range
values are errors that name the key, because a typo in a daily job's config must
not silently fall back to a default.

Resolution order: `--config PATH` > `$METAEMB_CONFIG` > `./metaemb.toml` > defaults.
Relative paths in the file are relative to the file's own folder, except the paths that
belong to the installation (INSTALL_PATHS: the jar folder, the GPU discovery script, the
Feast repo): those resolve from the project folder, so a config kept elsewhere
(`/etc/metaemb/prod.toml`) still finds them.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from core import storage
from core.storage import Location

CONFIG_ENV = "METAEMB_CONFIG"
DEFAULT_CONFIG_NAME = "metaemb.toml"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Shipped with the code, not with the data: a relative value means "in the project folder".
INSTALL_PATHS = (("spark", "jars_dir"), ("spark", "gpu_discovery_script"), ("feast", "repo_path"))


class ConfigError(ValueError):
    """A config file that cannot be used: names the key and the problem."""


@dataclass
class DataConfig:
    # Inputs: Parquet, CSV or Delta (a folder with _delta_log). Empty = not given.
    interactions: str = "var/data/demo/interactions.parquet"
    entity_features: str = "var/data/demo/entity_features.parquet"
    item_features: str = ""
    # The column(s) that define a task: ["user_id"], ["user_id", "notif_type"] ...
    task_key: list[str] = field(default_factory=lambda: ["user_id"])
    # Numeric columns of the interactions fed to the global block. Empty = every
    # numeric column that is not a key, item_id, event_timestamp or label.
    context_columns: list[str] = field(default_factory=list)
    # Entity feature columns fed to the meta block. Empty = every numeric column
    # of the entity feature table that is not a key or feature_timestamp.
    meta_feature_columns: list[str] = field(default_factory=list)
    # A feature snapshot older than this (relative to the event) is not used,
    # like Feast's ttl: it bounds the point-in-time join's state.
    feature_ttl_days: int = 30


@dataclass
class PipelineConfig:
    storage_root: str = "var/lake"
    window_days: int = 30  # X: days of history per run date
    cap_samples: int = 64  # N: most recent samples kept per task
    support_fraction: float = 0.75  # first 75% chronological -> support
    task_buckets: int = 8  # partitions the fine-tune fans out over
    finetune_batch_tasks: int = 1024  # tasks per vectorized fine-tune call
    quarantine: bool = True  # row-level faults go to a quarantine table


@dataclass
class ModelConfig:
    meta_block: str = "mlp"  # "mlp" over meta features, or "id" (hashed task-id embedding)
    meta_hidden: int = 128
    embedding_dim: int = 32
    global_hidden: list[int] = field(default_factory=lambda: [256, 128])
    item_buckets: int = 4096  # hashed item-id embedding rows in the global block (0 = none)
    item_dim: int = 16
    id_buckets: int = 65536  # rows of the task-id embedding when meta_block = "id"
    checkpoint_dir: str = "var/models"


@dataclass
class TrainConfig:
    mode: str = "limaml"  # limaml | maml | vanilla
    # n and alpha: the steps and lr a served embedding is fine-tuned with (3 at 0.3, what validation
    # chose on MovieLens-100k), so meta-training sees the steps serving takes (docs/evaluation.md)
    inner_steps: int = 3  # n
    task_lr: float = 0.3  # alpha
    meta_lr: float = 1e-3  # beta, for 128 tasks per batch (scaled linearly)
    tasks_per_batch: int = 128
    epochs: int = 3
    warmup_steps: int = 20
    grad_clip: float = 1.0
    first_order: bool = False
    # Meta-SGD (Li et al. 2017): the inner loop's step size is learned per meta-block parameter
    # (task_lr times a multiplier per element, meta-learned with the outer step, stored in the
    # checkpoint); the fine-tune then steps by [finetune] lr times those multipliers. limaml only.
    meta_sgd: bool = True  # limaml only: maml and vanilla train without it
    meta_sgd_lr: float = 0.05  # outer (Adam) lr of the log-multipliers, for 128 tasks per batch
    seed: int = 0
    # Checkpoint file or folder to start from, e.g. LiMAML warm-started from a vanilla model.
    warm_start: str = ""


@dataclass
class FinetuneConfig:
    # k and the lr of the daily fine-tune. Left out (the default): what training chose on its
    # validation tasks per support-size bucket, stored in the checkpoint (`metaemb status` shows
    # it). Set: that value for every task, whatever the checkpoint chose.
    steps: int | None = None  # k
    lr: float | None = None  # alpha at generation time
    pooling: str = "latest"  # latest | mean | max | cosine
    device: str = "auto"  # auto | cpu | cuda
    min_samples: int = 0  # tasks with fewer samples keep the meta-trained embedding (k = 0)


@dataclass
class FeastConfig:
    repo_path: str = "feature_repo"
    project: str = "metaemb"
    online_store: str = "sqlite"  # sqlite | redis
    sqlite_path: str = "var/feast/online_store.db"
    registry_path: str = "var/feast/registry.db"
    # host:port; a password comes from $METAEMB_REDIS_PASSWORD, never from this file.
    redis_connection: str = "127.0.0.1:6379"
    publish_method: str = "fast"  # fast | materialize (Feast's stock path)
    # Feast compute engine behind the stock `materialize` path: local | spark (spark.engine).
    batch_engine: str = "local"
    ttl_days: int = 7  # FeatureView ttl: an embedding older than this is not served
    # Rows that publish, its gate and check hold at once: they stream a day through in
    # batches of this size, so their memory does not grow with the number of tasks.
    batch_rows: int = 65_536
    redis_type: str = "redis"  # redis | redis_cluster (redis_connection: host:port,host:port,...)
    # Where the day's rows are written into the online store from: the driver (one process,
    # no JVM) or the Spark executors (each task its own connection; Redis only).
    write_from: str = "driver"  # driver | spark
    # Rows per write to the online store: the day goes into the namespace no reader looks at in
    # batches of this size (Redis: one pipeline each, no transaction), then one registry write
    # switches the readers to it.
    write_batch_rows: int = 10_000
    # How long readers' cached registries may still name the namespace served before a switch
    # (FeatureStore cache_ttl_seconds, `metaemb serve --registry-ttl`); 0 = never expire.
    registry_ttl_s: int = 5
    # Seconds after the switch before the retired namespace is removed: longer than every
    # reader's registry_ttl_s, so no reader still resolves the retired namespace.
    switch_grace_s: float = 12.0


@dataclass
class SparkConfig:
    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    task_cpus: int = 1
    jars_dir: str = ".jars"
    # Extra JVM options of the driver (local mode: the whole job). "-XX:TieredStopAtLevel=1"
    # (no C2 JIT) halves a small day's stage on 2 cores: a short-lived JVM spends its CPU in
    # C2 compilation. Leave it empty for big days, whose long stages gain from C2.
    driver_java_options: str = ""
    # GPU executors (cluster only): amount per executor / task, discovery script.
    executor_gpus: int = 0
    task_gpus: float = 0.0
    gpu_discovery_script: str = "scripts/gpu_discovery.sh"


@dataclass
class S3Config:
    # Used when a location is s3://bucket/prefix (storage_root, checkpoint_dir, inputs, Feast's
    # registry). Credentials are never read from here: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    # or the SDK's usual chain, from the environment.
    endpoint_url: str = ""  # "" = $AWS_ENDPOINT_URL, else AWS itself; e.g. http://minio:9000
    region: str = ""  # "" = $AWS_REGION / $AWS_DEFAULT_REGION, else us-east-1
    path_style: bool = False  # true for MinIO and most S3-compatible stores
    # Fail in seconds, not minutes of SDK retries, when the endpoint is down or refuses us.
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 8.0  # idle socket time: an endpoint that stops answering fails after this
    # Whole-request limit for the client that has no idle timeout (delta-rs); a silent endpoint is
    # caught sooner by the check every run starts with (listing storage_root).
    transfer_timeout_s: float = 120.0
    max_attempts: int = 2


@dataclass
class GateConfig:
    # Publish gate: a day that fails any bound is not published.
    min_row_ratio: float = 0.5  # rows today / rows of the previous published day
    max_row_ratio: float = 2.0
    max_mean_norm: float = 1e3
    min_mean_norm: float = 1e-6  # an all-zero day is as wrong as an exploding one
    max_mean_drift: float = 0.5  # 1 - mean cosine(today, previous day) over common keys


@dataclass
class AirflowConfig:
    home: str = "var/airflow"
    start_date: str = "2026-01-01"
    spark_conn_id: str = "metaemb_spark"
    # Added for the DAGs (dags/, metaemb/airflow_env.py):
    daily_schedule: str = "@daily"  # cron or preset; the run is keyed on its logical date ({{ ds }})
    retrain_schedule: str = "@weekly"  # "" = manual trigger only
    catchup: bool = False
    end_date: str = ""  # YYYY-MM-DD: no scheduled runs after it ("" = none); backfills before it work
    retries: int = 2  # per task, before the run fails
    retry_delay_minutes: float = 5.0  # first retry delay; doubles up to 1 h
    execution_timeout_minutes: float = 240.0  # a stuck spark-submit is killed after this
    # Airflow pool (1 slot) shared by both DAGs so no two jobs write the Delta tables at once;
    # `scripts/airflow.sh init` creates it. "" = Airflow's default_pool.
    pool: str = "metaemb_lake"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    feast: FeastConfig = field(default_factory=FeastConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    s3: S3Config = field(default_factory=S3Config)
    airflow: AirflowConfig = field(default_factory=AirflowConfig)
    # Folder the relative paths above resolve against (not a TOML key).
    base_dir: str = field(default=str(PROJECT_ROOT), repr=False)
    source: str = field(default="<defaults>", repr=False)

    def path(self, value: str) -> Path:
        """Resolve a configured path against the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def location(self, value: str) -> Location:
        """A configured data location: s3://bucket/prefix as is, a local path resolved like path()."""
        if storage.is_s3(value):
            return Location(storage.normalize_s3(value), storage.S3Settings.resolve(self.s3))
        return Location.local(self.path(value))

    def table_location(self, name: str) -> Location:
        """Location of one of the pipeline's Delta tables, always under storage_root."""
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(f"table {name!r} would be written outside storage_root {self.pipeline.storage_root}")
        return self.location(self.pipeline.storage_root) / name

    @property
    def file(self) -> str | None:
        """Absolute path of the config file this was read from (None: built-in defaults or a dict),
        for handing the same config to another process (METAEMB_CONFIG, --config)."""
        p = Path(self.source)
        return str(p.resolve()) if p.is_file() else None

    def uses_s3(self) -> bool:
        """Does any configured location live on S3 (so Spark needs the S3A connector)?"""
        return any(storage.is_s3(v) for v in (self.pipeline.storage_root, self.model.checkpoint_dir,
                                               self.data.interactions, self.data.entity_features,
                                               self.feast.registry_path))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        d.pop("source")
        return d


_CHOICES = {
    ("model", "meta_block"): {"mlp", "id"},
    ("train", "mode"): {"limaml", "maml", "vanilla"},
    ("finetune", "pooling"): {"latest", "mean", "max", "cosine"},
    ("finetune", "device"): {"auto", "cpu", "cuda"},
    ("feast", "online_store"): {"sqlite", "redis"},
    ("feast", "publish_method"): {"fast", "materialize"},
    ("feast", "batch_engine"): {"local", "spark"},
    ("feast", "redis_type"): {"redis", "redis_cluster"},
    ("feast", "write_from"): {"driver", "spark"},
}

_POSITIVE = {
    ("pipeline", "window_days"), ("pipeline", "cap_samples"), ("pipeline", "task_buckets"),
    ("pipeline", "finetune_batch_tasks"), ("model", "meta_hidden"), ("model", "embedding_dim"),
    ("model", "id_buckets"), ("train", "tasks_per_batch"), ("train", "task_lr"),
    ("train", "meta_lr"), ("train", "grad_clip"), ("train", "meta_sgd_lr"), ("finetune", "lr"),
    ("spark", "shuffle_partitions"), ("spark", "task_cpus"), ("s3", "connect_timeout_s"),
    ("s3", "request_timeout_s"), ("s3", "transfer_timeout_s"), ("s3", "max_attempts"), ("data", "feature_ttl_days"),
    ("feast", "ttl_days"), ("feast", "batch_rows"), ("feast", "write_batch_rows"), ("airflow", "retry_delay_minutes"), ("airflow", "execution_timeout_minutes"),
}
_NON_NEGATIVE = {
    ("model", "item_buckets"), ("model", "item_dim"), ("train", "inner_steps"),
    ("train", "epochs"), ("train", "warmup_steps"), ("finetune", "steps"), ("finetune", "min_samples"),
    ("spark", "executor_gpus"), ("spark", "task_gpus"), ("airflow", "retries"),
    ("feast", "registry_ttl_s"), ("feast", "switch_grace_s"),
}


def _coerce(section: str, key: str, value: Any, annotation: Any, origin_file: str) -> Any:
    where = f"{origin_file}: [{section}] {key}"
    optional = [a for a in get_args(annotation) if a is not type(None)] if type(None) in get_args(annotation) else []
    if optional:  # `T | None`: TOML has no null (None comes from to_dict's round trip)
        if value is None:
            return None
        annotation = optional[0]
    if get_origin(annotation) is list:
        (item_type,) = get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list of {item_type.__name__}, got {value!r}")
        return [_coerce(section, key, v, item_type, origin_file) for v in value]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, annotation) or isinstance(value, bool) and annotation is not bool:
        raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}")
    return value


def _validate(cfg: Config) -> None:
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{cfg.source}: [{section}] {key} = {value!r}; expected one of {sorted(allowed)}")
    for section, key in _POSITIVE:
        value = getattr(getattr(cfg, section), key)
        if value is not None and not value > 0:
            raise ConfigError(f"{cfg.source}: [{section}] {key} = {value!r}; must be > 0")
    for section, key in _NON_NEGATIVE:
        value = getattr(getattr(cfg, section), key)
        if value is not None and value < 0:
            raise ConfigError(f"{cfg.source}: [{section}] {key} = {value!r}; must be >= 0")
    if not 0.0 < cfg.pipeline.support_fraction < 1.0:
        raise ConfigError(f"{cfg.source}: [pipeline] support_fraction must be in (0, 1)")
    if not cfg.data.task_key:
        raise ConfigError(f"{cfg.source}: [data] task_key must name at least one column")
    if not 0.0 <= cfg.gate.min_mean_norm <= cfg.gate.max_mean_norm:
        raise ConfigError(f"{cfg.source}: [gate] min_mean_norm must be in [0, max_mean_norm]")
    if not cfg.gate.min_row_ratio <= cfg.gate.max_row_ratio:
        raise ConfigError(f"{cfg.source}: [gate] min_row_ratio must be <= max_row_ratio")
    f = cfg.feast
    if f.write_from == "spark" and f.online_store != "redis":
        raise ConfigError(f"{cfg.source}: [feast] write_from = \"spark\" needs online_store = \"redis\" (the Spark "
                          f"executors write over the network; SQLite is one local file): set write_from = \"driver\"")
    if f.registry_ttl_s and f.switch_grace_s <= f.registry_ttl_s:
        raise ConfigError(f"{cfg.source}: [feast] switch_grace_s = {f.switch_grace_s:g} must be longer than "
                          f"registry_ttl_s = {f.registry_ttl_s}: a reader's cached registry may name the retired "
                          "namespace for that long")


def from_dict(raw: dict[str, Any], *, source: str = "<dict>", base_dir: str | Path | None = None) -> Config:
    """Build a Config from nested dicts (a parsed TOML file), rejecting unknown keys."""
    cfg = Config(source=source, base_dir=str(base_dir or PROJECT_ROOT))
    sections = {f.name: f for f in dataclasses.fields(Config) if f.name not in ("base_dir", "source")}
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(f"{source}: unknown section [{section}]; known: {sorted(sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        target = getattr(cfg, section)
        hints = get_type_hints(type(target))
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(f"{source}: unknown key [{section}] {key}; known: {sorted(hints)}")
            setattr(target, key, _coerce(section, key, value, hints[key], source))
    _anchor_install_paths(cfg)
    _validate(cfg)
    return cfg


def _anchor_install_paths(cfg: Config) -> None:
    """Make INSTALL_PATHS absolute against the project, whatever folder the config file is in."""
    for section, key in INSTALL_PATHS:
        target = getattr(cfg, section)
        value = Path(getattr(target, key)).expanduser()
        setattr(target, key, str(value if value.is_absolute() else PROJECT_ROOT / value))


def write(cfg: Config, path: str | Path) -> Path:
    """The config as a TOML file for `metaemb --config PATH` (relative paths then resolve against
    PATH's folder: give absolute ones when writing elsewhere). A key that is None is left out."""
    import tomli_w

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = {section: {k: v for k, v in values.items() if v is not None} for section, values in cfg.to_dict().items()}
    path.write_text(tomli_w.dumps(raw))
    return path


def shown(path) -> str:
    """A path or URI as messages print it: relative to the project when it lies inside it (what a
    user sees is then the same on every machine), else as it is (s3://..., other folders)."""
    text = str(path)
    if "://" in text:
        return text
    p = Path(text)
    try:
        return str(p.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return text


def load(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Load the config: explicit path, else $METAEMB_CONFIG, else ./metaemb.toml, else defaults."""
    chosen = path or os.environ.get(CONFIG_ENV)
    if not chosen and Path(DEFAULT_CONFIG_NAME).exists():
        chosen = DEFAULT_CONFIG_NAME
    raw: dict[str, Any] = {}
    base_dir: Path = PROJECT_ROOT
    source = "<defaults>"
    if chosen:
        p = Path(chosen).expanduser().resolve()
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from e
        base_dir, source = p.parent, str(p)
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    return from_dict(raw, source=source, base_dir=base_dir)
