/**
 * Synthetic fleets for `npm run bench`: N hosts mixing every provider, role and pool, each one
 * valid under components/config.ts (KVM for fireactions, pools that fit, images for the clouds
 * that boot from ours). Pure: returns the stack config object; the bench writes it to a file.
 */
import { createHash } from "node:crypto";
import { SSH_KEY } from "../test/support/fixtures";

/** One kind of host; the fleet cycles through these so every size from 10 up has all of them. */
interface Template {
  prefix: string;
  host: (i: number) => Record<string, unknown>;
  /** The image this host boots from, when it is one of ours (`images.<cloud>.<arch>`). */
  image?: { cloud: "aws" | "azure" | "hetzner" | "digitalocean"; arch: "x86_64" | "aarch64" };
}

const HETZNER_LOCATIONS = ["fsn1", "nbg1", "hel1"];
const DO_REGIONS = ["fra1", "ams3", "nyc3"];

// Instance types come from components/catalog.ts; the pools listed fit each one at maxRunners
// after the default reserve (1 vCPU, 2048 MiB).
export const TEMPLATES: Template[] = [
  {
    // 96 vCPU metal: large (10 x 4) + small (2 x 1) = 42 vCPUs.
    prefix: "aws-metal",
    host: (i) => ({
      provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["large", "small"], tags: ["bench", "metal"],
      ...(i % 2 === 0 ? { dataVolumes: { "nix-cache": { sizeGib: 500, deviceName: "/dev/sdf" } } } : {}),
    }),
    image: { cloud: "aws", arch: "x86_64" },
  },
  {
    // 16 vCPU / 32 GiB with nested virtualization: medium (5 x 2 vCPU, 5 x 2048 MiB).
    prefix: "aws-nested",
    host: () => ({ provider: "aws", instanceType: "c8i.4xlarge", roles: ["fireactions"], pools: ["medium"], tags: ["bench"] }),
    image: { cloud: "aws", arch: "x86_64" },
  },
  {
    // Graviton metal, 64 vCPU / 128 GiB: large-arm (40 vCPU) + small-arm (4 x 1).
    prefix: "aws-arm",
    host: () => ({ provider: "aws", instanceType: "c7g.metal", roles: ["fireactions"], pools: ["large-arm", "small-arm"], tags: ["bench", "metal"] }),
    image: { cloud: "aws", arch: "aarch64" },
  },
  {
    prefix: "az",
    host: () => ({ provider: "azure", size: "Standard_D16ds_v5", roles: ["fireactions"], pools: ["medium"], tags: ["bench"], dataDiskGib: 128 }),
    image: { cloud: "azure", arch: "x86_64" },
  },
  {
    prefix: "az-small",
    host: () => ({ provider: "azure", size: "Standard_D8s_v3", roles: ["fireactions"], pools: ["small"], tags: ["bench"] }),
    image: { cloud: "azure", arch: "x86_64" },
  },
  {
    prefix: "hz-cache",
    host: (i) => ({
      provider: "hetzner", serverType: "ccx33", location: HETZNER_LOCATIONS[i % 3], roles: ["cache"], tags: ["bench"],
      ...(i % 2 === 0 ? { placementGroup: `spread-${HETZNER_LOCATIONS[i % 3]}` } : {}),
    }),
  },
  {
    prefix: "hz-forgejo",
    host: (i) => ({ provider: "hetzner", serverType: "cx32", location: HETZNER_LOCATIONS[i % 3], image: "nix", roles: ["forgejo-runner"], tags: ["bench"] }),
    image: { cloud: "hetzner", arch: "x86_64" },
  },
  {
    prefix: "do-gitea",
    host: (i) => ({ provider: "digitalocean", size: "s-4vcpu-8gb", region: DO_REGIONS[i % 3], roles: ["gitea-runner"], tags: ["bench"] }),
  },
  {
    prefix: "do-gitlab",
    host: (i) => ({ provider: "digitalocean", size: "c-8", region: DO_REGIONS[i % 3], image: "nix", roles: ["gitlab-runner"], tags: ["bench"] }),
    image: { cloud: "digitalocean", arch: "x86_64" },
  },
  {
    // On-prem machine with /dev/kvm: large (40 vCPU) on 64 vCPUs.
    prefix: "onprem",
    host: (i) => ({
      provider: "existing", address: existingAddress(i), arch: "x86_64", vcpus: 64, memoryMib: 262144, kvm: true,
      hostKey: benchHostKey(i), roles: ["fireactions", "forgejo-runner"], pools: ["large"], tags: ["bench", "onprem"],
    }),
  },
];

