#!/bin/sh
# Entrypoint of the yadml-proxy image: render the nginx configuration, then run nginx in
# the foreground.
#
# Environment:
#   YADML_UPSTREAM     the server replicas' DNS name and port (default server:8080); the
#                      name is re-resolved every 10 s, so scaled replicas join without a restart
#   YADML_RESOLVER     DNS server (default 127.0.0.11, Docker's embedded DNS)
#   YADML_TLS_CERT     PEM certificate chain and
#   YADML_TLS_KEY      PEM private key: when both files exist, HTTPS on 8443 as well
set -eu

conf=/tmp/nginx.conf
upstream=${YADML_UPSTREAM:-server:8080}
resolver=${YADML_RESOLVER:-127.0.0.11}
case "$upstream$resolver" in
  *[!A-Za-z0-9.:_-]*) echo "YADML_UPSTREAM / YADML_RESOLVER: host:port only" >&2; exit 2 ;;
esac

tls=""
if [ -n "${YADML_TLS_CERT:-}" ] && [ -f "$YADML_TLS_CERT" ] && [ -f "${YADML_TLS_KEY:-}" ]; then
  tls="listen 8443 ssl; ssl_certificate $YADML_TLS_CERT; ssl_certificate_key $YADML_TLS_KEY; ssl_protocols TLSv1.2 TLSv1.3;"
fi

sed -e "s|@UPSTREAM@|$upstream|g" -e "s|@RESOLVER@|$resolver|g" -e "s|@TLS@|$tls|g" \
  /etc/nginx/yadml.conf.template >"$conf"
nginx -t -q -e stderr -c "$conf"
exec nginx -e stderr -c "$conf" -g 'daemon off;'
