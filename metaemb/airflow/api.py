"""The few calls of Airflow's REST API (/api/v2) that a backfill needs."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from core import config as config_mod
from metaemb.airflow.env import LOCKED, AirflowEnvError, home


class Api:
    """A client of one api-server."""

    def __init__(self, url: str, token: str | None):
        self.url, self.token = url.rstrip("/"), token

    @classmethod
    def connect(cls, url: str, cfg: config_mod.Config) -> "Api":
        token = os.environ.get("METAEMB_AIRFLOW_TOKEN") or cls._token(url, home(cfg))
        return cls(url, token)

    @staticmethod
    def _token(url: str, h: Path) -> str | None:
        """A JWT from the simple auth manager: the local standalone's generated admin password."""
        passwords = h / "simple_auth_manager_passwords.json.generated"
        if not passwords.exists():
            return None
        user, password = next(iter(json.loads(passwords.read_text()).items()))
        req = urllib.request.Request(f"{url}/auth/token", method="POST",
                                     data=json.dumps({"username": user, "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
             attempts: int = 40) -> dict:
        """One request; retried (every 3 s, `attempts` tries) while the metadata DB is locked or the
        server is briefly away. A 5xx rolled its transaction back, so a retry is safe."""
        url = f"{self.url}/api/v2{path}" + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(attempts):
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    return json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")
                retriable = e.code >= 500 or any(s in detail.lower() for s in LOCKED)
                if not retriable or attempt + 1 == attempts:
                    raise AirflowEnvError(f"{method} {path}: HTTP {e.code}: {detail[:2000]} (the api-server's "
                                          "log has the cause)") from None
                why = f"HTTP {e.code}"
            except OSError as e:
                if attempt + 1 == attempts:
                    raise AirflowEnvError(f"{method} {path}: {e}") from None
                why = str(e)
            if attempts > 1:
                print(f"[airflow] {method} {path}: {why[:200]}; retrying in 3s ({attempt + 1}/{attempts})", flush=True)
            time.sleep(3.0)
        raise AssertionError("unreachable")