/** A well-formed ed25519 host public key per index (pinned, as a real on-prem config would). */
function benchHostKey(i: number): string {
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
  const key = createHash("sha256").update(`onprem-${i}`).digest();
  return `ssh-ed25519 ${Buffer.concat([u32(11), Buffer.from("ssh-ed25519"), u32(32), key]).toString("base64")}`;
}

/** 10.a.b.c, unique per index (existing hosts may not share an address). */
function existingAddress(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

/** A syntactically valid store path (nix base32 hash) per cloud and arch; stable across runs. */
export function benchStorePath(cloud: string, arch: string): string {
  const alphabet = "0123456789abcdfghijklmnpqrsvwxyz";
  const bytes = createHash("sha256").update(`${cloud}/${arch}`).digest();
  const hash = Array.from(bytes, (b) => alphabet[b % 32]).join("");
  return `/nix/store/${hash}-nixos-bench-${cloud}-image-25.11-${arch}-linux`;
}

/** Host names: the template's prefix and a zero-padded index, so no name is another's prefix. */
export function benchHostName(prefix: string, i: number, width = 4): string {
  return `${prefix}-${String(i).padStart(width, "0")}`;
}

/**
 * The stack config (top-level keys without `runner-fleet:`) for a fleet of `hosts` hosts. Host i
 * uses template i mod 10, so 1 host is one AWS metal fireactions host and 10+ hosts mix them all.
 */
export function benchFleet(hosts: number): Record<string, any> {
  if (!Number.isInteger(hosts) || hosts < 1) throw new Error(`benchFleet: hosts must be a positive integer, got ${hosts}`);
  const width = Math.max(4, String(hosts - 1).length);
  const hostMap: Record<string, unknown> = {};
  const images: Record<string, Record<string, { path: string }>> = {};
  for (let i = 0; i < hosts; i++) {
    const t = TEMPLATES[i % TEMPLATES.length];
    hostMap[benchHostName(t.prefix, i, width)] = t.host(i);
    if (t.image) {
      images[t.image.cloud] ??= {};
      images[t.image.cloud][t.image.arch] = { path: benchStorePath(t.image.cloud, t.image.arch) };
    }
  }
  return {
    ssh: { authorizedKeys: [SSH_KEY], adminCidrs: ["198.51.100.0/24", "2001:db8:100::/48"] },
    github: { organization: "acme", appId: "123456" },
    forgejo: { url: "https://forgejo.example.org" },
    gitea: { url: "https://gitea.example.org" },
    gitlab: { url: "https://gitlab.example.org" },
    // Every cache host has a trusted name, so hosts substitute from them and deploys push.
    cache: { domains: Object.fromEntries(Object.keys(hostMap).filter((n) => n.startsWith("hz-cache-")).map((n) => [n, `${n}.cache.example.org`])) },
    pools: {
      small: { size: "small", labels: ["self-hosted", "fireactions", "linux", "x64"] },
      medium: { size: "medium", labels: ["self-hosted", "fireactions", "linux", "x64"] },
      large: { size: "large", labels: ["self-hosted", "fireactions", "linux", "x64"] },
      "small-arm": { size: "small", labels: ["self-hosted", "fireactions", "linux", "arm64"] },
      "large-arm": { size: "large", labels: ["self-hosted", "fireactions", "linux", "arm64"] },
    },
    hosts: hostMap,
    images,
    vault: { address: "https://vault.example.org:8200", mount: "ci" },
    deploy: { tool: "deploy-rs", flake: "./nix", sshUser: "deploy", batchSize: 10 },
  };
}
