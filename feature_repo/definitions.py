"""Feast declarations for metaemb: the meta-embedding feature views over the Delta table.

Declarations only. Every value that depends on the deployment (table path, task key
columns, embedding size) comes from core.config -- `$METAEMB_CONFIG`, else
./metaemb.toml, else the defaults -- so `feast apply` run by hand, the CLI, the DAGs and
the tests declare exactly the same objects. `build(cfg)` is the programmatic entry
(serving.feast_repo.apply uses it); the module-level names are what `feast apply`
discovers when it imports this file.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat
from feast.types import Array, Float32, Int32, String

from core import config as config_mod
from core import tables
from feature_repo import silence_spark_source_warning

silence_spark_source_warning()


def build(cfg: config_mod.Config, served: str = tables.FEATURE_VIEWS[0]) -> dict:
    """The Feast objects for one config: {'entities': [...], 'source', 'views': [two], 'service'}.

    Two feature views of the same features, one online namespace each (serving/slots.py); the
    service names `served`. metaemb's publish moves it to the other view after writing the day
    there, and `metaemb apply` keeps whichever it names (a plain `feast apply` of this file
    declares the first one)."""
    entities = [
        Entity(
            name=key,
            join_keys=[key],
            value_type=ValueType.STRING,  # keys are stored as strings in meta_embeddings
            description=f"task key column {key!r}",
        )
        for key in cfg.data.task_key
    ]
    source = SparkSource(
        name=tables.FEATURE_SOURCE,
        path=cfg.table_location(tables.META_EMBEDDINGS).spark_uri,
        table_format=DeltaFormat(),
        timestamp_field=tables.EVENT_TIMESTAMP,
        created_timestamp_column=tables.CREATED_TIMESTAMP,
        description="Delta table meta_embeddings, one row per task per run_date",
    )
    views = [FeatureView(
        name=name,
        entities=entities,
        ttl=timedelta(days=cfg.feast.ttl_days),
        schema=[
            Field(name=tables.EMBEDDING, dtype=Array(Float32),
                  description=f"meta embedding, {cfg.model.embedding_dim} floats"),
            Field(name=tables.N_SAMPLES, dtype=Int32),
            Field(name=tables.MODEL_VERSION, dtype=String),
        ],
        source=source,
        online=True,
        tags={"embedding_dim": str(cfg.model.embedding_dim)},
    ) for name in tables.FEATURE_VIEWS]
    service = FeatureService(name=tables.FEATURE_SERVICE, features=[v for v in views if v.name == served])
    return {"entities": entities, "source": source, "views": views, "service": service}


_objects = build(config_mod.load())
# Module-level names for `feast apply` (it collects Feast objects from module globals).
meta_embeddings_source = _objects["source"]
meta_embedding_a, meta_embedding_b = _objects["views"]
metaemb_service = _objects["service"]
for _entity in _objects["entities"]:
    globals()[f"entity_{_entity.name}"] = _entity
del _entity
