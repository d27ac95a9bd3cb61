/**
 * Capacity: do a host's pools fit on it at full scale? Every runner of every pool may run at
 * once (maxRunners), and the host keeps a reserve for itself (Nix, containerd, the runner agent).
 */
import type { HostModel, PoolModel } from "./model";

export interface Reserve {
  reserveVcpus: number;
  reserveMemoryMib: number;
}

export interface CapacityFigures {
  /** vCPUs and MiB all runners use at maxRunners. */
  runnerVcpus: number;
  runnerMemoryMib: number;
  /** What the host offers to runners after the reserve. */
  availableVcpus: number;
  availableMemoryMib: number;
  maxRunners: number;
}

export function capacityOf(host: Pick<HostModel, "vcpus" | "memoryMib">, pools: PoolModel[], reserve: Reserve): CapacityFigures {
  return {
    runnerVcpus: pools.reduce((sum, p) => sum + p.maxRunners * p.vcpus, 0),
    runnerMemoryMib: pools.reduce((sum, p) => sum + p.maxRunners * p.memoryMib, 0),
    availableVcpus: Math.max(0, host.vcpus - reserve.reserveVcpus),
    availableMemoryMib: Math.max(0, host.memoryMib - reserve.reserveMemoryMib),
    maxRunners: pools.reduce((sum, p) => sum + p.maxRunners, 0),
  };
}

/** Problems, one sentence each; empty when the pools fit. */
export function checkCapacity(host: Pick<HostModel, "vcpus" | "memoryMib">, pools: PoolModel[], reserve: Reserve): string[] {
  if (pools.length === 0) return [];
  const c = capacityOf(host, pools, reserve);
  const breakdown = (unit: (p: PoolModel) => number) => pools.map((p) => `${p.name} ${p.maxRunners} x ${unit(p)}`).join(" + ");
  const findings: string[] = [];
  if (c.runnerVcpus > c.availableVcpus) {
    findings.push(`need ${c.runnerVcpus} vCPUs at maxRunners (${breakdown((p) => p.vcpus)}) but the host has ${c.availableVcpus} after reserving ${reserve.reserveVcpus} of ${host.vcpus}`);
  }
  if (c.runnerMemoryMib > c.availableMemoryMib) {
    findings.push(`need ${c.runnerMemoryMib} MiB at maxRunners (${breakdown((p) => p.memoryMib)}) but the host has ${c.availableMemoryMib} MiB after reserving ${reserve.reserveMemoryMib} of ${host.memoryMib}`);
  }
  return findings;
}
