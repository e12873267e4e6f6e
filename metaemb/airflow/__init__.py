"""Airflow for metaemb: the environment its processes run in (env), `airflow standalone` on
loopback (services), the REST API client (api), backfills (backfill), `airflow dags test`
(dags_test), and the task factories the DAG files in dags/ are built from (tasks)."""
