# The CNI plugin `runner-fleet-dhcp-host` (see the script): records each VM's
# MAC and CNI address for dnsmasq's static DHCP. Linked into /opt/cni/bin with
# the other plugins; tested with a real dnsmasq and DHCP client in
# test/nftables.test.ts.
{
  writeShellScriptBin,
  jq,
  coreutils,
}:
writeShellScriptBin "runner-fleet-dhcp-host" ''
  PATH=${jq}/bin:${coreutils}/bin:$PATH
  ${builtins.readFile ./cni-dhcp-host.sh}
''
