#!/usr/bin/env bash
# Airflow for metaemb on this machine (SQLite metadata under [airflow] home by default).
#   scripts/airflow.sh [--config PATH] init | dags-test DATE [DAG] | start | stop | status
#   scripts/airflow.sh [--config PATH] backfill FROM TO      # airflow backfill create ..., waits
#   scripts/airflow.sh [--config PATH] ARGS...               # any airflow command, same env
#   eval "$(scripts/airflow.sh env)"                         # the env in your shell
# = `metaemb airflow ...`; `metaemb airflow --help` says what each does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${METAEMB_PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"
exec "$PY" -m metaemb airflow "$@"
