/**
 * The validated fleet model: what `config.ts` produces from stack config and every component
 * consumes. Plain data only, so pure functions can be tested without the Pulumi runtime.
 */
export const PROVIDERS = ["aws", "azure", "hetzner", "digitalocean", "existing"] as const;
export const ROLES = ["fireactions", "forgejo-runner", "gitea-runner", "gitlab-runner", "cache"] as const;
export const ARCHES = ["x86_64", "aarch64"] as const;
export const PRESETS = ["small", "medium", "large"] as const;
export const CLOUDS = ["aws", "azure", "hetzner", "digitalocean"] as const;
export const DEPLOY_TOOLS = ["deploy-rs", "colmena"] as const;
/** deploy.remoteBuild: auto builds on the target when its arch differs from the deploy machine's. */
export const REMOTE_BUILDS = ["auto", "always", "never"] as const;
/** Secrets that can live only in Vault (`vault.externalSecrets`) instead of stack config. */
export const SECRET_NAMES = ["githubApp", "giteaRunnerToken", "gitlabRunnerToken", "cacheSigningKey"] as const;

export type Provider = (typeof PROVIDERS)[number];
export type Role = (typeof ROLES)[number];
export type Arch = (typeof ARCHES)[number];
export type Preset = (typeof PRESETS)[number];
export type Cloud = (typeof CLOUDS)[number];
export type DeployTool = (typeof DEPLOY_TOOLS)[number];
export type RemoteBuild = (typeof REMOTE_BUILDS)[number];
export type SecretName = (typeof SECRET_NAMES)[number];

/** A pool with its preset applied: every field the host's pools.json needs. */
export interface PoolModel {
  name: string;
  size: Preset;
  maxRunners: number;
  minRunners: number;
  vcpus: number;
  memoryMib: number;
  labels: string[];
  runnerName: string;
  image: string;
  organization: string;
  groupId: number;
  kernelArgs: string;
}

export interface RegistryMirrorModel {
  enable: boolean;
  /**
   * Upstream host -> its URL and the mirror's port on the VM gateway; credentials: the mirror
   * logs in with the username/password vault-agent renders from Vault (vault-paths.ts).
   */
  upstreams: Record<string, { url: string; port: number; credentials?: true }>;
  maxSizeGib: number;
  pruneSchedule: string;
}

export type DiskPurpose = "containerd" | "registry-cache" | "mount";

export interface DataDisk {
  name: string;
  purpose: DiskPurpose;
  /** A stable path to the disk on the host. */
  device: string;
  /** Where it is mounted (registry-cache: the mirror's storage; containerd: none, the pool takes it whole). */
  mountPoint?: string;
  sizeGib: number;
}

export interface DataVolume {
  name: string;
  sizeGib: number;
  deviceName: string;
  type: "gp3" | "io2" | "st1";
  iops?: number;
  throughput?: number;
  purpose?: DiskPurpose;
  mountPoint?: string;
}

interface HostBase {
  name: string;
  roles: Role[];
  pools: string[];
  tags: string[];
  /** Protect the instance from deletion (Pulumi `protect`). */
  protect: boolean;
  /** Replace the instance when its image changes (off: hosts move forward by deploys). */
  replaceOnImageChange: boolean;
  /** Activate new configurations on next boot instead of switching live. */
  boot: boolean;
  /** The registry mirror on this host (fireactions hosts only, else null). */
  registryMirror: RegistryMirrorModel | null;
  /** Data disks with a purpose, and where they go. */
  dataDisks: DataDisk[];
  /** Encrypt the thin pool on a containerd data disk with a per-boot key. */
  thinPoolEncrypt: boolean;
  /** Activate with `switch-to-configuration test`: live now, no boot entry (a reboot reverts it). */
  trial: boolean;
  arch: Arch;
  vcpus: number;
  memoryMib: number;
  kvm: boolean;
  /** nix: started from our uploaded image; stock: a vendor image, installed by nixos-anywhere. */
  image: "nix" | "stock";
}

export interface AwsHost extends HostBase {
  provider: "aws";
  instanceType: string;
  region: string;
  availabilityZone?: string;
  subnetId?: string;
  nestedVirtualization: boolean;
  rootVolumeGib: number;
  dataVolumes: DataVolume[];
}

export interface AzureHost extends HostBase {
  provider: "azure";
  size: string;
  location: string;
  osDiskGib: number;
  dataDiskGib?: number;
}

export interface HetznerHost extends HostBase {
  provider: "hetzner";
  serverType: string;
  location: string;
  placementGroup?: string;
}

