"""The bottom layer: the typed config (config) and the Delta table and column names (tables)
that pipelines, feature_repo and serving share. Imports nothing of the project."""
