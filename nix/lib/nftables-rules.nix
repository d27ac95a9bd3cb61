# The runner-VM guard as data. modules/security.nix deploys these tables
# (networking.nftables.tables) and test/nftables.test.ts loads the very same
# text with Debian's nft in a network namespace. Builtins only, so
# `nix-instantiate --eval` evaluates it without nixpkgs.
#
# Runner VMs run untrusted jobs. From the VM bridge they may reach the public
# internet and nothing else: not the cloud's metadata and platform endpoints,
# not private networks (Vault, other hosts), not the host itself (sshd,
# vault-agent, fireactions' API; only DNS and DHCP), not each other. Firecracker answers MMDS
# (169.254.169.254 inside the guest) in the VMM before any packet reaches the
# tap, so blocking 169.254.0.0/16 here does not cut the runner's own metadata.
{
  # Bridge the CNI plugin puts every VM on.
  bridge,
  # The bridge's own address, where the host's DNS forwarder answers
  # (lib/vm-network.nix); the one host service a VM may reach.
  gateway,
  # TCP ports of the registry mirror on the gateway (modules/registry-mirror.nix); [] opens none.
  mirrorPorts ? [ ],
  # The port-binding table's name (vm-network.nix), which the CNI plugin fills.
  portsTable ? (import ./vm-network.nix).portsTable,
}:
let
  inherit (builtins) concatStringsSep;

  # Metrics ports (lib/monitoring.json). To this host: all four (node exporter, our exporter,
  # fireactions' and the scaler's loopback endpoints). Forwarded: the two exporters, which
  # other hosts serve on their addresses, public ones included; the loopback-only ports stay
  # open to the internet, where jobs may need them.
  monitoring = builtins.fromJSON (builtins.readFile ./monitoring.json);
  inherit (monitoring) guardPorts;
  scrapePorts = [ monitoring.nodeExporterPort monitoring.exporterPort ];
  metricsDrop = ports: ''iifname "${bridge}" tcp dport { ${concatStringsSep ", " (map toString ports)} } drop comment "runner VMs never reach metrics"'';

  # The registry mirror (#23): its ports at the gateway, TCP only, nothing else of the host.
  mirrorRule =
    if mirrorPorts == [ ] then
      ""
    else
      ''iifname "${bridge}" ip daddr ${gateway} tcp dport { ${concatStringsSep ", " (map toString mirrorPorts)} } accept'';

  # Destinations a VM must never be forwarded to.
  blocked4 = [
    "0.0.0.0/8" # "this network"
    "10.0.0.0/8" # private (RFC 1918): VPCs, Vault, other hosts, the VM subnet
    "100.64.0.0/10" # carrier-grade NAT, also some clouds' metadata (100.100.100.200)
    "127.0.0.0/8" # loopback
    "168.63.129.16/32" # Azure WireServer and its host agent endpoints
    "169.254.0.0/16" # link-local: AWS/Azure/Hetzner/DigitalOcean metadata, AWS DNS and NTP
    "172.16.0.0/12" # private (RFC 1918)
    "192.0.0.0/24" # IETF protocol assignments
    "192.168.0.0/16" # private (RFC 1918)
    "198.18.0.0/15" # benchmarking, used inside some provider networks
    "224.0.0.0/3" # multicast and reserved
  ];
  blocked6 = [
    "::1/128" # loopback
    "fc00::/7" # unique local, holds AWS's IPv6 metadata fd00:ec2::254
    "fe80::/10" # link-local
    "ff00::/8" # multicast
  ];

  # What a VM port may send (bridge family, vmPorts): ARP whose sender MAC is the frame's
  # source and whose (port, MAC, sender IP) is bound; IPv4 from its bound address; DHCP
  # from 0.0.0.0 with its own MAC. Nothing else: no IPv6, no other ethertype.
  bindRules = ''
    arp htype 1 arp ptype ip arp hlen 6 arp plen 4 iifname . ether saddr . arp saddr ip @vm_ports iifname . arp saddr ether . arp saddr ip @vm_ports accept
    ip saddr != 0.0.0.0 iifname . ether saddr . ip saddr @vm_ports accept
    ip saddr 0.0.0.0 udp sport 68 udp dport 67 iifname . ether saddr . ip saddr @vm_ports accept
  '';

  set = name: type: elements: ''
    set ${name} {
      type ${type}
      flags interval
      elements = { ${concatStringsSep ", " elements} }
    }
  '';
