/**
 * Stack config -> validated fleet model. One zod schema for the whole config, then the checks
 * that span keys (pools that exist, KVM, capacity, images, secrets). Every problem is collected
 * and reported at once as `<key path>: <what is wrong>`; nothing here touches the Pulumi runtime.
 */
import { z } from "zod";
import { lookupInstance } from "./catalog";
import { checkCapacity } from "./capacity";
import { renderUserData } from "./cloud-init";
import { resolveImageSource } from "./images/source";
import {
  ARCHES, CLOUDS, DEPLOY_TOOLS, PRESETS, PROVIDERS, ROLES, SECRET_NAMES,
  type Arch, type Cloud, type FleetModel, type HostModel, type ImageSourceModel, type PoolModel, type SecretName,
} from "./model";
import { renderPoolsJson, resolvePool } from "./pools";

export const PROJECT = "runner-fleet";

/** Thrown with every problem found; `index.ts` turns it into a clean error without a stack. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
  }
}

// ---------------------------------------------------------------------------------------------
// Field schemas

/** Host and pool names become hostnames, Vault paths and resource names. */
const Name = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
  error: "must be lowercase letters, digits and dashes (1-63 characters, no leading or trailing dash)",
});
const Count = z.number().int().nonnegative();
const Positive = z.number().int().positive();
const Cidr = z.union([z.cidrv4(), z.cidrv6()], { error: "must be a CIDR such as 198.51.100.0/24" });
const Address = z.union([z.ipv4(), z.ipv6(), z.hostname()], { error: "must be an IP address or a hostname" });
const HttpsUrl = z.url({ protocol: /^https?$/, error: "must be an http(s) URL" });
const Duration = z.string().regex(/^\d+[smh]$/, { error: 'must be a duration such as "90s", "30m" or "2h"' });
const SshKey = z.string().regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( .*)?$/, {
  error: "must be an OpenSSH public key (ssh-ed25519 AAAA... comment)",
});
const uniqueList = <T extends z.ZodType>(item: T) =>
  z.array(item).refine((xs) => new Set(xs).size === xs.length, { error: "lists the same value twice" });

const PoolSchema = z.strictObject({
  size: z.enum(PRESETS).default("medium"),
  maxRunners: Count.optional(),
  minRunners: Count.optional(),
  vcpus: Positive.optional(),
  memoryMib: z.number().int().min(128).optional(),
  labels: uniqueList(z.string().min(1)).optional(),
  runnerName: z.string().min(1).optional(),
  image: z.string().min(1).optional(),
  imagePullPolicy: z.enum(["Always", "Never", "IfNotPresent"]).optional(),
  organization: z.string().min(1).optional(),
  groupId: Positive.optional(),
  kernelArgs: z.string().min(1).optional(),
});

const hostCommon = {
  roles: uniqueList(z.enum(ROLES)).min(1, { error: "must name at least one role" }),
  pools: uniqueList(z.string()).default([]),
  tags: uniqueList(z.string().regex(/^[A-Za-z0-9_.-]+$/, { error: "tags are letters, digits, _ . -" })).default([]),
  protect: z.boolean().default(false),
  replaceOnImageChange: z.boolean().default(false),
  boot: z.boolean().default(false),
};

const DataVolumeSchema = z.strictObject({
  sizeGib: Positive,
  deviceName: z.string().regex(/^\/dev\/(sd[f-p]|xvd[f-p])$/, { error: "must be /dev/sdf ... /dev/sdp" }),
  type: z.enum(["gp3", "io2", "st1"]).default("gp3"),
  iops: Positive.optional(),
  throughput: Positive.optional(),
});

