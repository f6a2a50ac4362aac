#!/usr/bin/env bash
# Times what a new user does: a fresh clone, `make install` with an empty uv cache (every
# wheel downloaded), then `make demo` on embedded defaults. Prints one line per figure.
# Usage: benchmarks/fresh_install_and_demo.sh [--install-only]
set -euo pipefail
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=$(mktemp -d /tmp/cvops-bench.XXXX)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
export UV_CACHE_DIR="$work/uv-cache"

start=$(date +%s.%N)
make install >"$work/install.log" 2>&1
install_s=$(echo "$(date +%s.%N) - $start" | bc)
echo "fresh install (empty uv cache): ${install_s} s"
[ "${1:-}" = "--install-only" ] && exit 0

start=$(date +%s.%N)
make demo >"$work/demo.log" 2>&1
demo_s=$(echo "$(date +%s.%N) - $start" | bc)
echo "make demo (after install): ${demo_s} s"
grep -A3 "Where to look" "$work/demo.log" | sed -n 2p
