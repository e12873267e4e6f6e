"""`metaemb serve`: Feast's HTTP feature server over metaemb's registry and online store.

The same server as `feast serve` (Feast's FeatureStore.serve), built from the metaemb config, so
it reads exactly what `metaemb lookup` reads. Non-Python services call it:

    curl -s localhost:6566/get-online-features -d '{"feature_service": "metaemb",
         "entities": {"user_id": ["1", "42"]}}'

Task keys are strings (the entity's type), as `metaemb lookup` sends them.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=6566, help="port (Feast's default: 6566)")
    p.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (default 1)")
    p.add_argument("--registry-ttl", type=int, metavar="SECONDS",
                   help="how often the server re-reads the registry, so a newly published day shows (default: "
                        "[feast] registry_ttl_s; a publish keeps the day before for switch_grace_s after switching)")
    p.add_argument("--max-requests", type=int, default=0, metavar="N",
                   help="recycle a worker after about N requests (0: never, the default). Feast's own default "
                        "(1000) restarts the worker mid-traffic: with one worker its clients get connection resets")
    p.add_argument("--access-log", action="store_true", help="log every request")


def run(args, cfg) -> int:
    from core.tables import FEATURE_SERVICE
    from serving.feast_repo import feature_store

    store = feature_store(cfg)
    try:
        store.get_feature_service(FEATURE_SERVICE)
    except Exception as e:  # Feast's *NotFoundException: nothing applied to this registry yet
        raise RuntimeError(f"feature service {FEATURE_SERVICE!r} is not in the registry "
                           f"{cfg.location(cfg.feast.registry_path)} ({e}); run `metaemb apply` first") from e
    print(f"[serve] Feast feature server on http://{args.host}:{args.port} (feature service {FEATURE_SERVICE!r}, "
          f"online store {cfg.feast.online_store}, {args.workers} worker(s)); POST /get-online-features",
          flush=True)
    store.serve(host=args.host, port=args.port, workers=args.workers, no_access_log=not args.access_log,
                registry_ttl_sec=args.registry_ttl or max(1, cfg.feast.registry_ttl_s), max_requests=args.max_requests,
                max_requests_jitter=args.max_requests // 20)
    return 0
