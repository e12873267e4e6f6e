"""Feast declarations (definitions.py): what `feast apply` and metaemb register."""

import warnings

# Feast warns on every SparkSource it builds (declared here, or read back from the registry)
# that the API is experimental; metaemb builds that source on purpose.
SPARK_SOURCE_WARNING = "The spark data source API is an experimental feature"


def silence_spark_source_warning() -> None:
    warnings.filterwarnings("ignore", message=SPARK_SOURCE_WARNING, category=RuntimeWarning)
