"""Names of the Delta tables, their columns and the Feast objects over them (all tables live
under config storage_root). Every module that names a table, a column or a Feast object
imports it from here."""

# Inputs the user brings (README "Input schema"); task key columns come from [data] task_key.
ITEM_ID = "item_id"
EVENT_TIMESTAMP = "event_timestamp"  # interactions: the event's UTC instant; meta_embeddings: valid from
LABEL = "label"
FEATURE_TIMESTAMP = "feature_timestamp"  # entity features: when the snapshot was taken

# The pipeline's Delta tables.
LABELED_INTERACTIONS = "labeled_interactions"  # partitioned by event_date
TASK_SAMPLES = "task_samples"  # partitioned by run_date
META_EMBEDDINGS = "meta_embeddings"  # partitioned by run_date; Feast's batch source
QUARANTINE = "quarantine"  # row-level input faults, partitioned by run_date
PUBLISH_LOG = "publish_log"  # one row per publish attempt (gate figures, row counts, status)
STAGE_LOG = "stage_log"  # one row per completed stage run: stage, run_date, rows, seconds, detail

# meta_embeddings columns besides the task key column(s), which are stored as strings so
# that one Feast entity declaration serves any key type (composite keys = several columns).
EMBEDDING = "embedding"  # array<float>, model.embedding_dim long
N_SAMPLES = "n_samples"  # int: samples the task was fine-tuned on
MODEL_VERSION = "model_version"  # string: checkpoint content hash
CREATED_TIMESTAMP = "created_timestamp"  # timestamp: when the row was written
RUN_DATE = "run_date"  # date, partition column
# meta_embeddings' event_timestamp is run_date + 1 day, 00:00 UTC (EVENT_TIMESTAMP above).

# Feast objects over meta_embeddings (feature_repo/definitions.py declares them). Two feature
# views of the same features, each its own online namespace; the service names the served one
# (serving/slots.py).
FEATURE_VIEW = "meta_embedding"
FEATURE_VIEWS = (f"{FEATURE_VIEW}_a", f"{FEATURE_VIEW}_b")
FEATURE_SERVICE = "metaemb"
FEATURE_SOURCE = "meta_embeddings_source"
