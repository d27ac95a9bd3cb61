# Basic auth on fireactions' API (#24 item 12). Without it any local process (a host-mode job
# of another role, any user) could scale, pause or reload the pools through 127.0.0.1:8080.
# A oneshot writes a random password per boot into /run (nix/lib/fireactions-api.nix); the
# renderer turns it into fireactions' basic_auth_users (roles/fireactions.nix), runner-fleet-drain
# reads it from the rendered config, the scaler gets it through LoadCredential= (scaler.nix).
# /healthz, /version and the metrics listener stay open (fireactions v0.4.0 server/server.go).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  api = import ../lib/fireactions-api.nix;
  generator = pkgs.callPackage ../pkgs/runner-fleet-api-password.nix { };
in
{
  config = lib.mkIf (builtins.elem "fireactions" config.runnerFleet.host.roles) {
    systemd.services.runner-fleet-api-password = {
      description = "fireactions API password for this boot";
      # fireactions and the scaler Require= it. A restart of this unit would restart them (and
      # fireactions' VMs with it), so a switch leaves it alone; its file outlives it anyway.
      restartIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = lib.escapeShellArgs [ (lib.getExe generator) api.passwordFile ];
      };
    };
  };
}
