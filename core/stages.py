"""The daily job's stages, in run order, and how a stage says it failed on its data.

The Spark stages run as `spark-submit metaemb/jobs.py --stage S --date D` (or in-process
through `metaemb run`); the serving stages are plain Python (delta-rs and Feast, no JVM).
Each name is also the `stage` a stage writes to the stage_log table.
"""

LABELED, SAMPLES, EMBED = "labeled", "samples", "embed"
PUBLISH, CHECK = "publish", "check"
TRAIN = "train"  # the retraining job: labeled + samples for the date, then Algorithm 2a

SPARK_STAGES = (LABELED, SAMPLES, EMBED)
SERVING_STAGES = (PUBLISH, CHECK)
DAILY = SPARK_STAGES + SERVING_STAGES
ALL = (LABELED, SAMPLES, TRAIN, EMBED, PUBLISH, CHECK)  # the order `metaemb status` shows

# A stage job exits with this when it failed on its data (an empty day, bad input, a
# mismatched checkpoint, a blocked gate, a failed check): the same input fails the same way,
# so the Airflow task fails at once instead of retrying.
EXIT_FAILED_ON_DATA = 3
