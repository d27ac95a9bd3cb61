/**
 * Stack config -> validated fleet model. Each part is parsed against its schema
 * (config-schema.ts), then the named rules that span keys run (config-rules.ts: pools that exist,
 * regions, KVM, capacity, images, secrets). Every problem is collected and reported at once as `runner-fleet:<key path>: <what
 * is wrong>`, even when other parts fail the schema; no message quotes a secret, and nothing here
 * touches the Pulumi runtime.
 */
import { dataDisksFor, registryMirrorFor } from "./registry-mirror";
import { z } from "zod";
import { lookupInstance } from "./catalog";
import { type Derived, type HostFacts, runRules, SECRET_KEYS } from "./config-rules";
import {
  FleetConfigSchema, HostSchema, Name, PoolSchema, type FleetConfig, type HostConfig, type LoadContext, type ParsedConfig, type Section,
} from "./config-schema";
import { forbiddenCharacter, normalAddress } from "./config-values";
import { renderUserData } from "./cloud-init";
import { normalizeHostKey } from "./deploy-commands";
import { PROVIDERS, type FleetModel, type HostModel } from "./model";
import { renderPoolsJson } from "./pools";

export { SECRET_KEYS };

export const PROJECT = "runner-fleet";

/** Thrown with every problem found; `index.ts` turns it into a clean error without a stack. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
  }
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
    // An entry that failed is still cross-checked on the fields that did parse (salvage).
    const data = parsed.success ? parsed.data : salvage(entry, value, parsed.error.issues);
    if (named.success && data !== undefined) Object.defineProperty(out, name, { value: data, enumerable: true, writable: true, configurable: true });
    if (!named.success || !parsed.success) failed.add(name);
  }
  return out;
}

type Path = ReadonlyArray<PropertyKey>;

/** Own keys only: a config key such as `valueOf` is not Object.prototype's. */
function valueAt(root: unknown, path: Path): unknown {
  let at: unknown = root;
  for (const part of path) at = isMap(at) && Object.hasOwn(at, part) ? at[part as string] : undefined;
  return at;
}

function removeAt(root: unknown, path: Path): void {
  const at = valueAt(root, path.slice(0, -1));
  if (isMap(at)) delete at[path[path.length - 1] as string];
}

/**
 * An entry without the fields that failed, so the cross-field rules still check the rest of it
 * (every problem at once). A list that failed anywhere goes whole. Nothing is guessed: when a
 * removed field takes a schema default, the object holding it is left out of the checks (the whole
 * entry, for a field of the entry itself), and an entry that still fails (a required field went) is
 * not checked at all. The salvaged entry only feeds rules; no model is built from a failed config.
 */
function salvage<T>(entry: z.ZodType<T>, value: unknown, issues: z.core.$ZodIssue[]): T | undefined {
  if (!isMap(value)) return undefined;
  const copy = structuredClone(value);
  let found = issues;
  const removed: Path[] = [];
  for (let round = 0; round < 4; round++) {
    for (const issue of found) {
      const cut = issue.path.findIndex((p) => typeof p === "number");
      const at = cut === -1 ? issue.path : issue.path.slice(0, cut);
      if (issue.code === "unrecognized_keys" && cut === -1) removed.push(...issue.keys.map((k) => [...at, k]));
      else removed.push(at);
    }
    if (removed.some((p) => p.length === 0)) return undefined;
    for (const p of removed) removeAt(copy, p);
    const again = entry.safeParse(copy);
    if (!again.success) {
      found = again.error.issues;
      continue;
    }
    const data = again.data as unknown;
    for (const p of removed) {
      if (valueAt(data, p) === undefined) continue;
      // A default inside a map entry (a data volume's type): that entry goes; elsewhere, the whole entry.
      if (p.length < 3) return undefined;
      removeAt(data, p.slice(0, -1));
    }
    return data as T;
  }
  return undefined;
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

function hostModel(name: string, host: HostConfig, facts: HostFacts, ctx: LoadContext, cfg: FleetConfig): HostModel {
  const base = {
    name,
    roles: host.roles,
    pools: [...host.pools].sort(),
    tags: host.tags,
    protect: host.protect,
    replaceOnImageChange: host.replaceOnImageChange,
    boot: host.boot,
    trial: host.trial,
    registryMirror: registryMirrorFor(cfg.registryMirror, host),
    dataDisks: dataDisksFor(host),
    thinPoolEncrypt: host.thinPoolEncrypt,
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
  const hosts = Object.keys(parsed.hosts).sort().map((name) => hostModel(name, parsed.hosts[name], derived.facts.get(name) as HostFacts, ctx, cfg));
  return {
    stack: ctx.stack,
    ssh: cfg.ssh,
    ...(cfg.github ? { github: cfg.github } : {}),
    ...(cfg.forgejo ? { forgejo: cfg.forgejo } : {}),
    ...(cfg.gitea ? { gitea: cfg.gitea } : {}),
    ...(cfg.gitlab ? { gitlab: cfg.gitlab } : {}),
    cache: {
      useFleetCache: cfg.cache.useFleetCache ?? hosts.some((h) => h.roles.includes("cache")),
      ...(cfg.cache.publicKey ? { publicKey: cfg.cache.publicKey.trim() } : {}),
      domains: cfg.cache.domains,
      extraSubstituters: cfg.cache.extraSubstituters,
      connectTimeout: cfg.cache.connectTimeout,
      push: cfg.cache.push,
    },
    pools: derived.pools,
    hosts,
    images: derived.images,
    vault: cfg.vault,
    deploy: cfg.deploy,
    capacity: cfg.capacity,
    unsafe: cfg.unsafe,
    monitoring: cfg.monitoring,
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
