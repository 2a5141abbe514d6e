#!/usr/bin/env bash
# A PostgreSQL server for the tests and the benchmark: a cluster of its own in .pg/ (ignored by
# git), listening on 127.0.0.1 only, with a role and a database "yadml" whose password is
# random and kept in .pg/password (mode 600). Idempotent: installs Debian's postgresql package
# when no server binaries are found, initialises the cluster once, starts it when it is not
# running, and prints the SQLAlchemy URL as its last line.
#
# usage: scripts/postgres.sh [start|stop|url]     (default: start)
# env:   PG_DIR (default .pg), PG_PORT (default: a free port chosen once, kept in PG_DIR/port)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
action=${1:-start}
pg_dir=$(realpath -m "${PG_DIR:-.pg}")
data="$pg_dir/data"
run="$pg_dir/run"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

find_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
  done
  return 1
}

bin=$(find_bin || true)
if [[ -z "$bin" ]]; then
  [[ "$action" == start ]] || die "PostgreSQL is not installed"
  say "installing PostgreSQL (apt: postgresql)"
  sudo=$([[ $(id -u) -eq 0 ]] || echo sudo)
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  bin=$(find_bin) || die "postgresql installed but no initdb found under /usr/lib/postgresql"
fi

# PostgreSQL refuses to run as root: as root the cluster belongs to the "postgres" user.
if [[ $(id -u) -eq 0 ]]; then
  owner=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  owner=$(id -un)
  as_owner() { "$@"; }
fi

url() {
  printf 'postgresql+asyncpg://yadml:%s@127.0.0.1:%s/yadml\n' \
    "$(cat "$pg_dir/password")" "$(cat "$pg_dir/port")"
}

running() { [[ -f "$data/PG_VERSION" ]] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

case "$action" in
  url) [[ -f "$pg_dir/port" ]] || die "no cluster in $pg_dir (run $0 start)"; url; exit 0 ;;
  stop) running && as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >&2; exit 0 ;;
  start) ;;
  *) die "usage: $0 [start|stop|url]" ;;
esac

mkdir -p "$pg_dir"
if [[ ! -f "$pg_dir/port" ]]; then
  port=${PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
  echo "$port" >"$pg_dir/port"
fi
if [[ ! -f "$pg_dir/password" ]]; then
  (umask 077; python3 -c 'import secrets; print(secrets.token_hex(16))' >"$pg_dir/password")
fi
port=$(cat "$pg_dir/port")

if [[ ! -f "$data/PG_VERSION" ]]; then
  say "initialising a PostgreSQL cluster in $data (owner $owner)"
  rm -rf "$data"
  mkdir -p "$data" "$run"
  chown "$owner" "$data" "$run"
  chmod 700 "$data"
  # the owner must reach the folder; the project tree itself stays as it is
  as_owner test -w "$data" || die "user $owner cannot write $data (is a parent folder private?)"
  as_owner "$bin/initdb" -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  cat >>"$data/postgresql.conf" <<EOF
# yadml test cluster (scripts/postgres.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$run'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
fi

if ! running; then
  say "starting PostgreSQL on 127.0.0.1:$port"
  chown "$owner" "$run" 2>/dev/null || true
  as_owner "$bin/pg_ctl" -D "$data" -l "$run/server.log" -w -t 60 start >/dev/null \
    || die "PostgreSQL did not start: $(tail -n 20 "$run/server.log")"
fi

psql_admin() { as_owner "$bin/psql" -h "$run" -p "$port" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
password=$(cat "$pg_dir/password")
if [[ -z $(psql_admin -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'yadml'") ]]; then
  say "creating role and database yadml"
  psql_admin -d postgres -c "CREATE ROLE yadml LOGIN CREATEDB PASSWORD '$password'"
fi
# tests drop their databases WITH (FORCE), which may have to end an autovacuum worker
psql_admin -d postgres -c "GRANT pg_signal_backend TO yadml" >/dev/null
if [[ -z $(psql_admin -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'yadml'") ]]; then
  psql_admin -d postgres -c "CREATE DATABASE yadml OWNER yadml"
fi
url