const AwsHostSchema = z.strictObject({
  provider: z.literal("aws"),
  instanceType: z.string(),
  region: z.string().optional(),
  availabilityZone: z.string().optional(),
  subnetId: z.string().optional(),
  rootVolumeGib: z.number().int().min(20).default(50),
  dataVolumes: z.record(Name, DataVolumeSchema).default({}),
  ...hostCommon,
});
const AzureHostSchema = z.strictObject({
  provider: z.literal("azure"),
  size: z.string(),
  location: z.string().optional(),
  osDiskGib: z.number().int().min(30).default(64),
  dataDiskGib: Positive.optional(),
  ...hostCommon,
});
const HetznerHostSchema = z.strictObject({
  provider: z.literal("hetzner"),
  serverType: z.string(),
  location: z.enum(["fsn1", "nbg1", "hel1", "ash", "hil", "sin"]),
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
const ExistingHostSchema = z.strictObject({
  provider: z.literal("existing"),
  address: Address,
  privateAddress: Address.optional(),
  arch: z.enum(ARCHES),
  vcpus: Positive,
  memoryMib: z.number().int().min(512),
  kvm: z.boolean().default(false),
  install: z.boolean().default(false),
  ...hostCommon,
});

const HostSchema = z.discriminatedUnion("provider", [
  AwsHostSchema, AzureHostSchema, HetznerHostSchema, DigitalOceanHostSchema, ExistingHostSchema,
]);

const ImageSchema = z.strictObject({ path: z.string().min(1), file: z.string().min(1).optional() });
const ArchImages = z.strictObject({ x86_64: ImageSchema.optional(), aarch64: ImageSchema.optional() });

const VaultSchema = z.strictObject({
  address: HttpsUrl,
  mount: z.string().regex(/^[a-z0-9][a-z0-9_-]*(\/[a-z0-9][a-z0-9_-]*)*$/, { error: "must be a Vault path such as ci or teams/ci" }).default("ci"),
  createMount: z.boolean().default(true),
  authMount: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, { error: "must be a Vault auth path such as approle" }).default("approle"),
  createAuthMount: z.boolean().default(true),
  wrapTtl: Duration.default("2h"),
  // 0s: the secret_id never expires. It is bound to the host's AppRole and policy (and to its
  // address where known); an expiring one would lock a host out of Vault at its next login.
  secretIdTtl: Duration.default("0s"),
  tokenTtl: Duration.default("1h"),
  externalSecrets: uniqueList(z.enum(SECRET_NAMES)).default([]),
});

const DeploySchema = z.strictObject({
  tool: z.enum(DEPLOY_TOOLS).default("deploy-rs"),
  flake: z.string().min(1).default("./nix"),
  sshUser: z.string().regex(/^[a-z_][a-z0-9_-]*$/, { error: "must be a Unix user name" }).default("deploy"),
  batchSize: Positive.default(1),
  confirmTimeout: Positive.default(30),
  activationTimeout: Positive.default(240),
  readyTimeoutMinutes: Positive.default(20),
  installTimeoutMinutes: Positive.default(45),
  switchTimeoutMinutes: Positive.default(30),
});

/** The whole stack config: one key per `runner-fleet:<key>`. Secrets are checked for presence only. */
export const FleetConfigSchema = z.strictObject({
  ssh: z.strictObject({
    authorizedKeys: uniqueList(SshKey).min(1, { error: "needs at least one key: the deploy tools log in with it" }),
    adminCidrs: uniqueList(Cidr).default([]),
    allowFromAnywhere: z.boolean().default(false),
  }),
  github: z.strictObject({
    organization: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,38}$/, { error: "must be a GitHub organization name" }),
    appId: z.string().regex(/^\d+$/, { error: 'must be the numeric App id, quoted ("123456")' }).optional(),
    url: HttpsUrl.default("https://github.com"),
  }).optional(),
  forgejo: z.strictObject({ url: HttpsUrl, labels: uniqueList(z.string()).default(["native-nix:host"]) }).optional(),
  gitea: z.strictObject({ url: HttpsUrl, labels: uniqueList(z.string()).default(["native-nix:host"]) }).optional(),
  pools: z.record(Name, PoolSchema).default({}),
  hosts: z.record(Name, HostSchema),
  images: z.strictObject(Object.fromEntries(CLOUDS.map((c) => [c, ArchImages.optional()])) as Record<Cloud, z.ZodOptional<typeof ArchImages>>).default({}),
  vault: VaultSchema,
  deploy: DeploySchema.default(DeploySchema.parse({})),
  capacity: z.strictObject({
    reserveVcpus: Count.default(1),
    reserveMemoryMib: Count.default(2048),
  }).default({ reserveVcpus: 1, reserveMemoryMib: 2048 }),
  unsafe: z.strictObject({ githubAppKeyInUserData: z.boolean().default(false) }).default({ githubAppKeyInUserData: false }),
});

