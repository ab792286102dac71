#!/usr/bin/env bash
# make demo: the incident and its neighbours in an SQLite file shaped like the platform's,
# one janitor cycle, before and after. Uses the local Redis when one answers, else starts a
# private one (installing redis-server on a fresh Debian if needed).
set -euo pipefail
cd "$(dirname "$0")/.."

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if answers 6379; then
  export REDIS_URL=redis://127.0.0.1:6379
else
  if ! command -v redis-server >/dev/null; then
    echo "demo: installing redis-server"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null; fi
  fi
  port=6391
  if ! answers "$port"; then
    echo "demo: starting a private redis on 127.0.0.1:$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --dir /tmp --logfile /tmp/janitor-demo-redis.log
    for _ in $(seq 50); do answers "$port" && break; sleep 0.1; done
  fi
  export REDIS_URL="redis://127.0.0.1:$port"
fi

cargo build -q -p janitor -p janitor-bench --bins
dir="$PWD/target/demo"
rm -rf "$dir" && mkdir -p "$dir"
export DATABASE_URL="sqlite://$dir/trinity.db"
export JANITOR_SLOT_PREFIX="demo:agent:slots:" JANITOR_SLOT_META_PREFIX="demo:agent:slot:"
export JANITOR_QUEUE="demo:janitor:cleanup" JANITOR_LOG_FORMAT=text
janitor=target/debug/janitor

target/debug/janitor-demo seed
$janitor migrate --create-platform-tables
printf '\n== before ==\n'
$janitor stuck
target/debug/janitor-demo query
printf '\n== one cycle: janitor run --once ==\n'
$janitor run --once
printf '\n== after ==\n'
$janitor stuck
target/debug/janitor-demo query
