# The metaemb project image: Python 3.11 + Java 17 (Spark 4.2 via pyspark) + the locked venv
# + Delta's jars, all installed by scripts/setup.sh (the same set-up as a fresh clone).
# Used by docker-compose.yml for the Airflow services, the Spark master and the worker.
# bookworm: Debian 12 still ships OpenJDK 17 (trixie has 21 only).
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/metaemb
# Dependencies first (cached layer), then the code.
COPY pyproject.toml uv.lock README.md* ./
COPY scripts/setup.sh scripts/setup.sh
COPY core core
COPY models models
COPY pipelines pipelines
COPY feature_repo feature_repo
COPY serving serving
COPY metaemb metaemb
COPY dags dags
COPY scripts scripts
COPY deploy deploy
# METAEMB_S3_JARS=1: the cluster config keeps everything on MinIO (S3A connector jars).
RUN METAEMB_S3_JARS=1 scripts/setup.sh && rm -rf /root/.cache
ENV PATH=/opt/metaemb/.venv/bin:$PATH \
    METAEMB_CONFIG=/opt/metaemb/deploy/metaemb.cluster.toml
