#!/usr/bin/env bash
# `make cluster`: three chatd processes on one PostgreSQL desk and the local Redis behind
# HAProxy, with the demo's accounts, as `make run` is for one
# (docs/scaling.md#running-several-processes).
#
# The desk lives in a PostgreSQL database of its own, chatd_demo_cluster (never the
# production one: the demo's passwords are published), its uploads (a folder all three
# share: they run on one machine) and transcripts in var/cluster/. Every process serves
# clients; one runs the desk. Kill any of them (their PIDs are printed): clients reconnect
# to the others, and when it was the one running the desk another takes it over. Ctrl-C
# stops everything.
set -euo pipefail

BIN=${BIN:-.venv/bin}
PORT=${PORT:-8080}
ADMIN_URL=${CHATD_CLUSTER_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${CHATD_CLUSTER_REDIS_URL:-redis://127.0.0.1:6379/0}
DB=chatd_demo_cluster
DB_URL="${ADMIN_URL%/*}/$DB"

command -v haproxy >/dev/null || { echo "cluster: HAProxy is missing (make services installs it)" >&2; exit 1; }
"$BIN/python" - "$ADMIN_URL" "$DB" <<'PY'
import asyncio, sys
import asyncpg

async def main(admin: str, db: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
            await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()

asyncio.run(main(*sys.argv[1:]))
PY

mkdir -p var/cluster
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

start_chatd() {  # start_chatd N: the Nth process, on PORT+N
  CHATD_DATABASE_URL="$DB_URL" CHATD_REDIS_URL="$REDIS_URL" CHATD_UPLOAD_DIR=var/cluster/uploads \
  CHATD_HANDOFF_FILE_DIR=var/cluster/handoff CHATD_TRUSTED_PROXIES=127.0.0.1 \
    "$BIN/chatd" serve --demo --port $((PORT + $1)) >>"var/cluster/chatd$1.log" 2>&1 &
  pids+=($!)
  echo "cluster: chatd $1 on 127.0.0.1:$((PORT + $1)), PID $!, log var/cluster/chatd$1.log"
}
ready() { "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; }

start_chatd 1  # the first makes the demo's accounts, before the others look for them
for _ in $(seq 100); do ready "http://127.0.0.1:$((PORT + 1))/readyz" && break; sleep 0.2; done
start_chatd 2
start_chatd 3
CHATD_LB_PORT=$PORT CHATD_PORT_1=$((PORT + 1)) CHATD_PORT_2=$((PORT + 2)) \
CHATD_PORT_3=$((PORT + 3)) haproxy -db -f deploy/haproxy/chatd.cfg >>var/cluster/haproxy.log 2>&1 &
lb=$!
pids+=("$lb")
echo "cluster: HAProxy on 127.0.0.1:$PORT, PID $lb"
echo "cluster: open http://127.0.0.1:$PORT/demo/ (console http://127.0.0.1:$PORT/console/); Ctrl-C stops"
wait "$lb" || true  # a chatd may be killed and come back; the cluster ends with HAProxy
