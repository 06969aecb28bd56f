#!/usr/bin/env bash
# flowbook against a PostgreSQL 15 event store, on this machine, in one run.
#
#   scripts/bench-vs-postgres.sh [any `flowbook bench` flags, e.g. --members 100000 --seconds 10]
#
# Installs Debian's PostgreSQL 15 if it is missing, starts a throwaway cluster on loopback (its
# data directory on the same disk as the bench's, fsync and synchronous_commit on), runs
# `flowbook bench --postgres …` — which runs every workload on flowbook and the same events on
# PostgreSQL — prints the table with the ratios, writes bench-report.json, and removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=/usr/lib/postgresql/15/bin
PORT=${PG_PORT:-55432}
if [ ! -x "$PG_BIN/initdb" ]; then
    echo "installing PostgreSQL 15 (Debian's package)…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql-15 > /dev/null
fi

mkdir -p target  # a fresh clone has none yet
work=$(mktemp -d "$PWD/target/bench-vs-postgres.XXXXXX")
cluster="$work/pg"
run_as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    run_as_postgres "$PG_BIN/pg_ctl" -D "$cluster" -m immediate stop > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$cluster"
[ "$(id -u)" = 0 ] && chown postgres "$cluster" "$work"
run_as_postgres "$PG_BIN/initdb" -D "$cluster" -U postgres --auth=trust > /dev/null
# Durable commits, as an event store needs: the defaults, spelled out.
cat >> "$cluster/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$cluster'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
shared_buffers = 1GB
CONF
run_as_postgres "$PG_BIN/pg_ctl" -D "$cluster" -l "$cluster/server.log" -w start > /dev/null

cargo build --release --locked -p flowbook-server
./target/release/flowbook bench --dir "$work/flowbook" --json bench-report.json \
    --postgres "host=127.0.0.1 port=$PORT user=postgres" "$@"
echo "report: bench-report.json"
