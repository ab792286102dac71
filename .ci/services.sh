#!/usr/bin/env bash
# Makes sure the services the tests need answer on loopback: Redis on 6379 and PostgreSQL on
# 5432 (user postgres, database test, trust auth for 127.0.0.1 only). Starts them when they
# are down and installs them on a fresh Debian. Idempotent; prints only what it changes.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "services: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

wait_for() { # wait_for NAME COMMAND...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $name did not come up" >&2; return 1
}

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "services: starting postgresql"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for postgresql pg_isready -h 127.0.0.1 -p 5432 -q
fi

pg() { psql -h 127.0.0.1 -U postgres -w -X -q "$@"; }
if ! pg -d postgres -c 'select 1' >/dev/null 2>&1; then
  # A fresh Debian cluster asks loopback clients for a password: trust loopback instead,
  # for this throwaway test cluster only.
  echo "services: trusting loopback connections in pg_hba.conf"
  hba=$(as_root su postgres -c "psql -tAc 'show hba_file'")
  as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  as_root su postgres -c "psql -qc 'select pg_reload_conf()'" >/dev/null
  wait_for "postgresql (trust)" pg -d postgres -c 'select 1'
fi
if [ "$(pg -d postgres -tAc "select 1 from pg_database where datname = 'test'")" != 1 ]; then
  echo "services: creating database test"
  pg -d postgres -c 'create database test'
fi
# Drop databases left behind by earlier test runs that were interrupted.
for db in $(pg -d postgres -tAc "select datname from pg_database where datname like 'janitor\_t\_%'"); do
  pg -d postgres -c "drop database if exists \"$db\"" >/dev/null 2>&1 || true
done
