# A CNI plugin, chained last (lib/vm-network.nix): binds each VM to its bridge port.
# On ADD it
#  - adds `<port> . <MAC> . <IPv4>` and `<port> . <MAC> . 0.0.0.0` to the set of the
#    bridge-family table the fireactions unit loads (lib/nftables-rules.nix, vmPorts), which
#    drops every other frame a VM sends: a VM cannot answer ARP for, or send from, another
#    VM's address, nor take another VM's MAC into the bridge's forwarding table;
#  - turns off link-local learning on the bridge (LLDP frames skip every bridge hook, yet
#    the bridge learned their source MAC);
#  - tells dnsmasq which MAC owns which address, as one `MAC,IP` file per VM in its
#    dhcp-hostsdir: dnsmasq serves the subnet in `static` mode, so a guest that asks DHCP
#    (the seed's ubuntu image runs networkd DHCP on eth0) gets exactly the address
#    host-local gave it through ip=, and nothing else.
# Any failure fails ADD, so the VM never starts unbound.
#
# CNI contract (spec 1.0): config on stdin, CNI_COMMAND and CNI_CONTAINERID in the
# environment; ADD prints the previous result unchanged. The port is the interface the
# bridge plugin reports with no sandbox that is not the bridge (the host end of the veth);
# tc-redirect-tap adds the VM's own interface with sandbox = CNI_CONTAINERID (the VM id), the
# MAC the guest is given, and points the VM's IPs at it (docs/upstream.md).
# Every value that goes into an nft command is checked against a strict pattern first.
set -euo pipefail
# Patterns and ${,,} in bytes, not the locale's letters.
export LC_ALL=C

conf=$(cat)
version=$(jq -r '.cniVersion // "1.0.0"' <<<"$conf" 2>/dev/null || echo "1.0.0")

fail() {
  jq -n --arg v "$version" --arg m "$1" '{cniVersion: $v, code: 999, msg: $m}'
  exit 1
}

if [ "${CNI_COMMAND:-}" = VERSION ]; then
  echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'
  exit 0
fi

# Linux interface names: at most 15 bytes; no quotes, spaces or nft's `*` wildcard.
ifname_re='^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$'
mac_re='^[0-9a-f]{2}(:[0-9a-f]{2}){5}$'
octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
ipv4_re="^$octet([.]$octet){3}\$"
table_re='^[A-Za-z][A-Za-z0-9_-]{0,63}$'

