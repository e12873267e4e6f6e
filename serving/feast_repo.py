"""metaemb's Feast repo, built from the config: the store, its YAML, apply, the served day, lookups.

* `feature_store(cfg)` builds Feast's RepoConfig in memory from core.config (no YAML read), so
  the CLI, the DAGs and the tests never depend on the working directory. `render_yaml(cfg)`
  writes the same settings as a feature_store.yaml; the committed feature_repo/feature_store.yaml
  is render_yaml(defaults) (a test keeps them equal).
* `apply(cfg)` registers feature_repo/definitions.build(cfg) and creates the online table.
* Which of the two feature views the service names, and so which day readers see: serving/slots.py.
* `lookup(cfg, keys)` reads through `get_online_features` (feature service core.tables.tables.FEATURE_SERVICE).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from core import storage, tables
from core.config import Config
from feature_repo import silence_spark_source_warning
from pipelines.spark import s3_spark_conf

log = logging.getLogger(__name__)

REDIS_PASSWORD_ENV = "METAEMB_REDIS_PASSWORD"

ENTITY_KEY_SERIALIZATION_VERSION = 3

ATOMIC_REGISTRY_STORE = "serving.feast_registry.AtomicFileRegistryStore"


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


def redis_connection_string(cfg: Config, *, password_placeholder: bool = False) -> str:
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
        return {"registry_type": "file", "path": cfg.location(cfg.feast.registry_path).uri,
                "cache_ttl_seconds": cfg.feast.registry_ttl_s}
    return {"registry_type": "file", "path": local_path(cfg.feast.registry_path),
            "registry_store_type": ATOMIC_REGISTRY_STORE, "cache_ttl_seconds": cfg.feast.registry_ttl_s}


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
        online = {"type": "redis", "redis_type": cfg.feast.redis_type,
                  "connection_string": redis_connection_string(cfg, password_placeholder=for_file)}
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
        "# Generated from core.config by serving.feast_repo.render_yaml -- edit the config,\n"
        "# not this file (tests/feast checks the committed copy matches the default config).\n"
        "# Paths are relative to this folder. For another config, write one with\n"
        "#   metaemb --config my.toml feast render --out my_store.yaml\n"
        "# and run: METAEMB_CONFIG=my.toml feast -c feature_repo -f my_store.yaml apply\n"
    )
    return header + yaml.safe_dump(settings, sort_keys=False)


def feature_store(cfg: Config):
    """Feast FeatureStore for this config (programmatic RepoConfig; no YAML read)."""
    from feast import FeatureStore

    silence_spark_source_warning()
    return FeatureStore(repo_path=str(repo_dir(cfg)), config=repo_config(cfg))


def definitions(cfg: Config, served: str = tables.FEATURE_VIEWS[0]) -> dict:
    """feature_repo/definitions.build(cfg, served), loaded from the repo folder of this config."""
    path = repo_dir(cfg) / "definitions.py"
    if not path.is_file():
        # a config file kept outside the project resolves the default "feature_repo" next to
        # itself; the declarations are code shipped with metaemb, so use the packaged ones
        from feature_repo import definitions as packaged

        log.info("no %s: using the packaged feature_repo definitions", path)
        return packaged.build(cfg, served)
    spec = importlib.util.spec_from_file_location("metaemb_feature_repo_definitions", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.build(cfg, served)


def apply(cfg: Config, store=None, served: str | None = None):
    """Register the entities, source, both feature views and the service; create the online
    tables. The service names `served`; None: the view it names already (the first one in a new
    registry)."""
    from serving import slots

    store = store or feature_store(cfg)
    if served is None:
        try:
            served = slots.served_view(store)
        except Exception:  # Feast's *NotFoundException: nothing applied to this registry yet
            served = tables.FEATURE_VIEWS[0]
    objs = definitions(cfg, served)
    store.apply([*objs["entities"], objs["source"], *objs["views"], objs["service"]])
    log.info("feast apply: project %s, feature views %s (served: %s), online store %s",
             cfg.feast.project, ", ".join(tables.FEATURE_VIEWS), served, cfg.feast.online_store)
    return store


def lookup(cfg: Config, keys: list[dict], store=None):
    """Online lookup through Feast's get_online_features: one row per key dict (pandas)."""
    store = store or feature_store(cfg)
    rows = [{k: str(v) for k, v in key.items()} for key in keys]
    for row in rows:
        missing = [k for k in cfg.data.task_key if k not in row]
        if missing:
            raise ValueError(f"lookup key {row} lacks task key column(s) {missing}")
    service = store.get_feature_service(tables.FEATURE_SERVICE)
    return store.get_online_features(features=service, entity_rows=rows).to_df()


def lookup_line(row, keys: list[str], show: int = 6) -> str:
    """One line per looked-up task: key, sample count, model version, the first values."""
    import numpy as np

    emb, n = row.get("embedding"), row.get("n_samples")
    key = ",".join(str(row[k]) for k in keys)
    if emb is None or (isinstance(emb, float) and emb != emb):
        return f"{key}: (none: no embedding published)"
    values = np.asarray(emb)
    shown = "[" + ", ".join(f"{x:+.3f}" for x in values[:show]) + (", ...]" if len(values) > show else "]")
    return f"{key}: n_samples={int(n)} model={row.get('model_version')} embedding({len(values)})={shown}"
