# Metrics on every host: nixpkgs' node exporter and runner-fleet-exporter
# (pkgs/runner-fleet-exporter.py: NixOS generations, secrets, units, and a relay of
# fireactions' and the scaler's loopback endpoints). Both listen on the host's
# private address (its public one when it has none), and the host firewall opens
# their ports only to inventory.monitoring.allowCidrs; with none, to nobody.
# Runner VMs never reach them: lib/nftables-rules.nix drops the same ports
# (lib/monitoring.json) from the VM bridge first.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) host inventory;
  ports = builtins.fromJSON (builtins.readFile ../lib/monitoring.json);
  exporter = pkgs.callPackage ../pkgs/runner-fleet-exporter.nix { };
  fireactions = builtins.elem "fireactions" host.roles;
  allowCidrs = (inventory.monitoring or { }).allowCidrs or [ ];
  v4 = builtins.filter (c: !(lib.hasInfix ":" c)) allowCidrs;
  v6 = builtins.filter (c: lib.hasInfix ":" c) allowCidrs;
  # Templates (images) have no address yet; their firewall opens nothing anyway.
  address =
    if (host.privateAddress or null) != null then host.privateAddress
    else if (host.address or null) != null then host.address
    else "0.0.0.0";
  # An IPv6 literal goes in brackets in host:port.
  listen = if lib.hasInfix ":" address then "[${address}]" else address;
  open = "tcp dport { ${toString ports.nodeExporterPort}, ${toString ports.exporterPort} } accept";
  exporterConfig = builtins.toJSON {
    secrets = map (s: s.file) (host.secrets or [ ]);
    units = [ "vault-agent-runner-fleet" "runner-fleet-secrets" ]
      ++ config.runnerFleet.secrets.consumers
      ++ lib.optional fireactions "runner-fleet-scaler";
    relays = lib.optionalAttrs fireactions (lib.mapAttrs (_: r: r.upstream) ports.relays);
    vault = lib.optionalAttrs ((inventory.vault or { }) ? address) { inherit (inventory.vault) address; };
  };
in
{
  services.prometheus.exporters.node = {
    enable = true;
    listenAddress = address;
    port = ports.nodeExporterPort;
    # Opened below, to the scrape sources only (openFirewall would open it to everyone).
    openFirewall = false;
  };

  # The nftables firewall's input-allow chain (security.nix turns nftables on).
  networking.firewall.extraInputRules = lib.concatStringsSep "\n" (
    lib.optional (v4 != [ ]) "ip saddr { ${lib.concatStringsSep ", " v4} } ${open} comment \"runner-fleet metrics\""
    ++ lib.optional (v6 != [ ]) "ip6 saddr { ${lib.concatStringsSep ", " v6} } ${open} comment \"runner-fleet metrics\""
  );

  environment.etc."runner-fleet/exporter.json".text = exporterConfig;

  systemd.services.runner-fleet-exporter = {
    description = "runner-fleet exporter: NixOS generations, secrets, units, relayed fireactions and scaler metrics";
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ];
    restartTriggers = [ exporterConfig ];
    startLimitIntervalSec = 300;
    startLimitBurst = 5;
    serviceConfig = {
      ExecStart = lib.escapeShellArgs [
        (lib.getExe exporter)
        "--listen" "${listen}:${toString ports.exporterPort}"
        "--config" "/etc/runner-fleet/exporter.json"
      ];
      Restart = "on-failure";
      RestartSec = 5;
      # Reads world-readable links, stats /run/secrets (0751) and asks systemd over D-Bus.
      DynamicUser = true;
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
      NoNewPrivileges = true;
      RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
      MemoryMax = "128M";
    };
  };
}
