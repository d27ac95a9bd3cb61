# Kernel settings of a fireactions host, as data: roles/fireactions.nix sets them
# (boot.kernel.sysctl) and test/nftables.test.ts writes the net.* ones into a
# network namespace to show the kernel takes each. Taken from
# thpham/nixos-fireactions' hardened profile (modules/microvm-base/security/
# hardening.nix, docs/upstream.md), less what does not fit our hosts:
# rp_filter (clouds with a private network route asymmetrically; the NixOS
# firewall's reverse-path check covers the uplink), accept_ra = 0 (AWS gives
# IPv6 default routes by router advertisement), log_martians (VMs could flood
# the journal).
{
  # Builtins only, so `nix-instantiate --eval` reads it without nixpkgs.
  sysctl = {
    # Jobs in the VMs run untrusted code; the host gives them nothing to aim at.
    "kernel.kptr_restrict" = 2;
    "kernel.dmesg_restrict" = 1;
    "kernel.sysrq" = 0;
    "kernel.perf_event_paranoid" = 3;
    "kernel.unprivileged_bpf_disabled" = 1;
    "net.core.bpf_jit_harden" = 2;
    # The host routes for its VMs: no redirects sent or taken, no source routes.
    "net.ipv4.conf.all.accept_redirects" = 0;
    "net.ipv4.conf.default.accept_redirects" = 0;
    "net.ipv4.conf.all.send_redirects" = 0;
    "net.ipv4.conf.default.send_redirects" = 0;
    "net.ipv6.conf.all.accept_redirects" = 0;
    "net.ipv6.conf.default.accept_redirects" = 0;
    "net.ipv4.conf.all.accept_source_route" = 0;
    "net.ipv4.conf.default.accept_source_route" = 0;
    "net.ipv6.conf.all.accept_source_route" = 0;
    "net.ipv6.conf.default.accept_source_route" = 0;
    "net.ipv4.tcp_syncookies" = 1;
    "net.ipv4.icmp_echo_ignore_broadcasts" = 1;
    "net.ipv4.icmp_ignore_bogus_error_responses" = 1;
  };
  # Group that may read the VMs' console logs (the scaler's DynamicUser).
  logGroup = "fireactions-logs";
}
