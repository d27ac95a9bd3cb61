# STAND-IN EVALUATION for the e2e test hosts (nixpkgs is not reachable here, so no NixOS
# system can be built). What one host's "system" would put on it, taken from nix/ itself:
#
#   programs    the host commands of nix/modules/bootstrap.nix (runner-fleet-bootstrap,
#               -apply-pools, -seed, render-fireactions-config, runner-fleet-seed-files):
#               their script text exactly as the module writes it, with nixpkgs' builders
#               replaced by stubs that keep name, text and kind.
#   units       on fireactions hosts, the runner-fleet-scaler service of nix/modules/scaler.nix
#               (its ExecStart, restart settings, LoadCredential and Requires, as the module sets
#               them; the option
#               defaults come from the module's own options), which host/systemctl runs; on
#               every host runner-fleet-exporter (nix/modules/monitoring.nix) and node exporter,
#               started as nixpkgs' exporters/node.nix would start it with the module's
#               listenAddress and port (Debian's node_exporter here).
#   etc         files nix/modules/monitoring.nix puts in /etc (environment.etc), by path.
#   vaultAgent  the settings nix/modules/vault-agent.nix gives services.vault-agent for this
#               host, plus the pid_file default NixOS' vault-agent module adds; NixOS writes
#               them to a JSON file and runs `vault agent -config <file>`.
#
# The activation stand-in installs the programs as plain files in /run/current-system/sw/bin.
{ flake, inventoryFile, host }:
let
  inventory = builtins.fromJSON (builtins.readFile inventoryFile);
  hostEntry = inventory.hosts.${host};
  fireactions = builtins.elem "fireactions" hostEntry.roles;
  bin = "/run/current-system/sw/bin";

  hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
  removePrefix = p: s:
    if hasPrefix p s then builtins.substring (builtins.stringLength p) (builtins.stringLength s) s else s;
  # Only what the modules call on the way to the values read here; priorities and conditions
  # are dropped (the values read are unconditional for the host's roles).
  lib = {
    inherit hasPrefix removePrefix;
    inherit (builtins) elem;
    optionalString = cond: s: if cond then s else "";
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalAttrs = cond: a: if cond then a else { };
    getExe = drv: "${bin}/${drv.name}";
    mkIf = cond: value: value;
    mkForce = value: value;
    mkDefault = value: value;
    mkOption = o: o;
    mkEnableOption = d: { };
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    escapeShellArgs = xs: builtins.concatStringsSep " " (map (x: "'${x}'") xs);
    concatStringsSep = builtins.concatStringsSep;
    inherit (builtins) mapAttrs;
    hasInfix = infix: s: builtins.length (builtins.split (builtins.replaceStrings [ "." ] [ "\\." ] infix) s) > 1;
    types = { str = { }; listOf = t: { }; ints.positive = { }; bool = { }; };
  };
  tool = name: { inherit name; outPath = "/run/current-system/sw"; };
  pkgs = {
    writeShellApplication = { name, text, runtimeInputs ? [ ], ... }:
      { inherit name text runtimeInputs; kind = "shell"; outPath = "/run/current-system/sw"; };
    # Like nixpkgs' callPackage: a package gets the arguments it asks for.
    callPackage = file: args: let f = import file; in f (builtins.intersectAttrs (builtins.functionArgs f) {
      writers.writePython3Bin = name: opts: text:
        { inherit name text; kind = "python3"; runtimeInputs = [ ]; outPath = "/run/current-system/sw"; };
      # Debian's openssl on the test hosts (runner-fleet-drain signs the GitHub App JWT with it).
      openssl = { outPath = "/usr"; };
      inherit (pkgs) writeShellApplication coreutils;
    } // args);
    coreutils = tool "coreutils";
    gnused = tool "gnused";
    jq = tool "jq";
    vault = tool "vault";
    systemd = tool "systemd";
  };

  bootstrap = import "${flake}/modules/bootstrap.nix" {
    inherit lib pkgs;
    config.services.fireactions.enable = fireactions;
  };
  # The system packages and the programs they run (runtimeInputs) that are ours.
  ours = p: p ? kind;
  collect = ps: builtins.concatMap (p: [ p ] ++ collect (builtins.filter ours p.runtimeInputs)) ps;
  programs = builtins.attrValues (builtins.listToAttrs (map (p: {
    name = p.name;
    value = { inherit (p) name text kind; };
  }) (collect (builtins.filter ours bootstrap.environment.systemPackages))));

  agentModule = import "${flake}/modules/vault-agent.nix" {
    inherit lib pkgs;
    config.runnerFleet = { inherit inventory; host = hostEntry; };
  };
  settings = agentModule.services.vault-agent.instances.runner-fleet.settings;

  scalerModule = import "${flake}/modules/scaler.nix" {
    inherit lib pkgs;
    config.runnerFleet = {
      host = hostEntry;
      scaler = builtins.mapAttrs (_: o: o.default) scalerModule.options.runnerFleet.scaler;
    };
  };
  scalerProgram = pkgs.callPackage "${flake}/pkgs/runner-fleet-scaler.nix" { };
  # The per-boot API password's oneshot (modules/fireactions-api-auth.nix), which host/systemctl
  # runs before fireactions' preStart and before the scaler (both Require= it).
  apiPasswordProgram = pkgs.callPackage "${flake}/pkgs/runner-fleet-api-password.nix" { };

  # secrets.nix decides the consumers; monitoring.nix reads them (the module system would merge).
  consumers = (import "${flake}/modules/secrets.nix" {
    inherit lib pkgs;
    config.runnerFleet = { host = hostEntry; secrets = { consumers = [ ]; timeoutSec = 300; }; };
  }).config.runnerFleet.secrets.consumers;
  monitoring = import "${flake}/modules/monitoring.nix" {
    inherit lib pkgs;
    config.runnerFleet = { inherit inventory; host = hostEntry; secrets.consumers = consumers; };
  };
  exporterProgram = pkgs.callPackage "${flake}/pkgs/runner-fleet-exporter.nix" { };
  exporterUnit = monitoring.systemd.services.runner-fleet-exporter;
  node = monitoring.services.prometheus.exporters.node;
  scalerUnit = scalerModule.config.systemd.services.runner-fleet-scaler;
in
{
  programs = programs ++ lib.optionals fireactions [
      { inherit (scalerProgram) name text kind; }
      { inherit (apiPasswordProgram) name text kind; }
    ]
    ++ [ { inherit (exporterProgram) name text kind; } ];
  etc = builtins.mapAttrs (_: f: f.text) monitoring.environment.etc;
  units = {
    runner-fleet-exporter = {
      inherit (exporterUnit.serviceConfig) ExecStart Restart RestartSec;
      StartLimitBurst = exporterUnit.startLimitBurst;
      StartLimitIntervalSec = exporterUnit.startLimitIntervalSec;
    };
    # nixpkgs' ExecStart: `node_exporter <collector flags> --web.listen-address <addr>:<port> <extraFlags>`
    # (exporters/node.nix; no collector lists or extra flags set), Restart=always (exporters.nix).
    prometheus-node-exporter = {
      ExecStart = "/usr/bin/prometheus-node-exporter --web.listen-address ${node.listenAddress}:${toString node.port}";
      Restart = "always";
    };
  } // lib.optionalAttrs fireactions {
    runner-fleet-scaler = {
      inherit (scalerUnit.serviceConfig) ExecStart Restart RestartSec LoadCredential;
      Requires = scalerUnit.requires;
      StartLimitBurst = scalerUnit.startLimitBurst;
      StartLimitIntervalSec = scalerUnit.startLimitIntervalSec;
    };
  };
  vaultAgent = { pid_file = "/run/vault-agent/runner-fleet.pid"; } // settings;
  vaultAgentUnit = agentModule.systemd.services."vault-agent-runner-fleet";
}
