"""Names and shapes of the Delta tables the pipeline writes (all under config storage_root)."""

LABELED_INTERACTIONS = "labeled_interactions"  # partitioned by event_date
TASK_SAMPLES = "task_samples"  # partitioned by run_date
META_EMBEDDINGS = "meta_embeddings"  # partitioned by run_date; Feast's batch source
QUARANTINE = "quarantine"  # row-level input faults, partitioned by run_date
PUBLISH_LOG = "publish_log"  # one row per published run_date (gate figures, row counts)

# meta_embeddings columns besides the task key column(s), which are stored as strings so
# that one Feast entity declaration serves any key type (composite keys = several columns).
EMBEDDING = "embedding"  # array<float>, model.embedding_dim long
N_SAMPLES = "n_samples"  # int: samples the task was fine-tuned on
MODEL_VERSION = "model_version"  # string: checkpoint content hash
EVENT_TIMESTAMP = "event_timestamp"  # timestamp: run_date + 1 day, 00:00 UTC (valid from)
CREATED_TIMESTAMP = "created_timestamp"  # timestamp: when the row was written
RUN_DATE = "run_date"  # date, partition column
STAGE_LOG = "stage_log"  # one row per completed stage run: stage, run_date, rows, seconds, detail
