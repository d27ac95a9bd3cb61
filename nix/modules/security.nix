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
}
