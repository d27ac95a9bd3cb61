# The CNI plugin `runner-fleet-vm-port` (see the script): binds each VM's bridge port to its
# MAC and CNI address (nftables, lib/nftables-rules.nix vmPorts) and records both for
# dnsmasq's static DHCP. Linked into /opt/cni/bin with the other plugins; tested with real
# nft, dnsmasq and a DHCP client in test/nftables.test.ts.
{
  writeShellApplication,
  jq,
  coreutils,
  nftables,
}:
writeShellApplication {
  name = "runner-fleet-vm-port";
  runtimeInputs = [ jq coreutils nftables ];
  text = builtins.readFile ./cni-vm-port.sh;
}
