# Runner VMs run untrusted jobs. Keep them away from the cloud metadata
# services (which serve user-data and credentials) and from each other.
# The host's own metadata access is untouched: it never passes `forward`.
{
  config,
  lib,
  ...
}:
let
  inherit (config.runnerFleet) host;
  bridge = config.runnerFleet.fireactions.bridge;
in
{
  networking.nftables.enable = true;
  networking.firewall.enable = true;

  networking.nftables.tables = lib.mkIf (builtins.elem "fireactions" host.roles) {
    # Routed traffic from the VM bridge (priority before the NixOS firewall).
    runner-fleet-guard = {
      family = "inet";
      content = ''
        chain forward {
          type filter hook forward priority filter - 10; policy accept;
          iifname "${bridge}" ip daddr 169.254.0.0/16 drop
          iifname "${bridge}" ip6 daddr fd00:ec2::254 drop
          iifname "${bridge}" oifname "${bridge}" drop
        }
      '';
    };
    # Frames switched between two ports of the bridge never reach the inet
    # tables; the bridge family sees them. Every port is a VM, so drop them all.
    runner-fleet-guard-l2 = {
      family = "bridge";
      content = ''
        chain forward {
          type filter hook forward priority filter; policy accept;
          meta ibrname "${bridge}" drop
        }
      '';
    };
  };
}
