# The two commands a new user needs:  make demo   and   make test
# Everything else here is what those two call.
SHELL := /bin/bash
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench services-install clean

setup:                ## venv from uv.lock, Delta jars, MovieLens-100k (idempotent)
	bash scripts/setup.sh

demo: setup           ## generate data, train, run 3 daily dates, publish to Feast, print lookups
	$(VENV)/metaemb demo

test: services-install  ## the whole suite: real Spark, Delta, Feast, Airflow, Redis, Postgres, S3 (moto)
	METAEMB_S3_JARS=1 bash scripts/setup.sh
	$(VENV)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

test-fast: setup      ## the tests that need no JVM and no server (pytest -m unit), a few minutes
	$(VENV)/python -m pytest -q -m unit --durations=10 $(PYTEST_ARGS)

services-install:     ## Debian packages the service tests start on loopback (redis, postgres)
	bash scripts/install-services.sh

bench: setup          ## benchmarks (not part of the tests)
	$(VENV)/metaemb bench finetune
	$(VENV)/metaemb bench pipeline --tasks 100000

clean:                ## remove generated state (keeps .venv and jars)
	rm -rf var/lake var/models var/feast var/airflow var/data/demo
