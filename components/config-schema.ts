/**
 * The stack config's shape: one zod schema per part of `runner-fleet:<key>`, the types parsed
 * from it, and what the cross-field rules are given. Kept apart from config.ts (parsing and
 * messages) and config-rules.ts (rules across keys) so both import it and neither imports the
 * other.
 */
import { z } from "zod";
import { HETZNER_LOCATIONS } from "./catalog";
import { checkSshKey, durationSeconds, MAX_DURATION_SECONDS, nixPublicKeyProblem, normalAddress, normalCidr } from "./config-values";
import {
  ARCHES, CLOUDS, DEPLOY_TOOLS, PRESETS, REMOTE_BUILDS, ROLES, SECRET_NAMES,
  type Cloud,
} from "./model";

// ---------------------------------------------------------------------------------------------
// Field schemas

/** Host and pool names become hostnames, Vault paths and resource names. */
export const Name = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
  error: "must be lowercase letters, digits and dashes (1-63 characters, no leading or trailing dash)",
});
/** An integer within bounds: every number has an upper bound, so none can overflow or hang a loop. */
const int = (min: number, max: number) => z.number().int().min(min).max(max);
const Count = int(0, 1000);
const Positive = int(1, 1000);
/** A problem from a value parser, or nothing. */
const check = <T extends z.ZodType<string>>(schema: T, problem: (value: string) => string | undefined) =>
  schema.superRefine((value, ctx) => {
    const found = problem(value);
    if (found) ctx.addIssue({ code: "custom", message: found, input: value });
  });
const Cidr = check(z.string(), (v) => { const r = normalCidr(v); return "problem" in r ? r.problem : undefined; });
const Address = check(z.string(), (v) => { const r = normalAddress(v); return "problem" in r ? r.problem : undefined; });
/** Runner services and Vault: https, no credentials in the URL (they would land in every host.json). */
const urlProblem = (https: "always" | "unless-loopback") => (value: string): string | undefined => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return https === "always" ? "must be an https URL" : "must be an http(s) URL";
  }
  if (url.username || url.password) return "must not carry credentials (user:password@): they would be written into every host's host.json";
  if (url.protocol === "https:") return undefined;
  const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
  if (url.protocol === "http:" && https === "unless-loopback" && loopback) return undefined;
  if (url.protocol !== "http:") return "must be an https URL";
  return https === "unless-loopback"
    ? "must use https: hosts send their secret_id and receive runner credentials over it"
    : "must use https: runner registration tokens and job logs would cross the network in clear";
};
const HttpsUrl = check(z.string(), urlProblem("always"));
const VaultUrl = check(z.string(), urlProblem("unless-loopback"));
const duration = (minSeconds: number) => check(z.string(), (v) => {
  const seconds = durationSeconds(v);
  if (seconds === undefined) return 'must be a duration such as "90s", "30m" or "2h"';
  if (seconds < minSeconds) return `must be at least ${minSeconds}s`;
  if (seconds > MAX_DURATION_SECONDS) return `must be at most ${MAX_DURATION_SECONDS / 3600}h`;
  return undefined;
});
const SshKey = check(z.string(), checkSshKey);
/** A file inside an image's store path: one plain name, never a path that climbs out of it. */
const PlainFileName = z.string().regex(/^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}$/, {
  error: "must be a plain file name inside the image's store path (no /, not starting with .)",
});
/**
 * A GitHub organization login: fireactions puts it into API paths (/orgs/<org>/...), so nothing
 * that could climb or break a path segment gets through.
 */
const GithubOrganization = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,38}$/, { error: "must be a GitHub organization name (letters, digits and dashes, at most 39)" });
const Label = z.string().min(1, { error: "must not be empty" });
const uniqueList = <T extends z.ZodType>(item: T) =>
  z.array(item).refine((xs) => new Set(xs).size === xs.length, { error: "lists the same value twice" });

