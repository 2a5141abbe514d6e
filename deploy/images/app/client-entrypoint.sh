#!/bin/sh
# Entrypoint of the yadml-client image: attach once (the state dir keeps the attachment),
# then run the volunteer daemon with the process executor.
#
#   run [FLAG...]     attach if not attached yet, then `yadml-client run FLAG...`
#   anything else     `yadml-client ...`, e.g. `status`, `detach`
#
# Environment:
#   YADML_SERVER_URL        the server (through the reverse proxy), required to attach
#   YADML_FINGERPRINT       the project's key fingerprint (SHA256:...); else the one in
#   YADML_FINGERPRINT_FILE  this file, if it exists; else the key is trusted on first use
#   YADML_CA_CERT           PEM CA certificate for an https:// server URL
#   YADML_CLIENT_NAME       host name shown to the server (default: the container's)
#   YADML_CLIENT_THREADS    threads per unit (default 1)
#   YADML_CLIENT_STATE_DIR  the state dir (default /var/lib/yadml-client)
set -eu

command=${1:-run}
[ "$#" -gt 0 ] && shift

if [ "$command" != run ]; then
  exec python3 -m volunteer_client "$command" "$@"
fi

state=${YADML_CLIENT_STATE_DIR:-/var/lib/yadml-client}

attach() {
  : "${YADML_SERVER_URL:?set YADML_SERVER_URL to attach}"
  set -- attach "$YADML_SERVER_URL" --name "${YADML_CLIENT_NAME:-$(hostname)}" --runtimes process
  fingerprint=${YADML_FINGERPRINT:-}
  if [ -z "$fingerprint" ] && [ -n "${YADML_FINGERPRINT_FILE:-}" ] && [ -f "$YADML_FINGERPRINT_FILE" ]; then
    fingerprint=$(cat "$YADML_FINGERPRINT_FILE")
  fi
  [ -n "$fingerprint" ] && set -- "$@" --fingerprint "$fingerprint"
  [ -n "${YADML_CA_CERT:-}" ] && set -- "$@" --ca-cert "$YADML_CA_CERT"
  # The server may still be starting: retry for a minute.
  tries=0
  until python3 -m volunteer_client "$@"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
      echo "yadml-client: could not attach to $YADML_SERVER_URL" >&2
      return 1
    fi
    sleep 2
  done
}

[ -f "$state/attachment.json" ] || attach

exec python3 -m volunteer_client run --executor process --threads "${YADML_CLIENT_THREADS:-1}" "$@"
