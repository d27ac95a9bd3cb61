# The runner VMs' network as data, shared by roles/fireactions.nix (CNI
# config, DNS forwarder, DHCP), modules/security.nix (via nftables-rules.nix)
# and test/nftables.test.ts, so the address the guests are told to ask for DNS,
# the address dnsmasq answers on and the one address the guard opens for DNS are the
# same value. Builtins only (`nix-instantiate --eval` needs no nixpkgs).
#
# How a guest is configured (sources in docs/upstream.md): fireactions v0.4.0
# runs this CNI network; firecracker-go-sdk turns the CNI result into the
# kernel's `ip=` argument (address, gateway, up to two nameservers, autoconf
# off), so the guest has its address before init runs. Images that run a DHCP
# client anyway (the seed's ubuntu image: networkd drops the kernel's address
# and asks DHCP) get the very same address from dnsmasq's static DHCP: the
# runner-fleet-vm-port plugin records each VM's MAC and CNI address for it, and
# binds the VM's bridge port to that MAC and address (nftables-rules.nix, vmPorts).
# The nameserver is the gateway: the hosts' own resolvers on AWS
# (169.254.169.253, VPC base+2) and Azure (168.63.129.16) sit in ranges the
# guard blocks, so the host forwards for the guests instead.
rec {
  bridge = "fireactions0";
  subnet = "10.200.0.0/24";
  # The bridge plugin (isGateway) gives the bridge the subnet's first address.
  gateway = "10.200.0.1";
  netmask = "255.255.255.0";
  # One `MAC,IP` file per running VM, written by the CNI plugin, read by dnsmasq.
  dhcpHostsDir = "/run/runner-fleet/dhcp-hosts";
  # The CNI plugin's own record per VM (`<port> <MAC> <IP>`), what DEL removes. Not in
  # dhcpHostsDir: dnsmasq reads every file there.
  portsStateDir = "/run/runner-fleet/vm-ports";
  # The bridge-family table that binds each VM port to its MAC and address
  # (nftables-rules.nix); the fireactions unit loads it, the CNI plugin fills its set.
  portsTable = "runner-fleet-vm-ports";

  # The DNS forwarder and static DHCP server, as services.dnsmasq.settings
  # (nixpkgs renders `k = v`, `true` as a bare key, lists as repeated keys).
  dnsmasq = {
    # Only the gateway address: not loopback, not the host's uplink.
    listen-address = gateway;
    # The bridge and its address appear with the first VM (CNI creates them),
    # after dnsmasq has started; bind-dynamic binds them when they do. It also
    # keeps dnsmasq off the wildcard address, so port 53 elsewhere on the host
    # (e.g. systemd-resolved's stub) stays free.
    bind-dynamic = true;
    # Guests learn nothing from the host's /etc/hosts ...
    no-hosts = true;
    # ... nor the names behind private addresses from upstream.
    bogus-priv = true;
    domain-needed = true;
    cache-size = 1000;
    # Upstream: the host's own /etc/resolv.conf (dnsmasq's default), i.e. the
    # cloud's resolver, which the host itself may reach.

    # DHCP for the subnet, `static`: only MACs listed in dhcp-hostsdir get an
    # answer, and only the address CNI gave them; router and DNS server are
    # dnsmasq's own address there, the gateway. Leases are short because a
    # record outlives its VM (dnsmasq only adds them) and host-local hands a
    # freed address out again only after going round the subnet.
    dhcp-range = "${builtins.head (builtins.split "/" subnet)},static,${netmask},5m";
    dhcp-hostsdir = dhcpHostsDir;
  };

  # /etc/cni/net.d/fireactions.conflist. fireactions v0.4.0 asks for the
  # network named "fireactions" (server/pool.go); tc-redirect-tap hands the
  # veth to Firecracker's tap.
  cniConflist = {
    cniVersion = "1.0.0";
    name = "fireactions";
    plugins = [
      {
        type = "bridge";
        inherit bridge;
        isGateway = true;
        ipMasq = true;
        ipam = {
          type = "host-local";
          inherit subnet;
          routes = [ { dst = "0.0.0.0/0"; } ];
        };
        # The bridge plugin's result carries this `dns` (it overrides the
        # IPAM's); the SDK puts its nameservers into `ip=`. Not host-local's
        # resolvConf: that would hand the guests the host's resolvers.
        dns.nameservers = [ gateway ];
      }
      { type = "firewall"; }
      { type = "tc-redirect-tap"; }
      # After tc-redirect-tap, whose result names the VM's MAC and address (and,
      # from the bridge plugin, the host side of the VM's veth: its bridge port).
      {
        type = "runner-fleet-vm-port";
        inherit bridge;
        hostsDir = dhcpHostsDir;
        stateDir = portsStateDir;
        table = portsTable;
      }
    ];
  };
}
