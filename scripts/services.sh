#!/usr/bin/env bash
# Start, stop or report the local services the tests and benchmarks use, all on loopback, data in .services/
# (or CRM_BULK_SERVICES_DIR).
#   scripts/services.sh start|stop|status [postgres|redis|kafka ...]   (default: all three)
#   scripts/services.sh restart kafka                                   (the broker alone)
# Idempotent: starting a running service or stopping a stopped one is a no-op.
# Writes .services/env (mode 0600) with the URLs the tests read (CRM_BULK_TEST_*). PostgreSQL requires a
# password, generated once into .services/postgres-password and part of the database URL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${CRM_BULK_SERVICES_DIR:-$ROOT/.services}"
PY="${CRM_BULK_PYTHON:-$ROOT/.venv/bin/python}"
PG_PORT="${CRM_BULK_TEST_PG_PORT:-55432}"
REDIS_PORT="${CRM_BULK_TEST_REDIS_PORT:-56379}"
KAFKA_PORT="${CRM_BULK_TEST_KAFKA_PORT:-59092}"
mkdir -p "$STATE"

say() { printf 'services: %s\n' "$*" >&2; }

write_env() {
  local database_url; database_url="$(postgres_cmd dsn)"
  # Written whole under another name, then moved: readers never see half a file, and the mode is the
  # new file's own even when an older, world-readable env file is replaced.
  (umask 077 && cat >"$STATE/env.new" <<ENV
export CRM_BULK_TEST_DATABASE_URL=$database_url
export CRM_BULK_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export CRM_BULK_TEST_KAFKA=127.0.0.1:$KAFKA_PORT
ENV
  )
  mv -f "$STATE/env.new" "$STATE/env"
}

postgres_cmd() { "$PY" -m crm_bulk.local_postgres "$1" --data-dir "$STATE/postgres" --port "$PG_PORT"; }

redis_bin() {
  if ! command -v redis-server >/dev/null 2>&1; then
    say "installing redis-server from Debian"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  fi
  command -v redis-server
}

redis_running() { [ -f "$STATE/redis/redis.pid" ] && kill -0 "$(cat "$STATE/redis/redis.pid")" 2>/dev/null; }

redis_start() {
  if redis_running; then return 0; fi
  local bin; bin="$(redis_bin)"
  mkdir -p "$STATE/redis"
  "$bin" --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --dir "$STATE/redis" \
    --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log" --save "" --appendonly no
  for _ in $(seq 1 100); do
    if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then return 0; fi
    sleep 0.1
  done
  say "redis did not answer PING"; return 1
}

redis_stop() {
  if redis_running; then
    kill "$(cat "$STATE/redis/redis.pid")"
    for _ in $(seq 1 50); do redis_running || break; sleep 0.1; done
  fi
  rm -f "$STATE/redis/redis.pid"
}

kafka_cmd() { KAFKA_PORT="$KAFKA_PORT" PY="$PY" STATE="$STATE" bash "$ROOT/scripts/kafka.sh" "$1"; }

run() {
  local action="$1" svc="$2"
  case "$svc:$action" in
    postgres:start) postgres_cmd start >/dev/null ;;
    postgres:stop) postgres_cmd stop ;;
    postgres:status) postgres_cmd status ;;
    redis:start) redis_start ;;
    redis:stop) redis_stop ;;
    redis:status) if redis_running; then echo running; else echo stopped; return 1; fi ;;
    kafka:*) kafka_cmd "$action" ;;
    *) say "unknown service or action: $svc $action"; return 2 ;;
  esac
}

main() {
  local action="${1:-}"; shift || true
  local services=("$@")
  if [ ${#services[@]} -eq 0 ]; then services=(postgres redis kafka); fi
  case "$action" in
    start|stop|status|restart) ;;
    *) echo "usage: scripts/services.sh start|stop|status|restart [postgres|redis|kafka ...]" >&2; exit 2 ;;
  esac
  write_env
  local rc=0
  for svc in "${services[@]}"; do
    if [ "$action" = restart ]; then
      run stop "$svc" && run start "$svc" || rc=1
    elif [ "$action" = status ]; then
      printf '%s: ' "$svc"; run status "$svc" || rc=1
    else
      run "$action" "$svc" || { say "$svc: $action failed"; rc=1; }
      [ "$action" = start ] && [ $rc -eq 0 ] && say "$svc up"
    fi
  done
  exit $rc
}

main "$@"
