# Runner VMs run untrusted jobs. Keep them away from the cloud's metadata and
# platform endpoints (which serve user-data and credentials), from private
# networks (Vault, other hosts), from the host's own services and from each
# other. The rules live in lib/nftables-rules.nix, a pure function, so the
# tests load exactly the text deployed here. The host's own metadata access is
# untouched: it never passes these chains' bridge matches.
{
  config,
  lib,
  ...
}:
let
  inherit (config.runnerFleet) host;
  guard = import ../lib/nftables-rules.nix {
    inherit (config.runnerFleet.fireactions) bridge gateway;
    mirrorPorts = config.runnerFleet.registryMirror.ports;
  };
in
{
  networking.nftables.enable = true;
  networking.firewall.enable = true;

  networking.nftables.tables = lib.mkIf (builtins.elem "fireactions" host.roles) guard.tables;

  # The VM port binding table is the fireactions unit's (lib/nftables-rules.nix, vmPorts), not
  # one of networking.nftables.tables: a reload flushing the whole ruleset would take it, and
  # with it every VM's binding, so the host would drop all its VMs' frames until fireactions
  # restarts. nixpkgs flushes when stateVersion < 23.11 or `ruleset`/`rulesetFile` is set.
  assertions = lib.mkIf (builtins.elem "fireactions" host.roles) [
    {
      assertion = !config.networking.nftables.flushRuleset;
      message = "networking.nftables.flushRuleset: must stay false on a fireactions host (it would delete the ${guard.vmPorts.name} table the fireactions unit loads)";
    }
  ];
}