# A string setting of the plugin's config; fails (status 1) when it is absent or empty.
setting() {
  local v
  v=$(jq -r --arg k "$1" '.[$k] // empty | strings' <<<"$conf" 2>/dev/null) || return 1
  [ -n "$v" ] && printf '%s' "$v"
}
hosts_dir=$(setting hostsDir) || fail "hostsDir is not set"
state_dir=$(setting stateDir) || fail "stateDir is not set"
bridge=$(setting bridge) || fail "bridge is not set"
table=$(setting table) || fail "table is not set"
[[ $bridge =~ $ifname_re ]] || fail "bridge: not an interface name: $bridge"
[[ $table =~ $table_re ]] || fail "table: not an nft table name: $table"
id=${CNI_CONTAINERID:-}
# The id becomes a file name; dnsmasq skips names starting with a dot.
[[ $id =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || fail "CNI_CONTAINERID is not a plain name: $id"
dhcp_file="$hosts_dir/$id"
state_file="$state_dir/$id"

# Checks a (port, MAC, IPv4) triple; prints the set's two elements for it.
elements() {
  if ! [[ $1 =~ $ifname_re && $1 != "$bridge" && $2 =~ $mac_re && $3 =~ $ipv4_re && $3 != 0.0.0.0 ]]; then
    return 1
  fi
  printf '"%s" . %s . %s, "%s" . %s . 0.0.0.0' "$1" "$2" "$3" "$1" "$2"
}

nft_run() {
  local out
  out=$(nft -f - <<<"$1" 2>&1) || { printf '%s' "$out"; return 1; }
}

case "${CNI_COMMAND:-}" in
ADD)
  # port, MAC, address as one tab-separated line (@tsv escapes tabs and newlines inside).
  fields=$(jq -r --arg id "$id" --arg br "$bridge" '
    .prevResult as $r
    | ($r.interfaces // []) as $ifs
    | [$ifs | to_entries[] | select(.value.sandbox == $id) | .key] as $vm
    | [($r.ips // [])[] | select((.interface as $i | $vm | index($i)) != null)
                        | select(.address | test("^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+/"))] as $ips
    | [$ifs[] | select((.sandbox // "") == "" and .name != $br) | .name] as $ports
    | if ($ips | length) == 1 and ($ports | length) == 1
      then [$ports[0], $ifs[$ips[0].interface].mac, ($ips[0].address | split("/")[0])]
           | if all(type == "string" and test("^[ -~]*$")) then @tsv else empty end
      else empty end' <<<"$conf" 2>/dev/null) || true
  [ -n "$fields" ] || fail "prevResult has no VM interface (sandbox $id) with one IPv4 address, or not exactly one bridge port"
  IFS=$'\t' read -r port mac addr <<<"$fields"
  mac=${mac,,}
  elems=$(elements "$port" "$mac" "$addr") \
    || fail "prevResult: port, MAC or address is malformed: $(printf '%q %q %q' "$port" "$mac" "$addr")"
  # Recorded first, so the DEL that follows a failed ADD finds what to remove.
  mkdir -p "$state_dir" "$hosts_dir"
  printf '%s %s %s\n' "$port" "$mac" "$addr" >"$state_dir/.$id.tmp"
  mv -f "$state_dir/.$id.tmp" "$state_file"
  printf 1 >"/sys/class/net/$bridge/bridge/no_linklocal_learn" 2>/dev/null \
    || fail "$bridge: cannot turn off link-local learning"
  err=$(nft_run "add element bridge $table vm_ports { $elems }") \
    || fail "nft: cannot bind port $port to $mac $addr: $err"
  # Written aside, then renamed in: dnsmasq reads the file whole, once.
  printf '%s,%s\n' "$mac" "$addr" >"$hosts_dir/.$id.tmp"
  mv -f "$hosts_dir/.$id.tmp" "$dhcp_file"
  jq '.prevResult + {cniVersion: .cniVersion}' <<<"$conf"
  ;;
DEL)
  # DEL may come for a VM that never had an ADD (the SDK deletes first) or twice.
  if [ -f "$state_file" ]; then
    read -r port mac addr <"$state_file" || true
    elems=$(elements "${port:-}" "${mac:-}" "${addr:-}") || fail "$state_file: not a port record"
    # Added, then deleted, in one transaction: an element that is already gone is fine.
    if ! err=$(nft_run "add element bridge $table vm_ports { $elems }
delete element bridge $table vm_ports { $elems }"); then
      # No table, no elements (the unit's next start loads it empty); anything else is real.
      if nft list table bridge "$table" >/dev/null 2>&1; then
        fail "nft: cannot unbind port $port: $err"
      fi
    fi
    rm -f "$state_file"
  fi
  # dnsmasq keeps a record it has read until SIGHUP; the short lease frees the
  # address, and host-local hands addresses out round-robin.
  rm -f "$dhcp_file"
  ;;
CHECK)
  [ -f "$dhcp_file" ] || fail "no DHCP host entry for $id"
  [ -f "$state_file" ] || fail "no port record for $id"
  read -r port mac addr <"$state_file" || true
  elems=$(elements "${port:-}" "${mac:-}" "${addr:-}") || fail "$state_file: not a port record"
  nft get element bridge "$table" vm_ports "{ $elems }" >/dev/null 2>&1 \
    || fail "port $port is not bound to $mac $addr"
  ;;
*)
  fail "unsupported CNI_COMMAND: ${CNI_COMMAND:-}"
  ;;
esac
