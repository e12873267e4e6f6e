#!/usr/bin/env bash
# Debian packages for the servers the tests start on loopback (and stop after):
# redis-server (Feast online store) and postgresql (Airflow metadata), plus docker-compose
# (Debian's 1.29, no engine needed) so a test validates docker-compose.yml against the
# Compose schema instead of skipping. Idempotent.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
{ docker compose version || command -v docker-compose; } >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -eq 0 ]; then
  echo "[services] redis-server, postgresql and a compose validator present"; exit 0
fi
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "[services] installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages may start system-wide instances; the tests run their own on free ports.
for svc in redis-server postgresql; do
  (command -v service >/dev/null && $SUDO service "$svc" stop >/dev/null 2>&1) || true
done
echo "[services] installed: ${missing[*]}"
