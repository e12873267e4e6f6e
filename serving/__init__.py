"""Feast side of metaemb, above pipelines.

feast_repo     the Feast repo from config: store, YAML, apply, the served day, lookups
feast_registry a file registry whose writes are atomic
day            one day's meta_embeddings, streamed: rows, key checks, figures, key matching
online/        the day into each online store (encode, sqlite, redis)
gate           the publish gate's figures and bounds
publish_log    what each publish did, and what the online store serves
publish        the publish stage: gate, write the day, record it (orchestration)
check          the end-of-day check: Delta complete, online store serves what publish left
stages         publish and check as stages (no JVM)
score          probabilities from Feast's embeddings and the serving artifact
onnx_runtime   the serving artifact loaded with ONNX Runtime only
"""