in
{
  inherit blocked4 blocked6 gateway guardPorts scrapePorts mirrorPorts;

  # Each VM port bound to its VM's MAC and IPv4 address (#24 item 12). Not one of `tables`:
  # nixpkgs' nftables unit deletes and re-creates its tables on every reload, which would
  # drop the set's elements; the fireactions unit loads this one (roles/fireactions.nix,
  # ExecStartPre, `text`: any old copy deleted, so no element outlives the VMs, which are all
  # gone when fireactions starts) and the CNI plugin (pkgs/cni-vm-port.sh) adds a VM's
  # elements on ADD and removes them on DEL: `<port> . <MAC> . <IPv4>` and
  # `<port> . <MAC> . 0.0.0.0` (a DHCP client and an RFC 5227 ARP probe before the guest
  # has its address).
  #
  # prerouting, not input: the bridge learns a frame's source MAC after prerouting, before
  # input and forward (net/bridge/br_input.c), so a frame dropped here cannot move another
  # VM's MAC to this port either. input repeats the check for the link-local frames
  # (01:80:c2:00:00:0X) that skip prerouting; LLDP skips both, so the plugin turns
  # link-local learning off on the bridge. Like the forward chain of runner-fleet-guard-l2,
  # this sees every bridge port of the host (no `meta ibrname` here): a fireactions host has
  # one bridge, the VM bridge, and every frame from any other bridge's ports would be dropped.
  vmPorts = rec {
    family = "bridge";
    name = portsTable;
    content = ''
      set vm_ports {
        type ifname . ether_addr . ipv4_addr
      }

      chain prerouting {
        type filter hook prerouting priority filter; policy drop;
        ${bindRules}
      }

      chain input {
        type filter hook input priority filter; policy drop;
        ${bindRules}
      }
    '';
    # As `nft -f` loads it: the same `table` / `delete table` / `table { }` nixpkgs writes,
    # one transaction, so an old copy and its elements are gone and the new one is empty.
    text = ''
      table ${family} ${name}
      delete table ${family} ${name}
      table ${family} ${name} {
      ${content}
      }
    '';
  };

  # Same shape as networking.nftables.tables.<name>: { family, content }.
  tables = {
    runner-fleet-guard = {
      family = "inet";
      content = ''
        ${set "blocked4" "ipv4_addr" blocked4}
        ${set "blocked6" "ipv6_addr" blocked6}

        # A VM's new connections, per source address: at most 100 a second
        # (thpham/nixos-fireactions' hardened profile, rateLimitConnections).
        set vm_new4 {
          type ipv4_addr
          size 4096
          flags dynamic,timeout
          timeout 1m
        }

        # Routed traffic; runs before the NixOS firewall, and a drop is final.
        chain forward {
          type filter hook forward priority filter - 10; policy accept;
          ${metricsDrop scrapePorts}
          iifname "${bridge}" oifname "${bridge}" drop
          # The host routes for its VMs only (ip_forward is on for them): a
          # neighbour on any other network cannot route through it.
          iifname != "${bridge}" oifname != "${bridge}" drop
          # Nothing from outside opens a connection to a VM.
          oifname "${bridge}" ct state established,related accept
          oifname "${bridge}" drop
          iifname "${bridge}" ip daddr @blocked4 drop
          iifname "${bridge}" ip6 daddr @blocked6 drop
          iifname "${bridge}" ct state new add @vm_new4 { ip saddr limit rate over 100/second burst 100 packets } drop
        }

        # Traffic from the VMs to any address of the host itself. The NixOS
        # firewall opens sshd to every interface; VMs get replies, DNS at the
        # gateway (their resolvers' own addresses are blocked above, so the
        # host forwards) and DHCP (a client broadcasts before it has an
        # address), nothing else.
        chain input {
          type filter hook input priority filter - 10; policy accept;
          ${metricsDrop guardPorts}
          iifname "${bridge}" ct state established,related accept
          iifname "${bridge}" ip daddr ${gateway} udp dport 53 accept
          iifname "${bridge}" ip daddr ${gateway} tcp dport 53 accept
          iifname "${bridge}" udp sport 68 udp dport 67 accept
          ${mirrorRule}
          iifname "${bridge}" drop
        }
      '';
    };

    # Frames switched between two bridge ports never reach the inet tables;
    # the bridge family sees them. A fireactions host has one bridge, the VM
    # bridge, and every port of it is a VM, so nothing is switched at all.
    # (Frames to the host, ARP for the gateway included, take the bridge's
    # input hook, not forward.) `meta ibrname` would name the bridge but needs
    # nft_meta_bridge, which not every kernel has.
    runner-fleet-guard-l2 = {
      family = "bridge";
      content = ''
        chain forward {
          type filter hook forward priority filter; policy drop;
        }
      '';
    };
  };
}
