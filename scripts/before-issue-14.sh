#!/usr/bin/env bash
# make bench: builds janitor as it was before issue 14 (commit b8ab5cf: a full sweep every
# 10 s, no deadline index, no due pass) for the steady scenario's "before" leg, so that its
# CPU ratio compares the two designs and not today's sweep with its due pass turned off.
# Prints the binary's path on stdout; prints nothing (and says why on stderr) when the
# commit is not in this clone (a shallow checkout): the bench then falls back to today's
# binary with due passes off, and labels the leg so.
set -euo pipefail
cd "$(dirname "$0")/.."

commit=b8ab5cf
dir="$PWD/target/before-issue-14"
bin="$dir/target/release/janitor"
if [ -x "$bin" ] && [ "$(cat "$dir/commit" 2>/dev/null)" = "$commit" ]; then
  echo "$bin"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "bench: commit $commit is not in this clone (shallow?); the steady scenario's" \
    "before leg runs today's janitor with due passes off" >&2
  exit 0
fi
echo "bench: building janitor at $commit (the design before issue 14) into $dir, once" >&2
rm -rf "$dir/src"
mkdir -p "$dir/src"
git archive "$commit" | tar -x -C "$dir/src"
(cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" ${CARGO:-cargo} build -q --release -p janitor) >&2
echo "$commit" >"$dir/commit"
echo "$bin"