export const PoolSchema = z.strictObject({
  size: z.enum(PRESETS).default("medium"),
  // The host's pools.json renderer refuses a pool that may run no runner at all.
  maxRunners: Positive.optional(),
  minRunners: Count.optional(),
  /** Firecracker's limit on vCPUs per microVM. */
  vcpus: int(1, 32).optional(),
  memoryMib: int(128, 1024 * 1024).optional(),
  labels: uniqueList(Label).optional(),
  runnerName: z.string().min(1).optional(),
  image: z.string().min(1).optional(),
  // fireactions v0.4.0 never reads a pull policy (docs/upstream.md); refuse it rather than pretend.
  imagePullPolicy: z.unknown().refine((v) => v === undefined, { error: "is not supported: fireactions v0.4.0 pulls the image only when it is missing and reads no pull policy; remove this key" }).optional(),
  organization: GithubOrganization.optional(),
  groupId: int(1, 2 ** 31 - 1).optional(),
  // fireactions' Firecracker SDK writes ip= itself (address, gateway, DNS from CNI) and refuses a
  // CNI interface next to a given one (docs/upstream.md), so the VM would not start.
  kernelArgs: z
    .string()
    .min(1)
    .refine((args) => !/(^|\s)ip=/.test(args), { error: "must not set ip=: the VM's address, gateway and DNS come from CNI through ip=" })
    .optional(),
});

