"""Writers of one day's rows into Feast's online stores, in the store's own table / key layout,
one module per store as Feast has (sqlite, redis); encode turns Arrow batches into Feast's
serialized records for both."""
