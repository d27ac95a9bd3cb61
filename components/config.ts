/**
 * Stack config -> validated fleet model. One zod schema per part of the config, then the named
 * rules that span keys (config-rules.ts: pools that exist, regions, KVM, capacity, images,
 * secrets). Every problem is collected and reported at once as `runner-fleet:<key path>: <what
 * is wrong>`, even when other parts fail the schema; no message quotes a secret, and nothing here
 * touches the Pulumi runtime.
 */
import { z } from "zod";
import { HETZNER_LOCATIONS, lookupInstance } from "./catalog";
import { type Derived, type HostFacts, runRules, SECRET_KEYS } from "./config-rules";
import { checkSshKey, durationSeconds, forbiddenCharacter, MAX_DURATION_SECONDS, normalAddress, normalCidr } from "./config-values";
import { renderUserData } from "./cloud-init";
import { normalizeHostKey } from "./deploy-commands";
import {
  ARCHES, CLOUDS, DEPLOY_TOOLS, PRESETS, PROVIDERS, REMOTE_BUILDS, ROLES, SECRET_NAMES,
  type Cloud, type FleetModel, type HostModel,
} from "./model";
import { renderPoolsJson } from "./pools";

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
const Label = z.string().min(1, { error: "must not be empty" });
const uniqueList = <T extends z.ZodType>(item: T) =>
  z.array(item).refine((xs) => new Set(xs).size === xs.length, { error: "lists the same value twice" });

const PoolSchema = z.strictObject({
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
  organization: z.string().min(1).optional(),
  groupId: int(1, 2 ** 31 - 1).optional(),
  // fireactions' Firecracker SDK writes ip= itself (address, gateway, DNS from CNI) and refuses a
  // CNI interface next to a given one (docs/upstream.md), so the VM would not start.
  kernelArgs: z
    .string()
    .min(1)
    .refine((args) => !/(^|\s)ip=/.test(args), { error: "must not set ip=: the VM's address, gateway and DNS come from CNI through ip=" })
    .optional(),
});

const hostCommon = {
  roles: uniqueList(z.enum(ROLES)).min(1, { error: "must name at least one role" }),
  pools: uniqueList(z.string()).default([]),
  tags: uniqueList(z.string().regex(/^[A-Za-z0-9_.-]{1,63}$/, { error: "tags are letters, digits, _ . - (at most 63)" })).default([]),
  protect: z.boolean().default(false),
  replaceOnImageChange: z.boolean().default(false),
  boot: z.boolean().default(false),
  trial: z.boolean().default(false),
};

const DataVolumeSchema = z.strictObject({
  sizeGib: int(1, 65536),
  deviceName: z.string().regex(/^\/dev\/(sd[f-p]|xvd[f-p])$/, { error: "must be /dev/sdf ... /dev/sdp" }),
  type: z.enum(["gp3", "io2", "st1"]).default("gp3"),
  iops: int(1, 256000).optional(),
  throughput: int(1, 2000).optional(),
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
  hostKey: check(z.string(), (line) => /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) /.test(line)
    ? checkSshKey(line)
    : "must be an SSH host public key line: ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa, then the key").optional(),
  ...hostCommon,
});

const HostSchema = z.discriminatedUnion("provider", [
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
});

const DeploySchema = z.strictObject({
  tool: z.enum(DEPLOY_TOOLS).default("deploy-rs"),
  flake: z.string().min(1).default("./nix"),
  sshUser: z.string().regex(/^[a-z_][a-z0-9_-]*$/, { error: "must be a Unix user name" }).default("deploy"),
  batchSize: Positive.default(1),
  // deploy-rs reads both as u16 seconds (src/cli.rs).
  confirmTimeout: int(1, 65535).default(30),
  activationTimeout: int(1, 65535).default(240),
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
    organization: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,38}$/, { error: "must be a GitHub organization name" }),
    appId: z.string().regex(/^\d{1,20}$/, { error: 'must be the numeric App id, quoted ("123456")' }).optional(),
    url: HttpsUrl.default("https://github.com"),
  }).optional(),
  forgejo: z.strictObject({ url: HttpsUrl, labels: uniqueList(Label).default(["native-nix:host"]) }).optional(),
  gitea: z.strictObject({ url: HttpsUrl, labels: uniqueList(Label).default(["native-nix:host"]) }).optional(),
  pools: z.record(Name, PoolSchema).default({}),
  hosts: z.record(Name, HostSchema),
  images: z.strictObject(Object.fromEntries(CLOUDS.map((c) => [c, ArchImages.optional()])) as Record<Cloud, z.ZodOptional<typeof ArchImages>>).default({}),
  vault: VaultSchema,
  deploy: DeploySchema.default(DeploySchema.parse({})),
  capacity: z.strictObject({
    reserveVcpus: int(0, 1024).default(1),
    reserveMemoryMib: int(0, 1024 * 1024).default(2048),
  }).default({ reserveVcpus: 1, reserveMemoryMib: 2048 }),
  unsafe: z.strictObject({ githubAppKeyInUserData: z.boolean().default(false) }).default({ githubAppKeyInUserData: false }),
});