/** A registry host name as image references spell it: docker.io, ghcr.io, registry.example.com:5000. */
const RegistryHost = z.string().regex(/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$/, { error: "must be a registry host name such as ghcr.io" });
/** What runner VMs pull through by default (the seed's and fireactions' docs' list). */
export const DEFAULT_REGISTRY_UPSTREAMS: Record<string, string> = {
  "docker.io": "https://registry-1.docker.io",
  "gcr.io": "https://gcr.io",
  "ghcr.io": "https://ghcr.io",
  "quay.io": "https://quay.io",
};
const registryMirrorFields = {
  enable: z.boolean(),
  /** Upstream registry host -> its URL; one distribution registry (and port) each. */
  upstreams: z.record(RegistryHost, check(z.string(), (v) => {
    const found = urlProblem("always")(v);
    return found?.startsWith("must use https") ? "must use https: a mirror that pulls in clear can be fed any image" : found;
  })),
  /** The first upstream (by name) listens here on the VM gateway, the next one port higher, ... */
  firstPort: int(1024, 65535),
  /** Per upstream; distribution has no limit of its own, so a timer empties a cache that outgrows it. */
  maxSizeGib: int(1, 65536),
  /** systemd OnCalendar of that check. */
  pruneSchedule: z.string().regex(/^(minutely|hourly|daily|weekly)$|^\*-\*-\* [0-9]{2}:[0-9]{2}(:[0-9]{2})?$/, { error: 'must be hourly, daily, weekly or "*-*-* HH:MM"' }),
  /**
   * Upstreams the mirror logs in to. Only the names: the username/password live in Vault KV
   * (vault-paths.ts kvPaths.registryMirror, written with `bao kv put`), never in config or state.
   */
  credentials: z.array(RegistryHost),
};
export const RegistryMirrorSchema = z.strictObject({
  enable: registryMirrorFields.enable.default(true),
  upstreams: registryMirrorFields.upstreams.default(DEFAULT_REGISTRY_UPSTREAMS),
  firstPort: registryMirrorFields.firstPort.default(5001),
  maxSizeGib: registryMirrorFields.maxSizeGib.default(50),
  pruneSchedule: registryMirrorFields.pruneSchedule.default("hourly"),
  credentials: registryMirrorFields.credentials.default([]),
});
/** hosts.<name>.registryMirror: any field, over the fleet-wide one. */
const RegistryMirrorOverride = z.strictObject(registryMirrorFields).partial();
/** What a data disk holds (nix/modules/data-disks.nix). */
export const DISK_PURPOSES = ["containerd", "registry-cache", "mount"] as const;
const MountPoint = z.string().regex(/^\/[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/, { error: "must be an absolute path such as /srv/data" })
  .refine((p) => !p.split("/").includes(".."), { error: "must not contain .." });

const hostCommon = {
  roles: uniqueList(z.enum(ROLES)).min(1, { error: "must name at least one role" }),
  pools: uniqueList(z.string()).default([]),
  tags: uniqueList(z.string().regex(/^[A-Za-z0-9_.-]{1,63}$/, { error: "tags are letters, digits, _ . - (at most 63)" })).default([]),
  protect: z.boolean().default(false),
  replaceOnImageChange: z.boolean().default(false),
  boot: z.boolean().default(false),
  trial: z.boolean().default(false),
  registryMirror: RegistryMirrorOverride.optional(),
  /** The thin pool on a containerd data disk is dm-crypt with a key made at each boot. */
  thinPoolEncrypt: z.boolean().default(true),
};

const DataVolumeSchema = z.strictObject({
  sizeGib: int(1, 65536),
  deviceName: z.string().regex(/^\/dev\/(sd[f-p]|xvd[f-p])$/, { error: "must be /dev/sdf ... /dev/sdp" }),
  type: z.enum(["gp3", "io2", "st1"]).default("gp3"),
  iops: int(1, 256000).optional(),
  throughput: int(1, 2000).optional(),
  purpose: z.enum(DISK_PURPOSES).optional(),
  mountPoint: MountPoint.optional(),
});

const AwsHostSchema = z.strictObject({
  provider: z.literal("aws"),
  instanceType: z.string(),
  region: z.string().optional(),
  availabilityZone: z.string().optional(),
  subnetId: z.string().optional(),
  rootVolumeGib: int(20, 16384).default(50),
  dataVolumes: z.record(Name, DataVolumeSchema).default({}),
  ...hostCommon,
});
const AzureHostSchema = z.strictObject({
  provider: z.literal("azure"),
  size: z.string(),
  location: z.string().optional(),
  osDiskGib: int(30, 4095).default(64),
  dataDiskGib: int(1, 32767).optional(),
  dataDiskPurpose: z.enum(DISK_PURPOSES).optional(),
  dataDiskMountPoint: MountPoint.optional(),
  ...hostCommon,
});
const HetznerHostSchema = z.strictObject({
  provider: z.literal("hetzner"),
  serverType: z.string(),
  location: z.enum(HETZNER_LOCATIONS),
  image: z.enum(["nix", "stock"]).default("stock"),
  placementGroup: Name.optional(),
  ...hostCommon,
});
const DigitalOceanHostSchema = z.strictObject({
  provider: z.literal("digitalocean"),
  size: z.string(),
  region: z.string().regex(/^[a-z]{3}\d$/, { error: "must be a region slug such as fra1" }),
  image: z.enum(["nix", "stock"]).default("stock"),
  /** DigitalOcean does not document nested virtualization; fireactions there is a user's bet. */
  allowUndocumentedKvm: z.boolean().default(false),
  ...hostCommon,
});
/**
 * pulumi-command pins HostKeyAlgorithms to the key's type (remote/connection.go), and for RSA that
 * is `ssh-rsa`, SHA-1 signatures, which OpenSSH 8.8 and later no longer make: every connection
 * would fail its handshake (docs/upstream.md). Every OpenSSH sshd also has an ed25519 key.
 */
const RSA_HOST_KEY = "an ssh-rsa host key cannot be pinned: pulumi-command offers only the key's own type, ssh-rsa (SHA-1 signatures), which OpenSSH 8.8 and later refuse, so no connection would get through; give the machine's ed25519 key (cat /etc/ssh/ssh_host_ed25519_key.pub) or its ECDSA key";
const ExistingHostSchema = z.strictObject({
  provider: z.literal("existing"),
  address: Address,
  privateAddress: Address.optional(),
  arch: z.enum(ARCHES),
  vcpus: int(1, 4096),
  memoryMib: int(512, 64 * 1024 * 1024),
  kvm: z.boolean().default(false),
  install: z.boolean().default(false),
  /** The disk disko partitions at install: required with install: true (rule existingHostsDeployable). */
  installDisk: z.string().regex(/^\/dev\/[A-Za-z0-9_.:+@-]+(\/[A-Za-z0-9_.:+@-]+)*$/, { error: "must be a device path such as /dev/sda or /dev/disk/by-id/..." })
    .refine((d) => !d.split("/").includes(".."), { error: "must not contain .." }).optional(),
  /** The machine's SSH host public key (cat /etc/ssh/ssh_host_ed25519_key.pub): pinned for every connection. */
  hostKey: check(z.string(), (line) => /^ssh-rsa /.test(line) ? RSA_HOST_KEY
    : /^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)) /.test(line) ? checkSshKey(line)
    : "must be an SSH host public key line: ssh-ed25519 or ecdsa-sha2-nistp256/384/521, then the key").optional(),
  ...hostCommon,
});

export const HostSchema = z.discriminatedUnion("provider", [
  AwsHostSchema, AzureHostSchema, HetznerHostSchema, DigitalOceanHostSchema, ExistingHostSchema,
]);