export type FleetConfigInput = z.input<typeof FleetConfigSchema>;
type FleetConfig = z.output<typeof FleetConfigSchema>;
type HostConfig = FleetConfig["hosts"][string];

/** The config keys that hold secrets, and what each one unlocks. */
export const SECRET_KEYS: Record<SecretName, string> = {
  githubApp: "githubAppPrivateKey",
  giteaRunnerToken: "giteaRunnerToken",
  cacheSigningKey: "cacheSigningKey",
};

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
}

// ---------------------------------------------------------------------------------------------
// Error formatting

/** `runner-fleet:hosts.h1.pools[0]`: the form `pulumi config set --path` takes. */
function keyPath(path: ReadonlyArray<PropertyKey>): string {
  let out = `${PROJECT}:${String(path[0] ?? "")}`;
  for (const part of path.slice(1)) out += typeof part === "number" ? `[${part}]` : `.${String(part)}`;
  return out.replace(/:$/, "");
}

/** A short rendering of a bad value for a message. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function describeIssue(issue: z.core.$ZodIssue): string[] {
  const at = keyPath(issue.path);
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((k) => `${keyPath([...issue.path, k])}: unknown key (check the spelling)`);
    case "invalid_value": {
      const accepted = issue.values.map((v) => JSON.stringify(v)).join(", ");
      return [issue.input === undefined ? `${at}: is required (one of ${accepted})` : `${at}: must be one of ${accepted}, got ${shown(issue.input)}`];
    }
    case "invalid_key":
      // A map key (host or pool name) that fails its pattern: the nested issue says why.
      return [`${at}: invalid name: ${issue.issues.map((i) => i.message).join("; ")}`];
    case "invalid_union":
      if ("discriminator" in issue && issue.discriminator) {
        const at = issue.path.at(-1) === issue.discriminator ? issue.path : [...issue.path, issue.discriminator as string];
        return [`${keyPath(at)}: must be one of ${PROVIDERS.join(", ")}`];
      }
      return [`${at}: ${issue.message}`];
    case "invalid_type":
      if (issue.input === undefined) return [`${at}: is required`];
      return [`${at}: must be ${issue.expected === "record" ? "a map" : `a ${issue.expected}`}, got ${shown(issue.input)}`];
    case "too_small":
      if (issue.origin === "number") return [`${at}: must be at least ${issue.minimum}, got ${shown(issue.input)}`];
      return [`${at}: ${issue.message}`];
    case "too_big":
      return [`${at}: must be at most ${issue.maximum}, got ${shown(issue.input)}`];
    default:
      return [`${at}: ${issue.message}`];
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-field checks

class Problems {
  readonly list: string[] = [];
  add(key: string, message: string) {
    this.list.push(`${PROJECT}:${key}: ${message}`);
  }
}

function kvmFor(name: string, host: HostConfig, problems: Problems, warnings: string[]): { arch: Arch; vcpus: number; memoryMib: number; kvm: boolean } | undefined {
  if (host.provider === "existing") {
    return { arch: host.arch, vcpus: host.vcpus, memoryMib: host.memoryMib, kvm: host.kvm };
  }
  const typeKey = { aws: "instanceType", azure: "size", hetzner: "serverType", digitalocean: "size" }[host.provider];
  const type = host.provider === "aws" ? host.instanceType : host.provider === "hetzner" ? host.serverType : host.size;
  const spec = lookupInstance(host.provider, type);
  if (!spec) {
    problems.add(`hosts.${name}.${typeKey}`, `${JSON.stringify(type)} is not in the ${host.provider} catalog (components/catalog.ts); add its vCPUs, memory and KVM support there`);
    return undefined;
  }
  let kvm = spec.kvm === "metal" || spec.kvm === "nested";
  if (host.provider === "digitalocean" && host.allowUndocumentedKvm) {
    kvm = true;
    warnings.push(`hosts.${name}: allowUndocumentedKvm is set; DigitalOcean does not document nested virtualization, so fireactions may not start`);
  }
  return { arch: spec.arch, vcpus: spec.vcpus, memoryMib: spec.memoryMib, kvm };
}

function hostModel(name: string, host: HostConfig, facts: { arch: Arch; vcpus: number; memoryMib: number; kvm: boolean }, ctx: LoadContext): HostModel {
  const base = {
    name,
    roles: host.roles,
    pools: [...host.pools].sort(),
    tags: host.tags,
    protect: host.protect,
    replaceOnImageChange: host.replaceOnImageChange,
    boot: host.boot,
    ...facts,
  };
  switch (host.provider) {
    case "aws": {
      const spec = lookupInstance("aws", host.instanceType);
      return {
        ...base,
        provider: "aws",
        image: "nix",
        instanceType: host.instanceType,
        region: host.region ?? ctx.awsRegion ?? "",
        ...(host.availabilityZone ? { availabilityZone: host.availabilityZone } : {}),
        ...(host.subnetId ? { subnetId: host.subnetId } : {}),
        nestedVirtualization: spec?.kvm === "nested" && host.roles.includes("fireactions"),
        rootVolumeGib: host.rootVolumeGib,
        dataVolumes: Object.entries(host.dataVolumes).sort(([a], [b]) => a.localeCompare(b)).map(([volName, v]) => ({ name: volName, ...v })),
      };
    }
    case "azure":
      return {
        ...base, provider: "azure", image: "nix", size: host.size, location: host.location ?? ctx.azureLocation ?? "",
        osDiskGib: host.osDiskGib, ...(host.dataDiskGib ? { dataDiskGib: host.dataDiskGib } : {}),
      };
    case "hetzner":
      return {
        ...base, provider: "hetzner", image: host.image, serverType: host.serverType, location: host.location,
        ...(host.placementGroup ? { placementGroup: host.placementGroup } : {}),
      };
    case "digitalocean":
      return { ...base, provider: "digitalocean", image: host.image, size: host.size, region: host.region };
    case "existing":
      return {
        ...base, provider: "existing", image: host.install ? "stock" : "nix", address: host.address,
        ...(host.privateAddress ? { privateAddress: host.privateAddress } : {}), install: host.install,
      };
  }
}

/** Clouds whose hosts boot from our uploaded image, and the images they therefore need. */
function imageNeeds(host: HostModel): Cloud | undefined {
  if (host.provider === "existing" || host.image !== "nix") return undefined;
  return host.provider;
}

