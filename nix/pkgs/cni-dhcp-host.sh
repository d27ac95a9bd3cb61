# A CNI plugin, chained after tc-redirect-tap (lib/vm-network.nix): it tells the
# host's dnsmasq which MAC owns which address, as one `MAC,IP` file per VM in
# dnsmasq's dhcp-hostsdir. dnsmasq serves that subnet in `static` mode, so a
# guest that asks DHCP (the seed's ubuntu image runs networkd DHCP on eth0) is
# given exactly the address host-local gave it through ip=, and nothing else.
#
# CNI contract (spec 1.0): config on stdin, CNI_COMMAND and CNI_CONTAINERID in
# the environment; ADD prints the previous result unchanged. tc-redirect-tap
# adds the VM's own interface with sandbox = CNI_CONTAINERID (the VM id) and
# points the VM's IPs at it (docs/upstream.md). Needs jq.
set -euo pipefail

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

dir=$(jq -r '.hostsDir // empty' <<<"$conf" 2>/dev/null) || fail "config is not JSON"
[ -n "$dir" ] || fail "hostsDir is not set"
id=${CNI_CONTAINERID:-}
# The id becomes a file name; dnsmasq skips names starting with a dot.
[[ $id =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || fail "CNI_CONTAINERID is not a plain name: $id"
file="$dir/$id"

case "${CNI_COMMAND:-}" in
ADD)
  line=$(jq -r --arg id "$id" '
    .prevResult as $r
    | [($r.interfaces // []) | to_entries[] | select(.value.sandbox == $id) | .key] as $vm
    | [($r.ips // [])[] | select((.interface as $i | $vm | index($i)) != null)
                        | select(.address | test("^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+/"))] as $ips
    | if ($ips | length) == 1 and ($r.interfaces[$ips[0].interface].mac // "") != ""
      then "\($r.interfaces[$ips[0].interface].mac),\($ips[0].address | split("/")[0])"
      else empty end' <<<"$conf" 2>/dev/null) || true
  [ -n "$line" ] || fail "prevResult has no VM interface (sandbox $id) with one IPv4 address and a MAC"
  mkdir -p "$dir"
  # Written aside, then renamed in: dnsmasq reads the file whole, once.
  printf '%s\n' "$line" >"$dir/.$id.tmp"
  mv -f "$dir/.$id.tmp" "$file"
  jq '.prevResult + {cniVersion: .cniVersion}' <<<"$conf"
  ;;
DEL)
  # dnsmasq keeps a record it has read until SIGHUP; the short lease frees the
  # address, and host-local hands addresses out round-robin.
  rm -f "$file"
  ;;
CHECK)
  [ -f "$file" ] || fail "no DHCP host entry for $id"
  ;;
*)
  fail "unsupported CNI_COMMAND: ${CNI_COMMAND:-}"
  ;;
esac
