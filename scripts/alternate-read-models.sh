#!/usr/bin/env bash
# Runs two builds of projection_bench's `measure` against one store, alternating (old, new,
# old, new …), and prints one line a run: rebuild rate, second-round member history p50 / p99,
# peak memory and the run's CPU seconds. This machine drifts by ±20 % within the hour, so a
# change is only judged against its predecessor run next to it, never against a figure from
# earlier (BENCHMARKS.md, seventh session).
#
#   scripts/alternate-read-models.sh OLD_BIN NEW_BIN STORE_DIR [PAIRS]
#
# Build the old one from a worktree into its own target directory, e.g.
#   git worktree add ../wt-base <commit>
#   (cd ../wt-base && CARGO_TARGET_DIR=../target-old cargo build --release -p flowbook-projections --examples)
#   cargo build --release -p flowbook-projections --examples
#   scripts/alternate-read-models.sh ../target-old/release/examples/projection_bench \
#       target/release/examples/projection_bench /path/to/store 3
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 OLD_BIN NEW_BIN STORE_DIR [PAIRS]" >&2
    exit 2
fi
old=$1 new=$2 dir=$3 pairs=${4:-3}
for bin in "$old" "$new"; do
    [ -x "$bin" ] || { echo "$0: $bin is not an executable" >&2; exit 2; }
done
[ -d "$dir" ] || { echo "$0: $dir is not a store directory" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "$0: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }

for _ in $(seq "$pairs"); do
    for which in old new; do
        bin=$old
        [ "$which" = new ] && bin=$new
        started=$(date +%s.%N)
        times=$(mktemp)
        out=$(/usr/bin/time -f "%U %S" -o "$times" "$bin" measure --dir "$dir")
        cpu=$(awk '{printf "%.1f", $1 + $2}' "$times")
        rm -f "$times"
        rebuild=$(echo "$out" | sed -n 's/^| rebuild | .* = \([0-9]*\) events\/s |$/\1/p')
        history=$(echo "$out" | sed -n 's/^| member history, the next 2,000.* | \(.*\) ms |$/\1/p')
        peak=$(echo "$out" | sed -n 's/^| peak memory.* | \([0-9]*\) \/ .*$/\1/p')
        wall=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.0f", e - s}')
        echo "$which: rebuild $rebuild events/s, history $history ms, peak $peak MiB, cpu ${cpu} s, ${wall} s"
    done
done
