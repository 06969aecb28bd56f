#!/usr/bin/env bash
# flowbook against a PostgreSQL 15 event store, on this machine, in one run.
#
#   scripts/bench-vs-postgres.sh [any `flowbook bench` flags, e.g. --members 100000 --seconds 10]
#
# Builds the release binary, then runs `flowbook bench --postgres …` beside a throwaway cluster
# (scripts/with-postgres.sh: installs Debian's PostgreSQL 15 if it is missing, its data directory
# on the same disk as the bench's, fsync and synchronous_commit on) — every workload on flowbook
# and the same events on PostgreSQL — prints the table with the ratios, writes
# bench-report.json, and removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${FLOWBOOK_POSTGRES:-}" ]; then
    cargo build --release --locked -p flowbook-server
    exec scripts/with-postgres.sh "$0" "$@"
fi

mkdir -p target  # a fresh clone has none yet
scratch=$(mktemp -d "$PWD/target/bench-vs-postgres.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
./target/release/flowbook bench --dir "$scratch/flowbook" --json bench-report.json \
    --postgres "$FLOWBOOK_POSTGRES" "$@"
echo "report: bench-report.json"
