#!/usr/bin/env bash
# The e2e test hosts: network namespaces on a bridge of our own, each with its own
# mount and UTS namespace (own /etc, /var, /home, /run, /nix, hostname), Debian's sshd on
# its own address, the deploy user, python3 and the deploy user's sudo rules as nix/ grants
# them (rendered from nix/modules/common.nix by host/sudoers.nix). Needs root.
#
#   hosts.sh up NAME=ADDRESS...   tear down whatever a previous run left, then build the hosts,
#                                 the ssh-agent and its throwaway key
#   hosts.sh down                 remove everything `up` made (safe to run any time)
#   hosts.sh stop-sshd NAME | start-sshd NAME
#   hosts.sh exec NAME CMD...     run CMD as root on the host (its net, mount and UTS namespaces)
#
# Everything lives under $RF_E2E_DIR (default /tmp/rf-e2e). Traffic stays on the bridge
# (10.231.0.0/24, no default route in the namespaces) and loopback.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RF=${RF_E2E_DIR:-/tmp/rf-e2e}
BRIDGE=rfe2e-br
BRIDGE_ADDR=10.231.0.1
PREFIX=24
NS_PREFIX=rfe2e-
# A stand-in for deploy-rs' activate-rs at a store-like path: the deploy user's sudo rule
# /nix/store/*/activate-rs is what lets deploy-rs activate, so the stand-in goes through it too.
ACTIVATE=/nix/store/00000000000000000000000000000000-runner-fleet-e2e-activate/activate-rs

die() { echo "hosts.sh: $*" >&2; exit 1; }
hostdir() { echo "$RF/hosts/$1"; }
initpid() { cat "$(hostdir "$1")/init.pid" 2>/dev/null || die "host $1 is not up"; }
on_host() { local h=$1; shift; nsenter -t "$(initpid "$h")" -n -m -u -- "$@"; }

nixeval() {
  NIX_REMOTE=dummy:// HOME="$RF" NIX_CONFIG="" nix-instantiate --eval --strict --json "$@"
}

down() {
  # Processes in our namespaces (sshd, bao agent, host init) are ours: end them by pid.
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NS_PREFIX}" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  # Our ssh-agent only (a stale pid file may name another process by now).
  if [ -s "$RF/agent.pid" ] && [ "$(ps -p "$(cat "$RF/agent.pid")" -o comm= 2>/dev/null)" = ssh-agent ]; then
    kill "$(cat "$RF/agent.pid")" 2>/dev/null || true
  fi
  ip link del "$BRIDGE" 2>/dev/null || true
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^rfe2e-v' || true); do
    ip link del "$link" 2>/dev/null || true
  done
  # The mounts lived in the hosts' private mount namespaces, gone with their processes.
  if [ -d "$RF" ]; then rm -rf "$RF/hosts" "$RF/layer" "$RF/tls" "$RF/agent.sock" "$RF/agent.pid"; fi
  if [ -f "$RF/created-nix-dir" ] && [ -d /nix ]; then rmdir /nix 2>/dev/null || true; rm -f "$RF/created-nix-dir"; fi
}

# /usr/bin as the hosts see it: Debian's, plus the host stand-ins, minus cloud-init (an
# existing machine has none, and a cloud-init that never ran would make readiness wait).
build_layer() {
  local layer=$RF/layer/usr-bin
  mkdir -p "$layer"
  install -m 0755 "$HERE/host/systemctl" "$layer/systemctl"
  install -m 0755 "$HERE/host/unit-supervise" "$layer/unit-supervise"
  # nixpkgs' vault is what bootstrap.nix puts on PATH; OpenBao's CLI speaks the same API.
  ln -sf "$(command -v bao)" "$layer/vault"
  [ -e /usr/bin/cloud-init ] && mknod "$layer/cloud-init" c 0 0
  return 0
}

# A CA of our own and a certificate for OpenBao on the bridge and loopback addresses:
# config.ts wants https for any Vault that is not on localhost. The hosts trust the CA the
# way a host trusts an internal CA (appended to its system bundle, which Go programs read).
make_tls() {
  local t=$RF/tls
  mkdir -p "$t"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=runner-fleet e2e CA" -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=openbao.e2e" \
    -keyout "$t/openbao.key" -out "$t/openbao.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' "$BRIDGE_ADDR" > "$t/ext.cnf"
  openssl x509 -req -in "$t/openbao.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -days 2 \
    -extfile "$t/ext.cnf" -out "$t/openbao.pem" 2>/dev/null
  rm -f "$t/openbao.csr" "$t/ca.key"
  # The deploy machine's trust: its system bundle plus our CA (SSL_CERT_FILE for Go programs).
  cat "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$t/ca.pem" > "$t/bundle.pem"
}

start_sshd() {
  local h=$1
  on_host "$h" /usr/sbin/sshd -E /var/log/sshd.log
  local i
  for i in $(seq 1 50); do
    [ -s "$(hostdir "$h")/run/sshd.pid" ] && return 0
    sleep 0.1
  done
  die "sshd on $h did not start (see $(hostdir "$h")/var.upper/log/sshd.log)"
}

stop_sshd() {
  local pidfile
  pidfile="$(hostdir "$1")/run/sshd.pid"
  if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
}

