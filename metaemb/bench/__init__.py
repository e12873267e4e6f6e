"""The benchmarks behind `metaemb bench` (their options: metaemb/commands/bench.py). Each prints its
figures; docs/benchmarks.md records them with the command, machine and date."""
