# The on-demand scaler on fireactions hosts (nix/pkgs/runner-fleet-scaler.py): keeps
# minRunners idle runners ready in every pool of /etc/runner-fleet/pools.json, up to
# maxRunners VMs, through fireactions' scale API; busy and idle come from the VMs' console
# logs, never from GitHub. Metrics in Prometheus text format on metricsAddress.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.runnerFleet.scaler;
  scaler = pkgs.callPackage ../pkgs/runner-fleet-scaler.nix { };
  api = import ../lib/fireactions-api.nix;
in
{
  options.runnerFleet.scaler = {
    metricsAddress = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1:9102";
      description = "host:port of the scaler's /metrics endpoint (Prometheus text format).";
    };
    api = lib.mkOption {
      type = lib.types.str;
      # render-fireactions-config's default bind_address.
      default = "http://127.0.0.1:8080";
      description = "fireactions' API, as a URL.";
    };
    interval = lib.mkOption {
      type = lib.types.str;
      default = "0.5";
      description = "Seconds between two passes over the pools (0.05 to 60).";
    };
  };

  config = lib.mkIf (builtins.elem "fireactions" config.runnerFleet.host.roles) {
    # runner-fleet-drain holds this lock exclusively while it drains; the scaler (a
    # DynamicUser, so it cannot create it) takes it shared and read-only before it adds VMs.
    systemd.tmpfiles.rules = [
      "d /run/runner-fleet 0755 root root -"
      "f /run/runner-fleet/scale.lock 0644 root root -"
    ];
    systemd.services.runner-fleet-scaler = {
      description = "runner-fleet on-demand scaler for fireactions pools";
      wantedBy = [ "multi-user.target" ];
      # Wants, not Requires: the scaler waits out a fireactions restart (backoff) instead of
      # stopping with it.
      wants = [ "fireactions.service" ];
      # The API password (modules/fireactions-api-auth.nix): Requires=, as the unit never fails.
      requires = [ api.unit ];
      after = [ "fireactions.service" api.unit ];
      # A bad pools.json or a dead API never ends the process; only a bug does. Five such
      # exits within five minutes stop the restarts instead of looping.
      startLimitIntervalSec = 300;
      startLimitBurst = 5;
      serviceConfig = {
        ExecStart = lib.escapeShellArgs [
          (lib.getExe scaler)
          "--pools" "/etc/runner-fleet/pools.json"
          "--pools-dir" "/var/lib/fireactions/pools"
          "--api" cfg.api
          "--metrics-address" cfg.metricsAddress
          "--interval" cfg.interval
          # systemd puts the LoadCredential= copy there and expands the variable in ExecStart=
          # (systemd.exec(5), Credentials); quoting does not stop it (systemd.service(5)).
          "--api-password-file" "\${CREDENTIALS_DIRECTORY}/${api.credential}"
        ];
        # A DynamicUser cannot read the root-only file: systemd copies it (as root) into the
        # unit's own credentials directory, readable by the unit's user only (systemd.exec(5)).
        LoadCredential = [ "${api.credential}:${api.passwordFile}" ];
        Restart = "on-failure";
        RestartSec = 5;
        # It reads the VMs' console logs and talks HTTP on loopback: no privileges needed.
        DynamicUser = true;
        # The VMs' console logs are group-readable only (roles/fireactions.nix UMask).
        SupplementaryGroups = [ (import ../lib/host-hardening.nix).logGroup ];
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        NoNewPrivileges = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        MemoryMax = "256M";
      };
    };
  };
}
