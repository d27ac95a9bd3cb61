# The data disks a host is given, used for their purpose (#23). host.dataDisks comes from
# inventory.json (components/inventory.ts): [{ name, purpose, device, mountPoint? }], device a
# stable path (Azure's LUN link, EBS's NVMe serial link). Purposes:
#   containerd      raw: the devmapper thin pool fireactions' VM disks live in (roles/fireactions.nix
#                   runs runner-fleet-thinpool on it, encrypted with a per-boot key unless
#                   host.thinPoolEncrypt is false)
#   registry-cache  ext4 at the registry mirror's storage (modules/registry-mirror.nix)
#   mount           ext4 at the user's mountPoint
# A disk is formatted only when it holds nothing (runner-fleet-data-disk); the units run before
# runner-fleet-data-disks.target, which the consumers order after.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (config.runnerFleet) host;
  disks = host.dataDisks or [ ];
  diskTool = pkgs.callPackage ../pkgs/runner-fleet-data-disk.nix { };
  mountOf = d: if d.purpose == "registry-cache" then "/var/lib/runner-fleet/registry-mirror" else d.mountPoint;
  filesystems = builtins.filter (d: d.purpose != "containerd") disks;
  poolDisks = builtins.filter (d: d.purpose == "containerd") disks;
in
{
  options.runnerFleet.dataDisks = {
    thinPoolDisk = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      readOnly = true;
      default = if poolDisks == [ ] then null else (builtins.head poolDisks).device;
      description = "The disk the containerd thin pool takes whole, if the host has one.";
    };
    thinPoolEncrypt = lib.mkOption {
      type = lib.types.bool;
      readOnly = true;
      default = host.thinPoolEncrypt or true;
      description = "Encrypt the thin pool's disk with a key made at each boot (runner disks are throwaway).";
    };
  };

  config = {
    systemd.targets.runner-fleet-data-disks = {
      description = "runner-fleet data disks formatted and mounted";
      wantedBy = [ "multi-user.target" ];
    };
    systemd.services = builtins.listToAttrs (map (d: {
      name = "runner-fleet-data-disk-${d.name}";
      value = {
        description = "data disk ${d.name} (${d.purpose}) at ${mountOf d}";
        requiredBy = [ "runner-fleet-data-disks.target" ];
        before = [ "runner-fleet-data-disks.target" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = lib.escapeShellArgs [
            (lib.getExe diskTool) "--device" d.device "--mount" (mountOf d) "--label" "rf-${d.name}"
          ];
        };
      };
    }) filesystems);
  };
}