function validateFleet(cfg: FleetConfig, ctx: LoadContext, problems: Problems, warnings: string[]): FleetModel {
  const organization = cfg.github?.organization ?? "";
  const pools: Record<string, PoolModel> = {};
  for (const [name, input] of Object.entries(cfg.pools).sort(([a], [b]) => a.localeCompare(b))) {
    const pool = resolvePool(name, input, organization);
    if (pool.minRunners > pool.maxRunners) {
      problems.add(`pools.${name}.minRunners`, `${pool.minRunners} is more than maxRunners (${pool.maxRunners})`);
    }
    if (!input.organization && !cfg.github) {
      problems.add(`pools.${name}.organization`, "is required when runner-fleet:github is not set");
    }
    pools[name] = pool;
  }

  const hosts: HostModel[] = [];
  const addresses = new Map<string, string>();
  for (const [name, host] of Object.entries(cfg.hosts).sort(([a], [b]) => a.localeCompare(b))) {
    const at = `hosts.${name}`;
    for (const [i, pool] of host.pools.entries()) {
      if (!pools[pool]) {
        const known = Object.keys(pools);
        problems.add(`${at}.pools[${i}]`, `pool ${JSON.stringify(pool)} does not exist (defined pools: ${known.length ? known.join(", ") : "none"})`);
      }
    }
    const fireactions = host.roles.includes("fireactions");
    if (fireactions && host.pools.length === 0) problems.add(`${at}.pools`, "a fireactions host needs at least one pool");
    if (!fireactions && host.pools.length > 0) problems.add(`${at}.pools`, "pools run only on hosts with the fireactions role");

    if (host.provider === "existing") {
      const seen = addresses.get(host.address);
      if (seen) problems.add(`${at}.address`, `${host.address} is already the address of host ${seen}`);
      addresses.set(host.address, name);
    }
    if (host.provider === "aws" && !host.region && !ctx.awsRegion) problems.add(`${at}.region`, "is required (or set aws:region)");
    if (host.provider === "azure" && !host.location && !ctx.azureLocation) problems.add(`${at}.location`, "is required (or set azure-native:location)");

    const facts = kvmFor(name, host, problems, warnings);
    if (!facts) continue;
    if (fireactions && !facts.kvm) {
      const why = {
        aws: "only *.metal types and C8i/M8i/R8i (nested virtualization) expose /dev/kvm",
        azure: "use a size with nested virtualization (Dsv3, Ddsv4, Ddsv5, Edsv5, Fsv2 ...)",
        hetzner: "Hetzner Cloud servers have no /dev/kvm; use this host for cache or forgejo-runner",
        digitalocean: "DigitalOcean does not document nested virtualization; set allowUndocumentedKvm: true to try anyway",
        existing: "set kvm: true if the machine exposes /dev/kvm",
      }[host.provider];
      const typeKey = { aws: "instanceType", azure: "size", hetzner: "serverType", digitalocean: "size", existing: "kvm" }[host.provider];
      problems.add(`${at}.${typeKey}`, `the fireactions role needs KVM: ${why}`);
    }
    const model = hostModel(name, host, facts, ctx);
    if (model.image === "stock" && model.memoryMib < 2048) {
      problems.add(`${at}`, `nixos-anywhere needs at least 2048 MiB of memory to install NixOS (this host has ${model.memoryMib})`);
    }
    const hostPools = host.pools.filter((p) => pools[p]).map((p) => pools[p]);
    for (const finding of checkCapacity(model, hostPools, cfg.capacity)) problems.add(`${at}.pools`, finding);
    hosts.push(model);
  }

  // Case-insensitive collisions: hostnames and Vault paths would clash.
  const lower = new Map<string, string>();
  for (const name of Object.keys(cfg.hosts)) {
    const other = lower.get(name.toLowerCase());
    if (other) problems.add(`hosts.${name}`, `duplicates host ${other}`);
    lower.set(name.toLowerCase(), name);
  }

  // Images: every image a host boots from must be configured, and match its arch.
  const images: ImageSourceModel[] = [];
  const needed = new Map<string, string[]>();
  for (const host of hosts) {
    const cloud = imageNeeds(host);
    if (!cloud) continue;
    const key = `${cloud}.${host.arch}`;
    needed.set(key, [...(needed.get(key) ?? []), host.name]);
  }
  for (const [key, users] of [...needed].sort(([a], [b]) => a.localeCompare(b))) {
    const [cloud, arch] = key.split(".") as [Cloud, Arch];
    const input = cfg.images[cloud]?.[arch];
    if (!input) {
      problems.add(`images.${cloud}.${arch}`, `is required: host${users.length > 1 ? "s" : ""} ${users.join(", ")} boot${users.length > 1 ? "" : "s"} from a ${arch} ${cloud} image`);
      continue;
    }
    const resolved = resolveImageSource(cloud, arch, input, { baseDir: ctx.baseDir, requireFiles: ctx.requireImageFiles });
    if (!resolved.ok) {
      for (const p of resolved.problems) problems.add(p.key, p.message);
      continue;
    }
    if (resolved.warning) warnings.push(resolved.warning);
    if (!/-(x86_64|aarch64)-linux/.test(resolved.image.storePath) || resolved.image.storePath.includes(`-${arch}-linux`)) {
      images.push(resolved.image);
    } else {
      problems.add(`images.${cloud}.${arch}.path`, `${resolved.image.storePath} is built for another architecture than ${arch}`);
    }
  }
  for (const cloud of CLOUDS) {
    for (const arch of ARCHES) {
      if (cfg.images[cloud]?.[arch] && !needed.has(`${cloud}.${arch}`)) {
        warnings.push(`images.${cloud}.${arch}: configured but no host boots from it; it is not uploaded`);
      }
    }
  }

  // Role requirements: the service each role talks to, and its credentials.
  const roles = new Set(hosts.flatMap((h) => h.roles));
  const external = new Set(cfg.vault.externalSecrets);
  const needSecret = (secret: SecretName, role: string) => {
    const key = SECRET_KEYS[secret];
    if (!external.has(secret) && !ctx.secretsSet.has(key)) {
      problems.add(key, `not set; the ${role} role needs it: run pulumi config set --secret ${PROJECT}:${key} (the value as an argument or on stdin), or add ${secret} to vault.externalSecrets if it is already in Vault`);
    }
  };
  if (roles.has("fireactions")) {
    if (!cfg.github) problems.add("github", "is required by the fireactions role (organization, appId)");
    else if (!cfg.github.appId) problems.add("github.appId", "is required by the fireactions role");
    needSecret("githubApp", "fireactions");
  }
  if (roles.has("forgejo-runner") && !cfg.forgejo) problems.add("forgejo", "is required by the forgejo-runner role (url)");
  if (roles.has("gitea-runner")) {
    if (!cfg.gitea) problems.add("gitea", "is required by the gitea-runner role (url)");
    needSecret("giteaRunnerToken", "gitea-runner");
  }
  if (roles.has("cache")) needSecret("cacheSigningKey", "cache");

  if (cfg.unsafe.githubAppKeyInUserData) {
    warnings.push("unsafe.githubAppKeyInUserData is on: the GitHub App private key is written into user-data, which any process on the host (and, on Hetzner and DigitalOcean, anything that reaches the metadata service) can read");
  }
  const vaultUrl = new URL(cfg.vault.address);
  if (vaultUrl.protocol === "http:" && !["localhost", "127.0.0.1", "[::1]"].includes(vaultUrl.hostname)) {
    problems.add("vault.address", "must use https: hosts send their secret_id and receive runner credentials over it");
  }
  if (cfg.ssh.allowFromAnywhere) {
    warnings.push("ssh.allowFromAnywhere is on: port 22 is open to 0.0.0.0/0 and ::/0");
  } else if (cfg.ssh.adminCidrs.length === 0 && hosts.some((h) => h.provider !== "existing")) {
    problems.add("ssh.adminCidrs", "is required: the CIDRs allowed to reach SSH (or set ssh.allowFromAnywhere: true)");
  }

  return {
    stack: ctx.stack,
    ssh: cfg.ssh,
    ...(cfg.github ? { github: cfg.github } : {}),
    ...(cfg.forgejo ? { forgejo: cfg.forgejo } : {}),
    ...(cfg.gitea ? { gitea: cfg.gitea } : {}),
    pools,
    hosts,
    images,
    vault: cfg.vault,
    deploy: cfg.deploy,
    capacity: cfg.capacity,
    unsafe: cfg.unsafe,
    warnings,
  };
}

