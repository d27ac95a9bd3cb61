# The registry pull-through mirror on fireactions hosts (#23): one distribution registry in
# proxy mode per upstream (distribution's proxy section takes one remoteurl), on the VM
# bridge's gateway only, storage on the registry-cache data disk when the host has one
# (modules/data-disks.nix mounts it at storageDir). The guard (lib/nftables-rules.nix,
# mirrorPorts) opens exactly these ports from the VMs; render-fireactions-config puts the VMs'
# containerd/BuildKit/Docker mirror configs into every pool's MMDS metadata.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) host;
  # host.registryMirror comes from inventory.json (components/inventory.ts); absent = off.
  mirror = host.registryMirror or { enable = false; };
  enabled = builtins.elem "fireactions" host.roles && (mirror.enable or false);
  helper = pkgs.callPackage ../pkgs/runner-fleet-registry-mirror.nix { };
  vmNet = import ../lib/vm-network.nix;
  paths = import ../lib/host-paths.nix;
  storageDir = "/var/lib/runner-fleet/registry-mirror";
  upstreams = mirror.upstreams or { };
  mirrorConfig = pkgs.writeText "registry-mirror.json" (builtins.toJSON {
    listen = vmNet.gateway;
    inherit storageDir upstreams;
    # vault-agent renders the username/password of each upstream with credentials = true here
    # (components/vault-paths.ts secretFilesFor, in the inventory's secrets list).
    credentialsDir = "/run/secrets/registry-mirror";
  });
  # systemd unit names: registry-mirror-docker-io for docker.io.
  unitName = name: "registry-mirror-${lib.replaceStrings [ "." ] [ "-" ] name}";
  helperCmd = args: lib.escapeShellArgs ([ (lib.getExe helper) "--config" "${mirrorConfig}" ] ++ args);
in
{
  options.runnerFleet.registryMirror = {
    ports = lib.mkOption {
      type = lib.types.listOf lib.types.port;
      readOnly = true;
      default = if enabled then lib.sort lib.lessThan (lib.mapAttrsToList (_: u: u.port) upstreams) else [ ];
      description = "The mirrors' TCP ports on the gateway; security.nix opens them from the VMs.";
    };
    vmMetadata = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      readOnly = true;
      default =
        if enabled then
          pkgs.runCommand "registry-mirror-vm.json" { } "${helperCmd [ "vm" ]} > $out"
        else
          null;
      description = "The VMs' mirror configs (JSON), for render-fireactions-config --vm-metadata.";
    };
  };

  config = lib.mkIf enabled {
    # The gateway address appears with the first VM (CNI creates the bridge), after boot: the
    # registries bind it before it exists.
    boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind" = 1;

    systemd.tmpfiles.rules = [ "d ${storageDir} 0750 root root -" ];

    systemd.services =
      lib.mapAttrs' (
        name: up:
        let
          # A login from Vault: start once runner-fleet-secrets has seen vault-agent's files, as
          # the runners do (Wants: a re-seed restarting it must not cut pulls; new credentials
          # are read at the mirror's next start). First boot: skipped until bootstrap starts
          # runner-fleet-secrets, which pulls it in.
          login = up.credentials or false;
        in
        lib.nameValuePair (unitName name) {
          description = "registry pull-through mirror of ${name}";
          wantedBy = [ "multi-user.target" ] ++ lib.optional login "runner-fleet-secrets.service";
          before = [ "fireactions.service" ];
          # The registry-cache disk, when there is one, is mounted there first (data-disks.nix).
          wants = [ "runner-fleet-data-disks.target" ] ++ lib.optional login "runner-fleet-secrets.service";
          after = [ "runner-fleet-data-disks.target" ] ++ lib.optional login "runner-fleet-secrets.service";
          unitConfig = lib.optionalAttrs login { ConditionPathExists = paths.secretIdFile; };
          startLimitIntervalSec = 300;
          startLimitBurst = 5;
          serviceConfig = {
            # Credentials go into the rendered file (0600, /run), never argv or env.
            ExecStartPre = helperCmd [ "registry" name "--out" "/run/runner-fleet/registry-mirror/${name}.json" ];
            ExecStart = "${lib.getExe pkgs.distribution} serve /run/runner-fleet/registry-mirror/${name}.json";
            Restart = "on-failure";
            RestartSec = 5;
            MemoryMax = "1G";
          };
        }
      ) upstreams
      // {
        # distribution has no size limit: empty an upstream's cache when it grows past maxSizeGib.
        registry-mirror-prune = {
          description = "empty registry mirror caches over their size limit";
          serviceConfig.Type = "oneshot";
          script = lib.concatMapStrings (name: ''
            if ${helperCmd [ "over" name "--max-gib" (toString mirror.maxSizeGib) ]}; then
              systemctl stop ${unitName name}
              ${helperCmd [ "prune" name "--max-gib" (toString mirror.maxSizeGib) ]}
              systemctl start ${unitName name}
            fi
          '') (lib.attrNames upstreams);
        };
      };

    systemd.timers.registry-mirror-prune = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = mirror.pruneSchedule or "hourly";
        RandomizedDelaySec = "5m";
      };
    };
  };
}
