#!/bin/sh
# Entrypoint of the yadml-postgres image. On the first start (empty $PGDATA): initdb, then
# create the application role and database. Every start: exec postgres.
#
# Environment (read on the first start only):
#   POSTGRES_USER           application role (default yadml; letters, digits, _)
#   POSTGRES_DB             application database (default: the role's name)
#   POSTGRES_PASSWORD_FILE  file holding the role's password (a Compose secret), or
#   POSTGRES_PASSWORD       the password itself
set -eu

if [ "${1:-postgres}" != postgres ]; then
  exec "$@"
fi
shift || true

user=${POSTGRES_USER:-yadml}
db=${POSTGRES_DB:-$user}
case "$user$db" in
  *[!a-z0-9_]*) echo "POSTGRES_USER and POSTGRES_DB: lowercase letters, digits and _ only" >&2; exit 2 ;;
esac

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    password=$(cat "$POSTGRES_PASSWORD_FILE")
  else
    password=${POSTGRES_PASSWORD:-}
  fi
  [ -n "$password" ] || { echo "set POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD" >&2; exit 2; }

  echo "initialising $PGDATA (role $user, database $db)" >&2
  initdb --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  {
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/tmp'"
    echo "password_encryption = 'scram-sha-256'"
  } >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"

  pg_ctl --silent --wait --options="-c listen_addresses='' -c unix_socket_directories=/tmp" start
  # The password goes in as a psql variable (:'pw' quotes it as an SQL literal).
  psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --set=pw="$password" --dbname=postgres <<SQL
CREATE ROLE $user LOGIN PASSWORD :'pw';
CREATE DATABASE $db OWNER $user;
REVOKE ALL ON DATABASE $db FROM PUBLIC;
SQL
  pg_ctl --silent --wait --mode=fast stop
fi

exec postgres "$@"
