"""Command modules: each exposes add_arguments(parser) and run(args, cfg) -> int."""