export type FleetConfigInput = z.input<typeof FleetConfigSchema>;

export { SECRET_KEYS };

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

// ---------------------------------------------------------------------------------------------
// Error formatting

/** `runner-fleet:hosts.h1.pools[0]`: the form `pulumi config set --path` takes. */
export function keyPath(path: ReadonlyArray<PropertyKey>): string {
  if (path.length === 0) return PROJECT;
  // Keys that are not plain words take --path's bracket form: hosts["x y"], runner-fleet:[""].
  const plainWord = (part: string) => /^[A-Za-z0-9_-]+$/.test(part);
  const first = String(path[0]);
  let out = `${PROJECT}:${plainWord(first) ? first : `[${JSON.stringify(first)}]`}`;
  for (const part of path.slice(1)) {
    out += typeof part === "number" ? `[${part}]` : plainWord(String(part)) ? `.${String(part)}` : `[${JSON.stringify(String(part))}]`;
  }
  return out;
}

/** YAML's spellings of the numbers JSON cannot carry (the plan's stack reader passes them as these strings). */
const NON_FINITE = /^[-+]?\.(inf|nan)$/i;

/** A short rendering of a bad value for a message: printable ASCII only, so no value can break a line. */
export function shown(value: unknown): string {
  if (typeof value === "number" && !Number.isFinite(value)) return Number.isNaN(value) ? ".nan" : value > 0 ? ".inf" : "-.inf";
  const json = JSON.stringify(value) ?? String(value);
  const text = json.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function asciiLine(line: string): string {
  return line.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

const EXPECTED: Record<string, string> = {
  object: "an object", int: "an integer", number: "a number", string: "a string", boolean: "true or false",
  array: "a list", record: "a map", map: "a map",
};

function describeIssue(issue: z.core.$ZodIssue): string[] {
  const at = keyPath(issue.path);
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((k) => `${keyPath([...issue.path, k])}: unknown key (check the spelling)`);
    case "invalid_value": {
      const accepted = issue.values.map((v) => JSON.stringify(v)).join(", ");
      return [issue.input === undefined ? `${at}: is required (one of ${accepted})` : `${at}: must be one of ${accepted}, got ${shown(issue.input)}`];
    }
    case "invalid_union":
      if ("discriminator" in issue && issue.discriminator) {
        const where = issue.path.at(-1) === issue.discriminator ? issue.path : [...issue.path, issue.discriminator as string];
        return [`${keyPath(where)}: must be one of ${PROVIDERS.join(", ")}`];
      }
      return [`${at}: ${issue.message}`];
    case "invalid_type": {
      if (issue.input === undefined) return [`${at}: is required`];
      const numeric = issue.expected === "number" || issue.expected === "int";
      const input = issue.input as unknown;
      if (numeric && ((typeof input === "number" && !Number.isFinite(input)) || (typeof input === "string" && NON_FINITE.test(input)))) {
        return [`${at}: must be a finite number, got ${typeof input === "string" ? input.toLowerCase() : shown(input)}`];
      }
      return [`${at}: must be ${EXPECTED[issue.expected] ?? `a ${issue.expected}`}, got ${shown(input)}`];
    }
    case "too_small":
      if (issue.origin === "number") return [`${at}: must be at least ${issue.minimum}, got ${shown(issue.input)}`];
      return [`${at}: ${issue.message}`];
    case "too_big":
      if (issue.origin === "number") return [`${at}: must be at most ${issue.maximum}, got ${shown(issue.input)}`];
      return [`${at}: must have at most ${issue.maximum} entries`];
    default:
      return [`${at}: ${issue.message}`];
  }
}

// ---------------------------------------------------------------------------------------------
// Parsing, one part at a time

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

const SECTION_SCHEMAS = FleetConfigSchema.shape;

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Hosts or pools, entry by entry: a bad entry fails alone. */
function parseMap<T>(key: "hosts" | "pools", raw: unknown, entry: z.ZodType<T>, problems: string[], failed: Set<string>): Record<string, T> | undefined {
  if (raw === undefined) {
    if (key === "hosts") problems.push(`${keyPath([key])}: is required`);
    return key === "hosts" ? undefined : {};
  }
  if (!isMap(raw)) {
    problems.push(`${keyPath([key])}: must be a map, got ${shown(raw)}`);
    return undefined;
  }
  const out: Record<string, T> = {};
  for (const [name, value] of Object.entries(raw)) {
    const named = Name.safeParse(name);
    if (!named.success) problems.push(`${keyPath([key, name])}: invalid name: ${named.error.issues.map((i) => i.message).join("; ")}`);
    const parsed = entry.safeParse(value, { reportInput: true });
    if (!parsed.success) problems.push(...parsed.error.issues.flatMap((i) => describeIssue({ ...i, path: [key, name, ...i.path] })));
    if (named.success && parsed.success) Object.defineProperty(out, name, { value: parsed.data, enumerable: true, writable: true, configurable: true });
    else failed.add(name);
  }
  return out;
}

function parseConfig(plain: Record<string, unknown>, problems: string[]): ParsedConfig {
  const failed = { sections: new Set<Section>(), hosts: new Set<string>(), pools: new Set<string>() };
  const sections: Record<string, unknown> = {};
  for (const key of Object.keys(plain)) {
    if (!Object.hasOwn(SECTION_SCHEMAS, key)) problems.push(`${keyPath([key])}: unknown key (check the spelling)`);
  }
  for (const [key, schema] of Object.entries(SECTION_SCHEMAS) as Array<[Section, z.ZodType]>) {
    if (key === "hosts" || key === "pools") continue;
    const parsed = schema.safeParse(Object.hasOwn(plain, key) ? plain[key] : undefined, { reportInput: true });
    if (parsed.success) sections[key] = parsed.data;
    else {
      failed.sections.add(key);
      problems.push(...parsed.error.issues.flatMap((i) => describeIssue({ ...i, path: [key, ...i.path] })));
    }
  }
  const hosts = parseMap("hosts", plain.hosts, HostSchema, problems, failed.hosts);
  const pools = parseMap("pools", plain.pools, PoolSchema, problems, failed.pools);
  if (!hosts) failed.sections.add("hosts");
  if (!pools) failed.sections.add("pools");
  return { raw: plain, sections: sections as Partial<FleetConfig>, hosts: hosts ?? {}, pools: pools ?? {}, failed };
}

// ---------------------------------------------------------------------------------------------
// Secrets and characters, before anything reads a value

/** Keys holding a secure value that are not secrets: named, never read. */
function secureAtPlainKeys(raw: Record<string, unknown>, ctx: LoadContext, problems: string[]): Set<string> {
  const refused = new Set<string>();
  for (const key of ctx.secureKeys ?? []) {
    if (Object.values(SECRET_KEYS).includes(key) || !Object.hasOwn(raw, key)) continue;
    refused.add(key);
    problems.push(`${keyPath([key])}: holds a secret (secure) value, but it is not a secret key; its value would reach plain outputs and commands. Set it in plain text (pulumi config set without --secret); secrets belong only in ${Object.values(SECRET_KEYS).join(", ")}`);
  }
  return refused;
}

/** Every string, map key included, walked once: none may carry a control or line-separator character. */
function forbiddenCharacters(value: unknown, path: PropertyKey[], problems: string[], depth = 0): void {
  if (depth > 64) return;
  if (typeof value === "string") {
    const found = forbiddenCharacter(value);
    if (found) problems.push(`${keyPath(path)}: contains the character ${found}; config strings are single-line printable text (no control, line-separator or bidirectional-override characters)`);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => forbiddenCharacters(v, [...path, i], problems, depth + 1));
  } else if (isMap(value)) {
    for (const [k, v] of Object.entries(value)) {
      const found = forbiddenCharacter(k);
      if (found) problems.push(`${keyPath([...path, k])}: the key contains the character ${found}; keys are printable text`);
      else forbiddenCharacters(v, [...path, k], problems, depth + 1);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The model, once every rule passed

function hostModel(name: string, host: HostConfig, facts: HostFacts, ctx: LoadContext): HostModel {
  const base = {
    name,
    roles: host.roles,
    pools: [...host.pools].sort(),
    tags: host.tags,
    protect: host.protect,
    replaceOnImageChange: host.replaceOnImageChange,
    boot: host.boot,
    trial: host.trial,
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
    case "existing": {
      // Addresses in normal form: the inventory and known_hosts see one spelling per machine.
      const normal = (text: string) => { const r = normalAddress(text); return "normal" in r ? r.normal : text; };
      return {
        ...base, provider: "existing", image: host.install ? "stock" : "nix", address: normal(host.address),
        ...(host.privateAddress ? { privateAddress: normal(host.privateAddress) } : {}), install: host.install,
        ...(host.installDisk ? { installDisk: host.installDisk } : {}),
        ...(host.hostKey ? { hostKey: normalizeHostKey(host.hostKey) } : {}),
      };
    }
  }
}

function fleetModel(parsed: ParsedConfig, derived: Derived, ctx: LoadContext): FleetModel {
  const cfg = parsed.sections as FleetConfig;
  const hosts = Object.keys(parsed.hosts).sort().map((name) => hostModel(name, parsed.hosts[name], derived.facts.get(name) as HostFacts, ctx));
  return {
    stack: ctx.stack,
    ssh: cfg.ssh,
    ...(cfg.github ? { github: cfg.github } : {}),
    ...(cfg.forgejo ? { forgejo: cfg.forgejo } : {}),
    ...(cfg.gitea ? { gitea: cfg.gitea } : {}),
    pools: derived.pools,
    hosts,
    images: derived.images,
    vault: cfg.vault,
    deploy: cfg.deploy,
    capacity: cfg.capacity,
    unsafe: cfg.unsafe,
    warnings: derived.warnings,
  };
}

/**
 * Validates raw stack config (top-level keys without the `runner-fleet:` prefix) and returns the
 * fleet model, or throws a ConfigError listing every problem. Steps: refuse secure values at
 * plain keys and bad characters; parse each part on its own; run every named rule (RULES) on
 * what parsed; build the model; check each host's user-data fits its cloud.
 */
export function buildFleetModel(raw: Record<string, unknown>, ctx: LoadContext): FleetModel {
  const refusals: string[] = [];
  const problems: string[] = [];
  const refused = secureAtPlainKeys(raw, ctx, refusals);
  // Secret keys are validated by presence (ctx.secretsSet); their values never come here.
  const plain = Object.fromEntries(Object.entries(raw).filter(([k]) => !Object.values(SECRET_KEYS).includes(k) && !refused.has(k)));
  forbiddenCharacters(plain, [], problems);
  const parsed = parseConfig(plain, problems);
  // A refused key is reported once, by name; nothing downstream may mention what it held.
  const ownProblem = (line: string) => ![...refused].some((k) => line.startsWith(`${keyPath([k])}:`) || line.startsWith(`${keyPath([k])}.`) || line.startsWith(`${keyPath([k])}[`));
  for (const k of refused) parsed.failed.sections.add(k as Section);
  const derived = runRules(parsed, ctx, PROJECT);
  // Printable ASCII only: a value quoted in a message can neither break its line nor hide text.
  const all = [...new Set([...refusals, ...[...problems, ...derived.problems].filter(ownProblem)].map(asciiLine))];
  if (all.length > 0) throw new ConfigError(all);
  const model = fleetModel(parsed, derived, ctx);
  const sizes = checkUserDataSizes(model);
  if (sizes.length > 0) throw new ConfigError(sizes);
  return model;
}

/** Stand-ins as long as the real values: a role_id UUID, a wrapping token, a 2048-bit PEM key. */
const SIZE_PROBE = { roleId: "r".repeat(36), wrappedSecretId: "w".repeat(95), appKey: "k".repeat(1700) };

/**
 * user-data must fit its cloud's limit. Vault's ids exist only during `up`, so the check
 * renders with stand-ins of their real length: a too-large pool list fails here, before any
 * resource is created, rather than halfway through an update.
 */
function checkUserDataSizes(model: FleetModel): string[] {
  const problems: string[] = [];
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
      problems.push(`${keyPath(["hosts", host.name])}: ${(err as Error).message}`);
    }
  }
  return problems;
}