up_host() {
  local i=$1 name=$2 addr=$3 d ns=${NS_PREFIX}$2 veth=rfe2e-v$1
  d=$(hostdir "$name")
  mkdir -p "$d"/{etc.upper,etc.work,var.upper,var.work,home,run,nix,usr-bin.work}
  chmod 0755 "$d/run" "$d/home" "$d/nix"

  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/$PREFIX" dev eth0
  ip -n "$ns" link set eth0 up

  # The host's "init": holds its mount and UTS namespaces (sshd may stop; the host stays).
  setsid ip netns exec "$ns" unshare -m -u --propagation private sh -c '
    set -e
    d=$1; layer=$2
    mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/etc.upper,workdir=$d/etc.work" /etc
    mount -t overlay overlay -o "lowerdir=/var,upperdir=$d/var.upper,workdir=$d/var.work" /var
    mount -t overlay overlay -o "lowerdir=$layer:/usr/bin" /usr/bin
    mount --bind "$d/home" /home
    mount --bind "$d/run" /run
    mount --bind "$d/nix" /nix
    hostname "$3"
    exec sleep infinity
  ' host-init "$d" "$RF/layer/usr-bin" "$name" </dev/null >"$d/init.log" 2>&1 &
  echo $! > "$d/init.pid"
  local n
  for n in $(seq 1 50); do
    [ "$(nsenter -t "$(cat "$d/init.pid")" -u hostname 2>/dev/null)" = "$name" ] && break
    sleep 0.1
  done
  [ "$(nsenter -t "$(cat "$d/init.pid")" -u hostname 2>/dev/null)" = "$name" ] || die "host $name did not start: $(cat "$d/init.log")"

  on_host "$name" sh -es "$name" "$addr" "$RF/id_ed25519.pub" "$RF/sudoers" "$HERE/host/activate-rs" "$ACTIVATE" <<'EOF'
name=$1; addr=$2; pub=$3; sudoers=$4; activate_src=$5; activate=$6
mkdir -p /run/sshd /run/current-system/sw/bin /etc/runner-fleet /var/lib/runner-fleet /var/log
chmod 0755 /run/sshd
chmod 0700 /var/lib/runner-fleet
printf '127.0.1.1 %s\n%s %s\n' "$name" "$addr" "$name" >> /etc/hosts
useradd --create-home --shell /bin/bash --comment "runner-fleet deploy user" deploy
# NixOS keeps users' keys in /etc/ssh/authorized_keys.d/<user>.
mkdir -p /etc/ssh/authorized_keys.d
install -m 0644 "$pub" /etc/ssh/authorized_keys.d/deploy
install -m 0440 "$sudoers" /etc/sudoers.d/runner-fleet-deploy
visudo -cq
cat "$(dirname "$pub")/tls/ca.pem" >> /etc/ssl/certs/ca-certificates.crt
# The host's own identity: a fresh ed25519 key (not the machine's).
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N "" -C "root@$name" -f /etc/ssh/ssh_host_ed25519_key
cat > /etc/ssh/sshd_config <<CONF
ListenAddress $addr
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys.d/%u
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM yes
LogLevel VERBOSE
Subsystem sftp internal-sftp
CONF
/usr/sbin/sshd -t
install -D -m 0755 "$activate_src" "$activate"
EOF
  start_sshd "$name"
}

up() {
  [ $# -gt 0 ] || die "up: give NAME=ADDRESS for each host"
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, mounts)"
  command -v bao >/dev/null || die "bao is not on PATH (run npm run engine; the e2e puts .engine/bin on PATH)"
  down
  mkdir -p "$RF"
  chmod 0755 "$RF"
  if [ ! -d /nix ]; then mkdir /nix; touch "$RF/created-nix-dir"; fi

  # sudoers for the deploy user, rendered from nix/modules/common.nix itself.
  nixeval --argstr repo "$REPO" "$HERE/host/sudoers.nix" | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin))' > "$RF/sudoers"
  visudo -cqf "$RF/sudoers" || die "rendered sudoers is invalid: $RF/sudoers"

  rm -f "$RF/id_ed25519" "$RF/id_ed25519.pub"
  ssh-keygen -q -t ed25519 -N "" -C "runner-fleet-e2e-throwaway" -f "$RF/id_ed25519"
  build_layer
  make_tls

  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_ADDR/$PREFIX" dev "$BRIDGE"
  ip link set "$BRIDGE" up

  local i=0 pair
  for pair in "$@"; do
    i=$((i + 1))
    up_host "$i" "${pair%%=*}" "${pair#*=}"
  done

  ssh-agent -a "$RF/agent.sock" -s | sed -n 's/^SSH_AGENT_PID=\([0-9]*\);.*/\1/p' > "$RF/agent.pid"
  SSH_AUTH_SOCK="$RF/agent.sock" ssh-add -q "$RF/id_ed25519"
  # The private key file is not needed any more: only the agent holds it.
  rm -f "$RF/id_ed25519"
  echo "hosts up: $*; SSH_AUTH_SOCK=$RF/agent.sock"
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  stop-sshd) stop_sshd "$1" ;;
  start-sshd) start_sshd "$1" ;;
  exec) h=$1; shift; on_host "$h" "$@" ;;
  *) die "usage: hosts.sh up NAME=ADDRESS... | down | stop-sshd NAME | start-sshd NAME | exec NAME CMD..." ;;
esac
