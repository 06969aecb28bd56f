#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL 15 cluster, then removes the cluster.
#
#   scripts/with-postgres.sh COMMAND [ARGS…]
#
# Installs Debian's PostgreSQL 15 if it is missing, makes a cluster under target/ (on the same
# disk as the project's scratch directories: a comparison of durable writes must share the disk),
# starts it on loopback with durable commits (fsync and synchronous_commit on: the defaults,
# spelled out), and runs COMMAND with FLOWBOOK_POSTGRES set to its connection string. The
# cluster is stopped and removed however COMMAND ends; its exit status is this script's.
# PG_PORT picks the port (55432 by default).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=/usr/lib/postgresql/15/bin
PORT=${PG_PORT:-55432}
if [ ! -x "$PG_BIN/initdb" ]; then
    echo "installing PostgreSQL 15 (Debian's package)…" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql-15 > /dev/null
fi

run_as_postgres() {
    # From /: postgres may not be allowed into the working directory (every path here is absolute).
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
mkdir -p target  # a fresh clone has none yet
work=$(mktemp -d "$PWD/target/postgres.XXXXXX")
if [ "$(id -u)" = 0 ]; then
    # initdb refuses root, so the server runs as postgres, which needs a way into the checkout:
    # a clone under a private directory (mktemp -d's mode 700) has none. Then the cluster goes
    # under /var/tmp instead — said here, since it may be another disk than the bench's.
    chown postgres "$work"
    if ! run_as_postgres test -w "$work"; then
        rm -rf "$work"
        work=$(mktemp -d /var/tmp/flowbook-postgres.XXXXXX)
        chown postgres "$work"
        echo "with-postgres: user postgres cannot reach $PWD/target; the cluster is in $work" >&2
    fi
fi
cluster="$work/pg"
cleanup() {
    run_as_postgres "$PG_BIN/pg_ctl" -D "$cluster" -m immediate stop > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

run_as_postgres mkdir "$cluster"
run_as_postgres "$PG_BIN/initdb" -D "$cluster" -U postgres --auth=trust > /dev/null
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

export FLOWBOOK_POSTGRES="host=127.0.0.1 port=$PORT user=postgres"
# Not exec: the trap removes the cluster once the command is done.
"$@"
