/**
 * The registry mirror and data disks of one host, as nix/ reads them from inventory.json
 * (nix/modules/registry-mirror.nix, nix/modules/data-disks.nix). Pure.
 */
import type { FleetConfig, HostConfig } from "./config-schema";
import type { DataDisk, DiskPurpose, RegistryMirrorModel } from "./model";

/** Where the mirror keeps its cache (modules/registry-mirror.nix storageDir). */
export const REGISTRY_CACHE_DIR = "/var/lib/runner-fleet/registry-mirror";
/** Azure's udev rules link data disks by LUN; the one data disk we attach is LUN 0. */
export const AZURE_DATA_DISK = "/dev/disk/azure/scsi1/lun0";

/** The host's mirror: the fleet's, with the host's fields over it; null off fireactions hosts. */
export function registryMirrorFor(fleet: FleetConfig["registryMirror"], host: HostConfig): RegistryMirrorModel | null {
  if (!host.roles.includes("fireactions")) return null;
  const m = { ...fleet, ...(host.registryMirror ?? {}) };
  const names = Object.keys(m.upstreams).sort();
  return {
    enable: m.enable,
    upstreams: Object.fromEntries(names.map((n, i) => [n, { url: m.upstreams[n], port: m.firstPort + i, ...(m.credentials.includes(n) ? { credentials: true } : {}) }])),
    maxSizeGib: m.maxSizeGib,
    pruneSchedule: m.pruneSchedule,
  };
}

/** The host's data disks that have a purpose, by name. */
export function dataDisksFor(host: HostConfig): DataDisk[] {
  const disks: DataDisk[] = [];
  const mountOf = (purpose: DiskPurpose, mountPoint?: string) =>
    purpose === "registry-cache" ? { mountPoint: REGISTRY_CACHE_DIR } : purpose === "mount" && mountPoint ? { mountPoint } : {};
  if (host.provider === "aws") {
    for (const [name, v] of Object.entries(host.dataVolumes).sort(([a], [b]) => a.localeCompare(b))) {
      if (!v.purpose) continue;
      disks.push({ name, purpose: v.purpose, device: v.deviceName, sizeGib: v.sizeGib, ...mountOf(v.purpose, v.mountPoint) });
    }
  }
  if (host.provider === "azure" && host.dataDiskGib && host.dataDiskPurpose) {
    disks.push({ name: "data", purpose: host.dataDiskPurpose, device: AZURE_DATA_DISK, sizeGib: host.dataDiskGib, ...mountOf(host.dataDiskPurpose, host.dataDiskMountPoint) });
  }
  return disks;
}
