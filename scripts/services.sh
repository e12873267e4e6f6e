#!/usr/bin/env bash
# Local services for the scale-out shape, started on loopback with state under var/.
#   scripts/services.sh start|stop|status|restart redis
# Redis: Debian's redis-server (installed with apt-get when missing), port $METAEMB_REDIS_PORT
# (default 6379, matching [feast] redis_connection), pidfile var/run/redis.pid, data var/redis/.
# A password, when wanted, comes from $METAEMB_REDIS_PASSWORD and is handed to redis-server on
# stdin -- never on its command line (visible in ps), never written to a file, never echoed.
# postgres and spark are reserved names here (issue 4 items 4-5 add them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="${METAEMB_VAR:-$ROOT/var}"
RUN="$VAR/run"

usage() { echo "usage: $0 start|stop|status|restart redis|postgres|spark" >&2; exit 2; }

ensure_redis_installed() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found: installing Debian's redis-server" >&2
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
    # Debian's package may start a system-wide instance on 6379; ours is separate.
  fi
}

redis_pid() {
  local f="$RUN/redis.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

redis_cli() {
  if [ -n "${METAEMB_REDIS_PASSWORD:-}" ]; then
    REDISCLI_AUTH="$METAEMB_REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"
  else
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"
  fi
}

REDIS_PORT="${METAEMB_REDIS_PORT:-6379}"

redis_start() {
  ensure_redis_installed
  if pid=$(redis_pid); then echo "redis already running (pid $pid, port $REDIS_PORT)"; return 0; fi
  mkdir -p "$RUN" "$VAR/redis"
  local conf=""
  if [ -n "${METAEMB_REDIS_PASSWORD:-}" ]; then conf="requirepass ${METAEMB_REDIS_PASSWORD}"; fi
  printf '%s\n' "$conf" | redis-server - \
    --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --daemonize yes --pidfile "$RUN/redis.pid" --dir "$VAR/redis" \
    --logfile "$VAR/redis/redis.log" --save 60 1000 --appendonly no >/dev/null
  for _ in $(seq 1 50); do
    if redis_cli ping 2>/dev/null | grep -q PONG; then
      echo "redis started (pid $(cat "$RUN/redis.pid"), 127.0.0.1:$REDIS_PORT, data $VAR/redis)"; return 0
    fi
    sleep 0.1
  done
  echo "redis did not answer PING on 127.0.0.1:$REDIS_PORT; see $VAR/redis/redis.log" >&2; exit 1
}

redis_stop() {
  if pid=$(redis_pid); then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$RUN/redis.pid"; echo "redis stopped (pid $pid)"
  else
    echo "redis not running"
  fi
}

redis_status() {
  if pid=$(redis_pid); then
    echo "redis running (pid $pid, 127.0.0.1:$REDIS_PORT): $(redis_cli ping 2>&1)"
  else
    echo "redis not running"; return 3
  fi
}

[ $# -eq 2 ] || usage
action="$1"; service="$2"
case "$service" in
  redis)
    case "$action" in
      start) redis_start ;; stop) redis_stop ;; status) redis_status ;;
      restart) redis_stop; redis_start ;; *) usage ;;
    esac ;;
  postgres|spark) echo "$service: not managed by this script yet" >&2; exit 2 ;;
  *) usage ;;
esac