export interface DigitalOceanHost extends HostBase {
  provider: "digitalocean";
  size: string;
  region: string;
}

export interface ExistingHost extends HostBase {
  provider: "existing";
  address: string;
  privateAddress?: string;
  /** Install NixOS with nixos-anywhere (wipes the disk) - only when asked. */
  install: boolean;
  /** The disk disko partitions at install (required with install: true), e.g. /dev/disk/by-id/... */
  installDisk?: string;
  /** The machine's SSH host public key (`type base64`), pinned for every connection; else trusted on first use. */
  hostKey?: string;
}

export type HostModel = AwsHost | AzureHost | HetznerHost | DigitalOceanHost | ExistingHost;

export interface ImageSourceModel {
  cloud: Cloud;
  arch: Arch;
  /** The store path the image lives in (resolved from a result link). */
  storePath: string;
  /** The 32-character Nix store hash: the image's content address. */
  hash: string;
  /** The image file inside the store path, when it is known (it is not in offline plans). */
  file?: string;
  format: "vhd" | "raw" | "qcow2" | "vhdx" | "vmdk";
  compression?: "gzip" | "bzip2" | "xz" | "zstd";
}

/** A binary cache outside the stack that every host substitutes from. */
export interface ExtraSubstituter {
  url: string;
  publicKey: string;
  /** Nix's substituter priority (lower is asked first); the cache's own nix-cache-info otherwise. */
  priority?: number;
}

export interface CacheModel {
  /** Hosts substitute from the stack's cache hosts (default: on when there is one). */
  useFleetCache: boolean;
  /** The public half of cacheSigningKey (`name:base64`); derived from the secret when unset. */
  publicKey?: string;
  /** DNS name per cache host with a publicly trusted certificate: only those hosts are substituters. */
  domains: Record<string, string>;
  extraSubstituters: ExtraSubstituter[];
  /** nix.conf connect-timeout, seconds: how long a host waits for a cache that is down. */
  connectTimeout: number;
  /** Push each switched host's system closure to the cache hosts (components/cache-push.ts). */
  push: boolean;
}

export interface FleetModel {
  stack: string;
  ssh: {
    authorizedKeys: string[];
    adminCidrs: string[];
    allowFromAnywhere: boolean;
    /** Name or id of an existing Hetzner SSH key to use instead of creating one. */
    hetznerKey?: string;
    /** Id or fingerprint of an existing DigitalOcean SSH key to use instead of creating one. */
    digitaloceanKey?: string;
  };
  github?: { organization: string; appId?: string; url: string };
  forgejo?: { url: string; labels: string[] };
  gitea?: { url: string; labels: string[] };
  /** GitLab instance the gitlab-runner role's runners poll. */
  gitlab?: { url: string };
  /** The fleet's own Nix cache and other substituters (components/fleet-cache.ts). */
  cache: CacheModel;
  pools: Record<string, PoolModel>;
  /** Hosts sorted by name: order in config never matters. */
  hosts: HostModel[];
  images: ImageSourceModel[];
  vault: {
    address: string;
    mount: string;
    createMount: boolean;
    authMount: string;
    createAuthMount: boolean;
    wrapTtl: string;
    secretIdTtl: string;
    tokenTtl: string;
    externalSecrets: SecretName[];
    /** true, or the hosts whose policy and AppRole keep the pre-#24 names (vaultNames). */
    legacyNames: boolean | string[];
    /** Hosts whose AppRole and tokens are not bound to their addresses (behind NAT). */
    unboundHosts: string[];
  };
  deploy: {
    tool: DeployTool;
    flake: string;
    sshUser: string;
    batchSize: number;
    confirmTimeout: number;
    activationTimeout: number;
    readyTimeoutMinutes: number;
    installTimeoutMinutes: number;
    switchTimeoutMinutes: number;
    /** Where systems are built: auto (on the target when its arch differs from the deploy machine's), always, never. */
    remoteBuild: RemoteBuild;
    /** How long a drain waits for running jobs before it fails (or, opted in, proceeds). */
    drainTimeoutMinutes: number;
    drainProceedOnTimeout: boolean;
  };
  capacity: { reserveVcpus: number; reserveMemoryMib: number };
  unsafe: { githubAppKeyInUserData: boolean };
  /** Networks allowed to scrape the hosts' exporters (nix/lib/monitoring.json ports). */
  monitoring: { allowCidrs: string[] };
  /** Things that are allowed but worth a second look; printed by plan and `pulumi up`. */
  warnings: string[];
}
