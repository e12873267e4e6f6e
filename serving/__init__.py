"""Feast side of metaemb, above pipelines: the online store from config (feast_store,
feast_registry), the gated publish stage (publish), online lookups (lookup) and the
end-of-day check that reads back through them (check)."""
