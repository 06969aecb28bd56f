#!/usr/bin/env bash
# Instructions a 64-client HTTP write costs, counted by valgrind's callgrind: repeatable where
# wall-clock and CPU-time comparisons are inside a shared machine's noise.
#
#   scripts/callgrind-http.sh [BINARY] [MEMBERS] [SECONDS]
#   (defaults: target/release/flowbook, 2000 members, 3 s)
#
# Runs `flowbook bench` under callgrind with instrumentation off, switches it on when the bench
# announces its flat-out HTTP phase and off when that phase ends, then prints the phase's
# instructions per command (user space only; server and client threads alike: the bench's
# clients run in the same process), the same without SHA-256's software rounds (valgrind's CPU has
# no SHA extensions, so the chain costs ~3× what it does natively), and the allocator calls per
# command. A count moves by up to ~10 % run to run (under valgrind the batches' sizes follow its
# scheduling), so compare the means of several runs of each build, alternating.
set -euo pipefail
cd "$(dirname "$0")/.."

default_binary=target/release/flowbook
binary=${1:-$default_binary}
members=${2:-2000}
seconds=${3:-3}
command -v valgrind > /dev/null || {
    echo "installing valgrind…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq valgrind > /dev/null
}
[ "$binary" = "$default_binary" ] && cargo build --release --locked -p flowbook-server
[ -x "$binary" ] || { echo "callgrind-http: no binary at $binary"; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/callgrind-http.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
out="$work/callgrind.out"

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$binary" bench --dir "$work/bench" --members "$members" --seconds "$seconds" --rounds 1 \
    --json "$work/report.json" > /dev/null 2> "$work/stderr" &
grind=$!
# Follow the bench's phases as it announces them; a bench that ends first shows why.
wait_for_phase() {
    until grep -q "bench: $1" "$work/stderr" 2> /dev/null; do
        kill -0 "$grind" 2> /dev/null || { cat "$work/stderr"; exit 1; }
        sleep 0.2
    done
}
wait_for_phase "http: [0-9]* clients"
callgrind_control -i on "$grind" > /dev/null
wait_for_phase "http: half"
callgrind_control -i off "$grind" > /dev/null
wait "$grind"

commands=$(sed -n '/"http_flat_out"/,/}/p' "$work/report.json" | grep -o '"samples": *[0-9]*' | grep -o '[0-9]*$')
[ "${commands:-0}" -gt 0 ] || { echo "callgrind-http: the HTTP phase answered no commands"; exit 1; }
# (callgrind_annotate warns about the file's "summary: 0", written because counting starts off.)
callgrind_annotate --threshold=100 "$out" > "$work/annotated" 2> /dev/null
total=$(grep 'PROGRAM TOTALS' "$work/annotated" | awk '{gsub(",", "", $1); print $1}')
sha=$(awk '/:sha2::sha256::compress256/ {gsub(",", "", $1); s += $1} END {print s + 0}' "$work/annotated")
# Calls into the allocator: callgrind's file names each function once as "(id) name" and then
# by id alone; a "calls=N" line follows each call site.
allocations=$(awk '
    match($0, /^c?fn=\([0-9]+\)/) {
        id = substr($0, RSTART, RLENGTH); sub(/^c?fn=/, "", id)
        rest = substr($0, RLENGTH + 2)
        if (rest != "") name[id] = rest
        counting = ($0 ~ /^cfn=/ && name[id] ~ /^mi_(malloc|zalloc|realloc)_aligned$/)
        next
    }
    /^calls=/ && counting { split($0, f, /[= ]/); n += f[2]; counting = 0 }
    END { print n + 0 }' "$out")
echo "commands in the flat-out HTTP phase: $commands"
awk -v t="$total" -v s="$sha" -v n="$commands" 'BEGIN {
    printf "instructions a command: %d (without SHA-256 software rounds: %d)\n", t / n, (t - s) / n
}'
awk -v a="$allocations" -v n="$commands" 'BEGIN { printf "allocations a command: %.1f\n", a / n }'