const ImageSchema = z.strictObject({ path: z.string().min(1), file: PlainFileName.optional() });
const ArchImages = z.strictObject({ x86_64: ImageSchema.optional(), aarch64: ImageSchema.optional() });

const VaultSchema = z.strictObject({
  address: VaultUrl,
  mount: z.string().regex(/^[a-z0-9][a-z0-9_-]*(\/[a-z0-9][a-z0-9_-]*)*$/, { error: "must be a Vault path such as ci or teams/ci" }).default("ci"),
  createMount: z.boolean().default(true),
  authMount: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, { error: "must be a Vault auth path such as approle" }).default("approle"),
  createAuthMount: z.boolean().default(true),
  // 0s would be no wrapping at all: Vault refuses a zero wrap TTL.
  wrapTtl: duration(1).default("2h"),
  // 0s: the secret_id never expires. It is bound to the host's AppRole and policy (and to its
  // address where known); an expiring one would lock a host out of Vault at its next login.
  secretIdTtl: duration(0).default("0s"),
  tokenTtl: duration(1).default("1h"),
  externalSecrets: uniqueList(z.enum(SECRET_NAMES)).default([]),
  // Stacks made before #24 item 14: true (every host) or the hosts that keep the old
  // `runner-fleet-<stack>-<host>` policy and `<stack>-<host>` AppRole until they are re-created.
  legacyNames: z.union([z.boolean(), uniqueList(Name)]).default(false),
  // Hosts whose AppRole is not bound to their own addresses (#24 item 9): a host behind NAT
  // reaches Vault from another address, and a bound role refuses its logins.
  unboundHosts: uniqueList(Name).default([]),
});