/**
 * Validates raw stack config (top-level keys without the `runner-fleet:` prefix) and returns the
 * fleet model, or throws a ConfigError listing every problem.
 */
export function buildFleetModel(raw: Record<string, unknown>, ctx: LoadContext): FleetModel {
  // Secret keys are validated by presence (ctx.secretsSet); their values never come here.
  const plain = Object.fromEntries(Object.entries(raw).filter(([k]) => !Object.values(SECRET_KEYS).includes(k)));
  const parsed = FleetConfigSchema.safeParse(plain, { reportInput: true });
  if (!parsed.success) {
    const schemaProblems = parsed.error.issues.flatMap(describeIssue);
    throw new ConfigError([...new Set([...schemaProblems, ...crossCheckTheRest(plain, parsed.error.issues, ctx)])]);
  }
  const problems = new Problems();
  const model = validateFleet(parsed.data, ctx, problems, []);
  if (problems.list.length === 0) checkUserDataSizes(model, problems);
  if (problems.list.length > 0) throw new ConfigError(problems.list);
  return model;
}

/**
 * When some hosts or pools fail the schema, the rest can still be cross-checked, so one run
 * lists every problem. Entries with schema problems are left out; a reference to a pool that
 * was left out is not reported again as missing.
 */
function crossCheckTheRest(plain: Record<string, unknown>, issues: z.core.$ZodIssue[], ctx: LoadContext): string[] {
  const failed = { hosts: new Set<string>(), pools: new Set<string>() };
  for (const issue of issues) {
    const [top, entry] = issue.path;
    if ((top === "hosts" || top === "pools") && typeof entry === "string") failed[top].add(entry);
  }
  const without = (key: "hosts" | "pools") => {
    const map = plain[key];
    if (!map || typeof map !== "object" || Array.isArray(map)) return map;
    return Object.fromEntries(Object.entries(map).filter(([name]) => !failed[key].has(name)));
  };
  const rest = FleetConfigSchema.safeParse({ ...plain, hosts: without("hosts"), pools: without("pools") });
  if (!rest.success) return [];
  const problems = new Problems();
  validateFleet(rest.data, ctx, problems, []);
  const leftOutPool = (line: string) => [...failed.pools].some((pool) => line.includes(`pool ${JSON.stringify(pool)} does not exist`));
  return problems.list.filter((line) => !leftOutPool(line));
}

/** Stand-ins as long as the real values: a role_id UUID, a wrapping token, a 2048-bit PEM key. */
const SIZE_PROBE = { roleId: "r".repeat(36), wrappedSecretId: "w".repeat(95), appKey: "k".repeat(1700) };

/**
 * user-data must fit its cloud's limit. Vault's ids exist only during `up`, so the check
 * renders with stand-ins of their real length: a too-large pool list fails here, before any
 * resource is created, rather than halfway through an update.
 */
function checkUserDataSizes(model: FleetModel, problems: Problems) {
  for (const host of model.hosts) {
    const withKey = model.unsafe.githubAppKeyInUserData && host.roles.includes("fireactions");
    try {
      renderUserData({
        host,
        model,
        poolsJson: renderPoolsJson(host.pools.map((p) => model.pools[p])),
        roleId: SIZE_PROBE.roleId,
        wrappedSecretId: SIZE_PROBE.wrappedSecretId,
        ...(withKey ? { githubAppPrivateKey: SIZE_PROBE.appKey } : {}),
      });
    } catch (err) {
      problems.add(`hosts.${host.name}`, (err as Error).message);
    }
  }
}
