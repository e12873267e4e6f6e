"""docker-compose.yml, checked statically (no Docker engine here): YAML, services, keys,
consistency with the config keys and with what the tests run."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from project_helpers import PROJECT_ROOT
from core import config as config_mod

pytestmark = pytest.mark.unit

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
SERVICES = {"postgres", "redis", "spark-master", "spark-worker", "airflow-init", "airflow-api-server",
            "airflow-scheduler", "airflow-dag-processor", "feature-server", "minio", "minio-init"}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return env


def test_compose_services_and_keys():
    doc = _compose()
    services = doc["services"]
    assert SERVICES <= set(services), SERVICES - set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        assert "command" in svc or svc.get("image", "").startswith(("postgres", "redis")), name
    # Postgres metadata, from the environment (never a literal password).
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor"):
        env = _env(services[name])
        url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert url.startswith("postgresql+psycopg2://airflow:${AIRFLOW_DB_PASSWORD"), url
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${")
        assert env["METAEMB_CONFIG"] == "/opt/metaemb/deploy/metaemb.cluster.toml"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "api-server" in services["airflow-api-server"]["command"]
    assert "scheduler" in services["airflow-scheduler"]["command"]
    assert "dag-processor" in services["airflow-dag-processor"]["command"]
    # Spark standalone from the same pyspark distribution as the drivers.
    assert "org.apache.spark.deploy.master.Master" in services["spark-master"]["command"]
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]
    assert services["redis"]["image"].startswith("redis:")
    assert services["feature-server"]["command"][:2] == [".venv/bin/metaemb", "serve"]
    assert "metaemb-data" not in doc["volumes"]  # the lake is on MinIO, not a shared volume
    # No secret literal anywhere in the file.
    assert not re.search(r"(?i)password\s*[:=]\s*(?!\$\{)\S+", COMPOSE.read_text().replace("_PASSWORD", ""))


def test_compose_config_file_loads_and_matches():
    doc = _compose()
    services = doc["services"]
    mounted = [v for v in services["airflow-scheduler"]["volumes"] if "metaemb.cluster.toml" in v]
    assert mounted, services["airflow-scheduler"]["volumes"]
    host_path = mounted[0].split(":")[0]
    cfg = config_mod.load(PROJECT_ROOT / host_path)  # unknown keys / bad values fail here
    assert cfg.spark.master == "spark://spark-master:7077"
    assert cfg.feast.online_store == "redis"
    assert cfg.feast.redis_connection.split(":")[0] in services
    assert cfg.spark.master.removeprefix("spark://").split(":")[0] in services
    conn = _env(services["airflow-scheduler"])["AIRFLOW_CONN_" + cfg.airflow.spark_conn_id.upper()]
    assert cfg.spark.master in conn
    assert cfg.airflow.home == _env(services["airflow-scheduler"])["AIRFLOW_HOME"]
    # Every location on MinIO, in the bucket minio-init creates; credentials from the environment.
    bucket = cfg.pipeline.storage_root.removeprefix("s3://").split("/")[0]
    for value in (cfg.pipeline.storage_root, cfg.model.checkpoint_dir, cfg.data.interactions,
                  cfg.data.entity_features, cfg.feast.registry_path):
        assert value.startswith(f"s3://{bucket}/"), value
    assert f"local/{bucket}" in services["minio-init"]["command"][0]
    assert cfg.s3.endpoint_url.removeprefix("http://").split(":")[0] in services and cfg.s3.path_style
    for name in ("airflow-scheduler", "spark-worker", "feature-server"):
        env = _env(services[name])
        assert env["AWS_ACCESS_KEY_ID"].startswith("${") and env["AWS_SECRET_ACCESS_KEY"].startswith("${")
        assert not any("/data" in v for v in services[name].get("volumes", [])), name


def test_dockerfile_matches_stack():
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "openjdk-17" in text
    assert "scripts/setup.sh" in text
    pins = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert '"pyspark==4.2.0"' in pins  # the Spark the compose's master/worker run (spark-class of pyspark)


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")  # Debian's docker-compose package (validates offline)
    return [legacy] if legacy else None


def test_docker_compose_config_validates():
    """`docker compose config -q` checks the file against the Compose schema without an engine."""
    cli = _compose_cli()
    if cli is None:
        import pytest

        pytest.skip("neither `docker compose` nor docker-compose is installed (the static checks above ran)")
    base = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": "/tmp"}
    ok = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                        env={**base, "AIRFLOW_DB_PASSWORD": "x", "AIRFLOW_JWT_SECRET": "y", "MINIO_ROOT_USER": "u",
                             "MINIO_ROOT_PASSWORD": "p"}, cwd=str(PROJECT_ROOT))
    assert ok.returncode == 0, ok.stderr
    # Secrets are required from the environment: without them the file does not resolve.
    missing = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                             env=base, cwd=str(PROJECT_ROOT))
    assert missing.returncode != 0 and "AIRFLOW_DB_PASSWORD" in missing.stderr + missing.stdout
