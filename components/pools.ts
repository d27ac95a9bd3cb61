/**
 * Runner pools: size presets, and the pools.json document each fireactions host reads
 * (format in shared/reference/fireactions.md). Pure functions only.
 */
import type { PoolModel, Preset } from "./model";

export interface PresetSpec {
  vcpus: number;
  memoryMib: number;
  maxRunners: number;
  minRunners: number;
}

/** The seeds' NixOS profiles: small 1/1024/2/1, medium 2/2048/5/2, large 4/4096/10/5. */
export const PRESETS: Record<Preset, PresetSpec> = {
  small: { vcpus: 1, memoryMib: 1024, maxRunners: 2, minRunners: 1 },
  medium: { vcpus: 2, memoryMib: 2048, maxRunners: 5, minRunners: 2 },
  large: { vcpus: 4, memoryMib: 4096, maxRunners: 10, minRunners: 5 },
};

export const POOL_DEFAULTS = {
  runnerName: "runner",
  // The runner image the seeds run (seed 001); override per pool with `image`.
  image: "ghcr.io/thpham/fireactions-images/ubuntu-24.04:latest",
  // GitHub's default runner group. fireactions v0.4.0 sends group_id as is, and an omitted one
  // as 0, which is no group (see docs/upstream.md).
  groupId: 1,
  labels: ["self-hosted", "fireactions"],
  kernelArgs: "console=ttyS0 reboot=k panic=1 pci=off",
};

/** What a user may write for one pool; every field but `size` overrides the preset. */
export interface PoolInput {
  size: Preset;
  maxRunners?: number;
  minRunners?: number;
  vcpus?: number;
  memoryMib?: number;
  labels?: string[];
  runnerName?: string;
  image?: string;
  organization?: string;
  groupId?: number;
  kernelArgs?: string;
}

/**
 * Applies the preset. Labels always carry the size name so workflows can target it, and are
 * de-duplicated in first-seen order so the user's order is kept.
 */
export function resolvePool(name: string, input: PoolInput, organization: string): PoolModel {
  const preset = PRESETS[input.size];
  const maxRunners = input.maxRunners ?? preset.maxRunners;
  const labels = [...new Set([...(input.labels ?? POOL_DEFAULTS.labels), input.size])];
  return {
    name,
    size: input.size,
    maxRunners,
    // A preset's minimum never exceeds an explicit, smaller maximum.
    minRunners: input.minRunners ?? Math.min(preset.minRunners, maxRunners),
    vcpus: input.vcpus ?? preset.vcpus,
    memoryMib: input.memoryMib ?? preset.memoryMib,
    labels,
    runnerName: input.runnerName ?? POOL_DEFAULTS.runnerName,
    image: input.image ?? POOL_DEFAULTS.image,
    organization: input.organization ?? organization,
    groupId: input.groupId ?? POOL_DEFAULTS.groupId,
    kernelArgs: input.kernelArgs ?? POOL_DEFAULTS.kernelArgs,
  };
}

/**
 * One entry of pools.json, keys in a fixed order. No imagePullPolicy: fireactions v0.4.0 never
 * reads it (it pulls an image only when containerd lacks it), so the host renderer writes that.
 */
function poolDocument(pool: PoolModel) {
  return {
    name: pool.name,
    maxRunners: pool.maxRunners,
    minRunners: pool.minRunners,
    runner: {
      name: pool.runnerName,
      image: pool.image,
      organization: pool.organization,
      labels: pool.labels,
      groupId: pool.groupId ?? POOL_DEFAULTS.groupId,
    },
    firecracker: {
      vcpuCount: pool.vcpus,
      memSizeMib: pool.memoryMib,
      kernelArgs: pool.kernelArgs,
    },
  };
}

/**
 * Renders a host's pools.json: sorted by pool name, two-space indent, trailing newline, so the
 * same pools always give the same bytes and a diff shows only a real change.
 */
export function renderPoolsJson(pools: PoolModel[]): string {
  const sorted = [...pools].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return `${JSON.stringify(sorted.map(poolDocument), null, 2)}\n`;
}
