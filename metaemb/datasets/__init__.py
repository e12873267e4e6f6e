"""Data sets: the synthetic generator (planted per-task preferences) and MovieLens-100k's conversion."""
