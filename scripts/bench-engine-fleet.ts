/**
 * The fleets `npm run bench -- --engine` runs under the real Pulumi CLI: existing machines only
 * (no cloud credentials exist here), each a fireactions and Forgejo runner host on its own
 * loopback address (127.1.x.y) where the bench's sshd answers with one pinned host key. Pure:
 * returns the stack config object (keys without `runner-fleet:`).
 */
export interface EngineFleetOptions {
  hosts: number;
  /** The bench sshd's host public key, pinned for every host. */
  hostKey: string;
  /** The throwaway key the bench's ssh-agent holds. */
  authorizedKey: string;
  vaultAddress: string;
  /** KV v2 and AppRole mount names: one pair per stack, so stacks share one OpenBao. */
  mount: string;
  authMount: string;
  batchSize: number;
}

/** 127.1.0.1, 127.1.0.2, ...: all loopback, one per host (existing hosts may not share one). */
export function loopbackAddress(i: number): string {
  const n = i + 1;
  return `127.1.${(n >> 8) & 255}.${n & 255}`;
}

export const EDITED_POOL = "medium";

export function engineFleet(o: EngineFleetOptions): Record<string, any> {
  if (!Number.isInteger(o.hosts) || o.hosts < 1 || o.hosts > 65_000) throw new Error(`engineFleet: hosts must be 1..65000, got ${o.hosts}`);
  const width = Math.max(4, String(o.hosts - 1).length);
  const hosts: Record<string, unknown> = {};
  for (let i = 0; i < o.hosts; i++) {
    hosts[`onprem-${String(i).padStart(width, "0")}`] = {
      provider: "existing", address: loopbackAddress(i), arch: "x86_64", vcpus: 64, memoryMib: 262144, kvm: true,
      hostKey: o.hostKey, roles: ["fireactions", "forgejo-runner"],
      // Alternate pools, so a one-pool edit touches half the hosts (EDITED_POOL).
      pools: [i % 2 === 0 ? "large" : EDITED_POOL], tags: ["bench"],
    };
  }
  return {
    ssh: { authorizedKeys: [o.authorizedKey] },
    github: { organization: "acme", appId: "123456" },
    forgejo: { url: "https://forgejo.example.org" },
    pools: {
      large: { size: "large", labels: ["self-hosted", "fireactions", "linux", "x64"] },
      [EDITED_POOL]: { size: "medium", labels: ["self-hosted", "fireactions", "linux", "x64"] },
    },
    hosts,
    vault: { address: o.vaultAddress, mount: o.mount, authMount: o.authMount },
    deploy: { tool: "deploy-rs", flake: "./nix", sshUser: "root", batchSize: o.batchSize },
  };
}

/** Hosts that run EDITED_POOL: the resources a one-pool edit updates (their `<host>-pools`). */
export function hostsRunningEditedPool(hosts: number): number {
  return Math.floor(hosts / 2);
}
