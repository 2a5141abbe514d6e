#!/bin/sh
# Entrypoint of the yadml-server image.
#
#   serve [FLAG...]   the work server on 0.0.0.0:8080, configured from the environment
#                     (below); FLAGs are appended to `yadml-server serve`
#   init              one-shot, before the replicas start: keys, operator token, schema
#                     (python3 /opt/yadml/init.py --help)
#   key|db|operator   `yadml-server key show|rotate`, `db upgrade|current|check`,
#                     `operator create`, with this deployment's state dir and database
#   anything else     `yadml-server ...`
#
# Environment of `serve` (all optional):
#   YADML_STATE_DIR, YADML_RUNS_DIR   shared state (keys, blobs, SQLite) and job outputs
#   YADML_DATABASE_URL                postgresql://USER:PASSWORD@HOST/DB (default: SQLite)
#   YADML_DATABASE_PASSWORD_FILE      the password, read from a file (a Compose secret),
#                                     put into YADML_DATABASE_URL in place of @PASSWORD@
#   YADML_PUBLIC_URL                  the URL volunteers reach (default: relative URLs)
#   YADML_TRUSTED_PROXY               the reverse proxy's IP (X-Forwarded-For is believed)
#   YADML_DATA_DIR                    MNIST IDX files (a `digits` job needs none)
#   YADML_OPERATOR_TOKEN              else the token file written by `init`
#   YADML_SERVE_ARGS                  extra flags, word-split
set -eu

state=${YADML_STATE_DIR:-/var/lib/yadml}
runs=${YADML_RUNS_DIR:-$state/runs}

database_url() {
  url=${YADML_DATABASE_URL:-}
  if [ -n "$url" ] && [ -n "${YADML_DATABASE_PASSWORD_FILE:-}" ]; then
    password=$(cat "$YADML_DATABASE_PASSWORD_FILE")
    # URL-quote the password: it may hold any character.
    password=$(python3 -c 'import sys, urllib.parse as p; print(p.quote(sys.argv[1], safe=""))' "$password")
    url=$(printf '%s' "$url" | sed "s|@PASSWORD@|$password|")
  fi
  printf '%s' "$url"
}

command=${1:-serve}
[ "$#" -gt 0 ] && shift

case "$command" in
  serve)
    set -- --host 0.0.0.0 --port 8080 --state-dir "$state" --runs-dir "$runs" "$@"
    url=$(database_url)
    [ -n "$url" ] && set -- "$@" --database-url "$url"
    [ -n "${YADML_PUBLIC_URL:-}" ] && set -- "$@" --public-url "$YADML_PUBLIC_URL"
    [ -n "${YADML_TRUSTED_PROXY:-}" ] && set -- "$@" --trusted-proxy "$YADML_TRUSTED_PROXY"
    if [ -n "${YADML_DATA_DIR:-}" ] && [ -d "$YADML_DATA_DIR" ]; then
      set -- "$@" --data-dir "$YADML_DATA_DIR"
    fi
    # shellcheck disable=SC2086  # YADML_SERVE_ARGS is a list of flags
    exec python3 -m work_server serve "$@" ${YADML_SERVE_ARGS:-}
    ;;
  init)
    url=$(database_url)
    if [ -n "$url" ]; then
      exec python3 /opt/yadml/init.py --state-dir "$state" --runs-dir "$runs" --database-url "$url" "$@"
    fi
    exec python3 /opt/yadml/init.py --state-dir "$state" --runs-dir "$runs" "$@"
    ;;
  key)
    # The state dir is appended (argparse: the last --state-dir given wins).
    exec python3 -m work_server key "$@" --state-dir "$state"
    ;;
  db | operator)
    url=$(database_url)
    [ -n "$url" ] && set -- "$@" --database-url "$url"
    exec python3 -m work_server "$command" "$@" --state-dir "$state"
    ;;
  *)
    exec python3 -m work_server "$command" "$@"
    ;;
esac