const NixPublicKey = check(z.string(), nixPublicKeyProblem);
/** nix.conf splits substituters on whitespace and reads ?name=value as store settings: a plain https URL. */
const SubstituterUrl = check(z.string(), (v) => urlProblem("always")(v) ?? (/[?#\s]/.test(v) ? "must have no query (?...) or fragment: Nix reads a query as store settings" : undefined));
const DnsName = z.string().regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/, { error: "must be a DNS name such as cache.example.com" });

const CacheSchema = z.strictObject({
  // Default (unset): on when a host has the cache role.
  useFleetCache: z.boolean().optional(),
  publicKey: NixPublicKey.optional(),
  domains: z.record(Name, DnsName).default({}),
  extraSubstituters: z.array(z.strictObject({
    url: SubstituterUrl,
    publicKey: NixPublicKey,
    priority: int(1, 1000).optional(),
  })).max(16).default([]),
  // Nix waits this long to connect to a substituter (connect-timeout; 0, its default, is curl's 300 s).
  connectTimeout: int(1, 300).default(5),
  push: z.boolean().default(true),
});

const DeploySchema = z.strictObject({
  tool: z.enum(DEPLOY_TOOLS).default("deploy-rs"),
  flake: z.string().min(1).default("./nix"),
  sshUser: z.string().regex(/^[a-z_][a-z0-9_-]*$/, { error: "must be a Unix user name" }).default("deploy"),
  batchSize: Positive.default(1),
  // deploy-rs reads both as u16 seconds (src/cli.rs). activationTimeout bounds the whole switch,
  // which waits up to 330 s for runner-fleet-secrets (nix/modules/secrets.nix) and then starts
  // its consumers; deploy-rs' own 240 s would give up first and the switch roll back (#22 item 7).
  confirmTimeout: int(1, 65535).default(30),
  activationTimeout: int(1, 65535).default(420),
  // A day at most: timeouts become `timeout Nm` and Go durations in the command provider.
  readyTimeoutMinutes: int(1, 1440).default(20),
  installTimeoutMinutes: int(1, 1440).default(45),
  switchTimeoutMinutes: int(1, 1440).default(30),
  remoteBuild: z.enum(REMOTE_BUILDS).default("auto"),
  // How long a drain waits for running jobs before a runner restart, reboot or removal.
  drainTimeoutMinutes: int(1, 1440).default(60),
  drainProceedOnTimeout: z.boolean().default(false),
});

/** The whole stack config: one key per `runner-fleet:<key>`. Secrets are checked for presence only. */
export const FleetConfigSchema = z.strictObject({
  ssh: z.strictObject({
    authorizedKeys: uniqueList(SshKey).min(1, { error: "needs at least one key: the deploy tools log in with it" }),
    adminCidrs: uniqueList(Cidr).default([]),
    allowFromAnywhere: z.boolean().default(false),
    /**
     * An SSH key already in the Hetzner project (name or id), e.g. another stack's: this stack
     * then creates none. Hetzner refuses a second key with the same public key in one project.
     */
    hetznerKey: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$/, { error: "must be the name or id of an SSH key in the Hetzner project" }).optional(),
    /** An SSH key already in the DigitalOcean account (id or MD5 fingerprint): this stack then creates none. */
    digitaloceanKey: z.string().regex(/^(\d{1,20}|[0-9a-f]{2}(:[0-9a-f]{2}){15})$/, { error: "must be the numeric id or the aa:bb:... fingerprint of an SSH key in the DigitalOcean account" }).optional(),
  }),
  github: z.strictObject({
    organization: GithubOrganization,
    appId: z.string().regex(/^\d{1,20}$/, { error: 'must be the numeric App id, quoted ("123456")' }).optional(),
    url: HttpsUrl.default("https://github.com"),
  }).optional(),
  forgejo: z.strictObject({ url: HttpsUrl, labels: uniqueList(Label).default(["native-nix:host"]) }).optional(),
  gitea: z.strictObject({ url: HttpsUrl, labels: uniqueList(Label).default(["native-nix:host"]) }).optional(),
  gitlab: z.strictObject({ url: HttpsUrl }).optional(),
  cache: CacheSchema.default(CacheSchema.parse({})),
  pools: z.record(Name, PoolSchema).default({}),
  hosts: z.record(Name, HostSchema),
  images: z.strictObject(Object.fromEntries(CLOUDS.map((c) => [c, ArchImages.optional()])) as Record<Cloud, z.ZodOptional<typeof ArchImages>>).default({}),
  vault: VaultSchema,
  deploy: DeploySchema.default(DeploySchema.parse({})),
  capacity: z.strictObject({
    reserveVcpus: int(0, 1024).default(1),
    reserveMemoryMib: int(0, 1024 * 1024).default(2048),
  }).default({ reserveVcpus: 1, reserveMemoryMib: 2048 }),
  registryMirror: RegistryMirrorSchema.default(RegistryMirrorSchema.parse({})),
  unsafe: z.strictObject({ githubAppKeyInUserData: z.boolean().default(false) }).default({ githubAppKeyInUserData: false }),
  // Who may scrape the hosts' exporters (host firewall and every cloud's); none: nobody.
  monitoring: z.strictObject({ allowCidrs: uniqueList(Cidr).default([]) }).default({ allowCidrs: [] }),
});

export type FleetConfigInput = z.input<typeof FleetConfigSchema>;

export interface LoadContext {
  stack: string;
  /** Secret config keys that are set (their values never reach this module). */
  secretsSet: ReadonlySet<string>;
  /** Provider defaults from stack config: `aws:region`, `azure-native:location`. */
  awsRegion?: string;
  azureLocation?: string;
  /** Where relative image paths start. */
  baseDir: string;
  /** Images must exist on disk (real runs) or only have a hash in their path (offline plan). */
  requireImageFiles: boolean;
  /**
   * Top-level keys (without the prefix) whose value is a Pulumi secret although the key is not
   * one of SECRET_KEYS: refused by name, and their values never read.
   */
  secureKeys?: ReadonlySet<string>;
}


export type FleetConfig = z.output<typeof FleetConfigSchema>;
export type HostConfig = FleetConfig["hosts"][string];
export type PoolConfig = FleetConfig["pools"][string];
export type Section = keyof FleetConfig;

/**
 * The config as far as it parsed: every section and every host and pool that passed the schema,
 * and the names of those that did not. Cross-field rules run on what parsed, so one run lists
 * every problem.
 */
export interface ParsedConfig {
  /** The config as given (secret and refused keys left out), for rules that read around a failed part. */
  raw: Record<string, unknown>;
  sections: Partial<FleetConfig>;
  hosts: Record<string, HostConfig>;
  pools: Record<string, PoolConfig>;
  failed: { sections: Set<Section>; hosts: Set<string>; pools: Set<string> };
}
