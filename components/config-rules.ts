/**
 * The rules a config must keep beyond its schema, one small named function each, with the reason
 * it exists. They run in order on whatever parsed (config.ts): a rule whose sections failed the
 * schema is skipped, so one bad part never hides the problems of the others. Later rules read
 * what earlier ones derived (host facts, resolved pools, images). Pure apart from reading image
 * paths and the flake directory.
 */
import * as fs from "node:fs";
import { isIP } from "node:net";
import * as path from "node:path";
import { checkCapacity } from "./capacity";
import {
  AWS_REGIONS, AZURE_LOCATIONS, DIGITALOCEAN_REGIONS, DIGITALOCEAN_SPACES_REGIONS, EBS_VOLUME_RULES,
  HETZNER_SPREAD_GROUP_MAX, lookupInstance,
} from "./catalog";
import type { HostConfig, LoadContext, ParsedConfig, Section } from "./config-schema";
import { normalAddress, normalCidr } from "./config-values";
import { isLocalFlake } from "./deploy-commands";
import { resolveImageSource } from "./images/source";
import { ARCHES, CLOUDS, SECRET_NAMES, type Arch, type Cloud, type ImageSourceModel, type PoolModel, type SecretName } from "./model";
import { resolvePool } from "./pools";

/** What the catalog (or an existing host's config) says about a machine. */
export interface HostFacts {
  arch: Arch;
  vcpus: number;
  memoryMib: number;
  kvm: boolean;
}

/** What the rules found and derived. */
export interface Derived {
  problems: string[];
  warnings: string[];
  facts: Map<string, HostFacts>;
  pools: Record<string, PoolModel>;
  images: ImageSourceModel[];
}

interface RuleInput extends ParsedConfig {
  ctx: LoadContext;
  /** The config namespace, for commands a message tells the user to run. */
  project: string;
  out: Derived;
  /** Adds `runner-fleet:<key>: <message>`. */
  problem(key: string, message: string): void;
}

export interface Rule {
  name: string;
  /** One line: why the rule exists. */
  why: string;
  /** Sections the rule reads; it is skipped when any of them failed the schema. */
  needs: Section[];
  check(r: RuleInput): void;
}

/** The config keys that hold secrets, and what each one unlocks (exported by config.ts too). */
export const SECRET_KEYS: Record<SecretName, string> = {
  githubApp: "githubAppPrivateKey",
  giteaRunnerToken: "giteaRunnerToken",
  gitlabRunnerToken: "gitlabRunnerToken",
  cacheSigningKey: "cacheSigningKey",
};

const sorted = <T>(map: Record<string, T>): Array<[string, T]> => Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
const typeKeyOf = { aws: "instanceType", azure: "size", hetzner: "serverType", digitalocean: "size", existing: "kvm" } as const;

// ---------------------------------------------------------------------------------------------
// Pools

const poolsResolve: Rule = {
  name: "poolsResolve",
  why: "presets fill in every pool field; runners register with the pool's organization or github's",
  needs: ["pools"],
  check(r) {
    const organization = r.sections.github?.organization ?? "";
    for (const [name, input] of sorted(r.pools)) {
      const pool = resolvePool(name, input, organization);
      if (pool.minRunners > pool.maxRunners) r.problem(`pools.${name}.minRunners`, `${pool.minRunners} is more than maxRunners (${pool.maxRunners})`);
      if (pool.minRunners < 1) {
        r.problem(`pools.${name}.minRunners`, "must be at least 1: fireactions (v0.4.0) only tops a pool up to its minimum, so a pool with none never starts a runner");
      }
      if (!input.organization && !r.sections.github && !r.failed.sections.has("github")) {
        r.problem(`pools.${name}.organization`, "is required when runner-fleet:github is not set");
      }
      Object.defineProperty(r.out.pools, name, { value: pool, enumerable: true, writable: true, configurable: true });
    }
  },
};

// ---------------------------------------------------------------------------------------------
// Hosts: names, pools, addresses

const hostPoolsExist: Rule = {
  name: "hostPoolsExist",
  why: "a host runs only pools that are defined (own keys only: `constructor` is not a pool)",
  needs: ["hosts", "pools"],
  check(r) {
    const known = Object.keys(r.pools);
    for (const [name, host] of sorted(r.hosts)) {
      host.pools.forEach((pool, i) => {
        if (Object.hasOwn(r.pools, pool) || r.failed.pools.has(pool)) return;
        r.problem(`hosts.${name}.pools[${i}]`, `pool ${JSON.stringify(pool)} does not exist (defined pools: ${known.length ? known.join(", ") : "none"})`);
      });
    }
  },
};

const poolsUsed: Rule = {
  name: "poolsUsed",
  why: "a pool that no host runs starts no runner: a typo or a forgotten host, said rather than silently idle",
  needs: ["hosts", "pools"],
  check(r) {
    const run = new Set(Object.values(r.hosts).flatMap((h) => h.pools));
    // A host that failed the schema past salvage may name the pool: then nothing can be said.
    if ([...r.failed.hosts].some((h) => !Object.hasOwn(r.hosts, h))) return;
    for (const name of Object.keys(r.pools).sort()) {
      if (!run.has(name)) r.out.warnings.push(`pools.${name}: defined but no host runs it (no hosts.<name>.pools lists it); it starts no runner`);
    }
  },
};

const poolsMatchRoles: Rule = {
  name: "poolsMatchRoles",
  why: "pools run only under fireactions, and a fireactions host without pools runs nothing",
  needs: ["hosts"],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      const fireactions = host.roles.includes("fireactions");
      if (fireactions && host.pools.length === 0) r.problem(`hosts.${name}.pools`, "a fireactions host needs at least one pool");
      if (!fireactions && host.pools.length > 0) r.problem(`hosts.${name}.pools`, "pools run only on hosts with the fireactions role");
    }
  },
};

const oneForgeRunner: Rule = {
  name: "oneForgeRunner",
  why: "nixpkgs' gitea-actions-runner module has one module-wide package, so a host runs forgejo-runner or gitea-runner, not both",
  needs: ["hosts"],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      if (host.roles.includes("forgejo-runner") && host.roles.includes("gitea-runner")) {
        r.problem(`hosts.${name}.roles`, "forgejo-runner and gitea-runner cannot share a host: NixOS runs both from one services.gitea-actions-runner.package; put them on two hosts");
      }
    }
  },
};

const oneActivation: Rule = {
  name: "oneActivation",
  why: "trial activates with `test` (no boot entry) and boot with `boot` (nothing live): one host cannot do both",
  needs: ["hosts"],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      if (host.trial && host.boot) r.problem(`hosts.${name}.trial`, "cannot be combined with boot: choose test activation (trial) or boot activation (boot)");
    }
  },
};

/** The one list of names nix/ reserves; nix/lib reads the same file. */
const reservedNames = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "nix", "lib", "reserved-names.json"), "utf8")) as {
  colmena: string[]; templateRoles: string[]; arches: string[];
};

/** Names nix/ gives other things: colmena's hive attributes and the flake's `<role>-<arch>` image templates. */
const RESERVED_HOST_NAMES: ReadonlyMap<string, string> = new Map([
  ...reservedNames.colmena.map((n): [string, string] => [n, "colmena reserves it in its hive"]),
  ...reservedNames.templateRoles.flatMap((role) => reservedNames.arches.map((arch): [string, string] => [`${role}-${arch}`, "nix/ names an image template so"])),
]);

const hostNamesUsable: Rule = {
  name: "hostNamesUsable",
  why: "nix/ must be able to name every host: not a reserved name, and a Nix identifier for deploy-rs",
  needs: [],
  check(r) {
    for (const name of Object.keys(r.hosts).sort()) {
      const reserved = RESERVED_HOST_NAMES.get(name);
      if (reserved) r.problem(`hosts.${name}`, `is a reserved name: ${reserved} (nix/lib/reserved-names.json)`);
      // deploy-rs parses `flake#host` with rnix: a name starting with a digit is a number there.
      if (/^\d/.test(name)) r.problem(`hosts.${name}`, "must start with a letter: deploy-rs reads the host in flake#host as a Nix identifier");
    }
  },
};

const addressesUnique: Rule = {
  name: "addressesUnique",
  why: "two hosts at one address would deploy over each other; addresses compare in normal form",
  needs: [],
  check(r) {
    const seen = new Map<string, string>();
    for (const [name, host] of sorted(r.hosts)) {
      if (host.provider !== "existing") continue;
      const normal = normalAddress(host.address);
      if (!("normal" in normal)) continue;
      const other = seen.get(normal.normal);
      if (other) r.problem(`hosts.${name}.address`, `${host.address} is already the address of host ${other}`);
      else seen.set(normal.normal, name);
    }
  },
};

// ---------------------------------------------------------------------------------------------
// Hosts: where they go (catalog)

const regionsKnown: Rule = {
  name: "regionsKnown",
  why: "an unknown region, location or zone is refused by the cloud only after other resources exist",
  needs: [],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      const at = `hosts.${name}`;
      if (host.provider === "aws") {
        const region = host.region ?? r.ctx.awsRegion;
        const from = host.region !== undefined ? "" : " (from aws:region)";
        if (!region) r.problem(`${at}.region`, "is required (or set aws:region)");
        else if (!AWS_REGIONS.includes(region)) r.problem(`${at}.region`, `${JSON.stringify(region)}${from} is not an AWS region (components/catalog.ts AWS_REGIONS)`);
        else if (host.availabilityZone !== undefined && !new RegExp(`^${region}(-[a-z]{3}-\\d+)?[a-z]$`).test(host.availabilityZone)) {
          r.problem(`${at}.availabilityZone`, `${JSON.stringify(host.availabilityZone)} is not a zone of region ${region} (such as ${region}a)`);
        }
      }
      if (host.provider === "azure") {
        const location = host.location ?? r.ctx.azureLocation;
        const from = host.location !== undefined ? "" : " (from azure-native:location)";
        if (!location) r.problem(`${at}.location`, "is required (or set azure-native:location)");
        else if (!AZURE_LOCATIONS.includes(location)) r.problem(`${at}.location`, `${JSON.stringify(location)}${from} is not an Azure location (components/catalog.ts AZURE_LOCATIONS)`);
      }
      if (host.provider === "digitalocean") {
        if (!DIGITALOCEAN_REGIONS.includes(host.region)) {
          r.problem(`${at}.region`, `${JSON.stringify(host.region)} is not a DigitalOcean region (components/catalog.ts DIGITALOCEAN_REGIONS)`);
        } else if (host.image === "nix" && !Object.hasOwn(DIGITALOCEAN_SPACES_REGIONS, host.region)) {
          r.problem(`${at}.region`, `no Spaces region serves ${host.region}, so a nix image cannot be imported there; use image: stock`);
        }
      }
    }
  },
};

const spreadGroupsFit: Rule = {
  name: "spreadGroupsFit",
  why: "a Hetzner spread placement group holds at most 10 servers; the 11th fails at create",
  needs: [],
  check(r) {
    const members = new Map<string, string[]>();
    for (const [name, host] of sorted(r.hosts)) {
      if (host.provider === "hetzner" && host.placementGroup) members.set(host.placementGroup, [...(members.get(host.placementGroup) ?? []), name]);
    }
    for (const [group, hosts] of members) {
      if (hosts.length <= HETZNER_SPREAD_GROUP_MAX) continue;
      for (const name of hosts.slice(HETZNER_SPREAD_GROUP_MAX)) {
        r.problem(`hosts.${name}.placementGroup`, `spread group ${group} already has ${HETZNER_SPREAD_GROUP_MAX} servers (${hosts.length} name it); Hetzner allows ${HETZNER_SPREAD_GROUP_MAX}`);
      }
    }
  },
};

const dataVolumesValid: Rule = {
  name: "dataVolumesValid",
  why: "EBS refuses duplicate devices, io2 without iops, iops or throughput where the type has none, and sizes out of range",
  needs: [],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      if (host.provider !== "aws") continue;
      const devices = new Map<string, string>();
      for (const [vol, v] of sorted(host.dataVolumes)) {
        const at = `hosts.${name}.dataVolumes.${vol}`;
        // /dev/sdf and /dev/xvdf are one device to EC2 (the kernel renames one to the other).
        const device = v.deviceName.replace(/^\/dev\/xvd/, "/dev/sd");
        const other = devices.get(device);
        if (other) r.problem(`${at}.deviceName`, `${v.deviceName} is already the device of data volume ${other}`);
        else devices.set(device, vol);
        const rule = EBS_VOLUME_RULES[v.type];
        if (v.sizeGib < rule.sizeGib[0] || v.sizeGib > rule.sizeGib[1]) r.problem(`${at}.sizeGib`, `a ${v.type} volume is ${rule.sizeGib[0]} to ${rule.sizeGib[1]} GiB, got ${v.sizeGib}`);
        if (rule.iops === "required" && v.iops === undefined) r.problem(`${at}.iops`, `is required for ${v.type} volumes`);
        if (rule.iops === "none" && v.iops !== undefined) r.problem(`${at}.iops`, `${v.type} volumes take no iops`);
        if (Array.isArray(rule.iopsRange) && v.iops !== undefined && (v.iops < rule.iopsRange[0] || v.iops > rule.iopsRange[1])) {
          r.problem(`${at}.iops`, `a ${v.type} volume takes ${rule.iopsRange[0]} to ${rule.iopsRange[1]} iops, got ${v.iops}`);
        }
        if (!rule.throughput && v.throughput !== undefined) r.problem(`${at}.throughput`, `only gp3 volumes take a throughput, not ${v.type}`);
        if (rule.throughput && v.throughput !== undefined && (v.throughput < rule.throughput[0] || v.throughput > rule.throughput[1])) {
          r.problem(`${at}.throughput`, `a ${v.type} volume takes ${rule.throughput[0]} to ${rule.throughput[1]} MiB/s, got ${v.throughput}`);
        }
      }
    }
  },
};

// ---------------------------------------------------------------------------------------------
// Hosts: what they are (catalog, KVM, capacity)

const hostFactsKnown: Rule = {
  name: "hostFactsKnown",
  why: "capacity and KVM are checked from the catalog, so every instance type must be in it",
  needs: [],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      if (host.provider === "existing") {
        r.out.facts.set(name, { arch: host.arch, vcpus: host.vcpus, memoryMib: host.memoryMib, kvm: host.kvm });
        continue;
      }
      const type = host.provider === "aws" ? host.instanceType : host.provider === "hetzner" ? host.serverType : host.size;
      const spec = lookupInstance(host.provider, type);
      if (!spec) {
        r.problem(`hosts.${name}.${typeKeyOf[host.provider]}`, `${JSON.stringify(type)} is not in the ${host.provider} catalog (components/catalog.ts); add its vCPUs, memory and KVM support there`);
        continue;
      }
      const kvm = spec.kvm === "metal" || spec.kvm === "nested" || (host.provider === "digitalocean" && host.allowUndocumentedKvm);
      r.out.facts.set(name, { arch: spec.arch, vcpus: spec.vcpus, memoryMib: spec.memoryMib, kvm });
    }
  },
};

const KVM_ADVICE = {
  aws: "only *.metal types and C8i/M8i/R8i (nested virtualization) expose /dev/kvm",
  azure: "use a size with nested virtualization (Dsv3, Ddsv4, Ddsv5, Edsv5, Fsv2 ...)",
  hetzner: "Hetzner Cloud servers have no /dev/kvm; use this host for cache or forgejo-runner",
  digitalocean: "DigitalOcean does not document nested virtualization; set allowUndocumentedKvm: true to try anyway",
  existing: "set kvm: true if the machine exposes /dev/kvm",
} as const;

const fireactionsHasKvm: Rule = {
  name: "fireactionsHasKvm",
  why: "Firecracker needs /dev/kvm",
  needs: [],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      const facts = r.out.facts.get(name);
      if (facts && host.roles.includes("fireactions") && !facts.kvm) {
        r.problem(`hosts.${name}.${typeKeyOf[host.provider]}`, `the fireactions role needs KVM: ${KVM_ADVICE[host.provider]}`);
      }
    }
  },
};

/** Stock images are installed by nixos-anywhere; existing machines only with install: true. */
const installsStock = (host: HostConfig): boolean =>
  host.provider === "existing" ? host.install : host.provider === "hetzner" || host.provider === "digitalocean" ? host.image === "stock" : false;

const stockInstallFits: Rule = {
  name: "stockInstallFits",
  why: "nixos-anywhere needs 2048 MiB to install NixOS",
  needs: [],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      const facts = r.out.facts.get(name);
      if (facts && installsStock(host) && facts.memoryMib < 2048) {
        r.problem(`hosts.${name}`, `nixos-anywhere needs at least 2048 MiB of memory to install NixOS (this host has ${facts.memoryMib})`);
      }
    }
  },
};

const poolsFitHosts: Rule = {
  name: "poolsFitHosts",
  why: "a host's pools at their maximum must fit its vCPUs and memory",
  needs: ["hosts", "pools", "capacity"],
  check(r) {
    const capacity = r.sections.capacity;
    if (!capacity) return;
    for (const [name, host] of sorted(r.hosts)) {
      const facts = r.out.facts.get(name);
      if (!facts) continue;
      const pools = host.pools.filter((p) => Object.hasOwn(r.out.pools, p)).map((p) => r.out.pools[p]);
      for (const finding of checkCapacity(facts, pools, capacity)) r.problem(`hosts.${name}.pools`, finding);
    }
  },
};

// ---------------------------------------------------------------------------------------------
// Images

/** The cloud whose uploaded image a host boots from, if any. */
function imageCloud(host: HostConfig): Cloud | undefined {
  if (host.provider === "existing") return undefined;
  if (host.provider === "aws" || host.provider === "azure") return host.provider;
  return host.image === "nix" ? host.provider : undefined;
}

const imagesConfigured: Rule = {
  name: "imagesConfigured",
  why: "every (cloud, arch) a host boots from needs an image built for that arch",
  needs: ["hosts", "images"],
  check(r) {
    const images = r.sections.images ?? {};
    const needed = new Map<string, string[]>();
    for (const [name, host] of sorted(r.hosts)) {
      const cloud = imageCloud(host);
      const facts = r.out.facts.get(name);
      if (!cloud || !facts) continue;
      const key = `${cloud}.${facts.arch}`;
      needed.set(key, [...(needed.get(key) ?? []), name]);
    }
    for (const [key, users] of [...needed].sort(([a], [b]) => a.localeCompare(b))) {
      const [cloud, arch] = key.split(".") as [Cloud, Arch];
      const input = images[cloud]?.[arch];
      if (!input) {
        r.problem(`images.${cloud}.${arch}`, `is required: host${users.length > 1 ? "s" : ""} ${users.join(", ")} boot${users.length > 1 ? "" : "s"} from a ${arch} ${cloud} image`);
        continue;
      }
      const resolved = resolveImageSource(cloud, arch, input, { baseDir: r.ctx.baseDir, requireFiles: r.ctx.requireImageFiles });
      if (!resolved.ok) {
        for (const p of resolved.problems) r.problem(p.key, p.message);
        continue;
      }
      if (resolved.warning) r.out.warnings.push(resolved.warning);
      if (!/-(x86_64|aarch64)-linux/.test(resolved.image.storePath) || resolved.image.storePath.includes(`-${arch}-linux`)) {
        r.out.images.push(resolved.image);
      } else {
        r.problem(`images.${cloud}.${arch}.path`, `${resolved.image.storePath} is built for another architecture than ${arch}`);
      }
    }
    for (const cloud of CLOUDS) {
      for (const arch of ARCHES) {
        if (images[cloud]?.[arch] && !needed.has(`${cloud}.${arch}`)) {
          r.out.warnings.push(`images.${cloud}.${arch}: configured but no host boots from it; it is not uploaded`);
        }
      }
    }
  },
};

// ---------------------------------------------------------------------------------------------
// Services, secrets, Vault

const rolesHaveServices: Rule = {
  name: "rolesHaveServices",
  why: "each role talks to a service and needs its credentials before a host starts",
  needs: ["hosts", "github", "forgejo", "gitea", "gitlab"],
  check(r) {
    const roles = new Set(Object.values(r.hosts).flatMap((h) => h.roles));
    const { github, forgejo, gitea, gitlab, vault } = r.sections;
    // A vault section that failed elsewhere may still name its external secrets correctly.
    const rawList = (r.raw.vault as { externalSecrets?: unknown } | undefined)?.externalSecrets ?? [];
    const listed = vault?.externalSecrets ?? (Array.isArray(rawList) && rawList.every((s) => (SECRET_NAMES as readonly unknown[]).includes(s)) ? rawList as SecretName[] : undefined);
    if (!listed) return;
    const external = new Set(listed);
    const needSecret = (secret: SecretName, role: string) => {
      const key = SECRET_KEYS[secret];
      if (!external.has(secret) && !r.ctx.secretsSet.has(key)) {
        r.problem(key, `not set; the ${role} role needs it: run pulumi config set --secret ${r.project}:${key} (the value as an argument or on stdin), or add ${secret} to vault.externalSecrets if it is already in Vault`);
      }
    };
    if (roles.has("fireactions")) {
      if (!github) r.problem("github", "is required by the fireactions role (organization, appId)");
      else if (!github.appId) r.problem("github.appId", "is required by the fireactions role");
      needSecret("githubApp", "fireactions");
    }
    if (roles.has("forgejo-runner") && !forgejo) r.problem("forgejo", "is required by the forgejo-runner role (url)");
    if (roles.has("gitea-runner")) {
      if (!gitea) r.problem("gitea", "is required by the gitea-runner role (url)");
      needSecret("giteaRunnerToken", "gitea-runner");
    }
    if (roles.has("gitlab-runner")) {
      if (!gitlab) r.problem("gitlab", "is required by the gitlab-runner role (url)");
      needSecret("gitlabRunnerToken", "gitlab-runner");
    }
    if (roles.has("cache")) needSecret("cacheSigningKey", "cache");
  },
};

const fleetCacheUsable: Rule = {
  name: "fleetCacheUsable",
  why: "hosts trust a cache only by its public key and its TLS certificate: both must be known before any host is built",
  needs: ["hosts", "cache", "vault"],
  check(r) {
    const cache = r.sections.cache;
    if (!cache) return;
    const cacheHosts = sorted(r.hosts).filter(([, h]) => h.roles.includes("cache")).map(([name]) => name);
    for (const name of Object.keys(cache.domains).sort()) {
      if (!cacheHosts.includes(name)) r.problem(`cache.domains.${name}`, r.hosts[name] ? "is not a cache host (it has no cache role)" : "is not a host of this stack");
    }
    const on = cache.useFleetCache ?? cacheHosts.length > 0;
    if (cache.useFleetCache === true && cacheHosts.length === 0) r.problem("cache.useFleetCache", "is on but no host has the cache role");
    if (cacheHosts.length === 0 || !on) {
      if (cache.publicKey) r.out.warnings.push("cache.publicKey is set but has no effect: no host substitutes from a fleet cache");
      return;
    }
    // The public key is derived from cacheSigningKey; a key kept only in Vault never reaches the program.
    // Asked for explicitly, that is an error; by default, the fleet cache is just not used.
    if (!cache.publicKey && r.sections.vault?.externalSecrets.includes("cacheSigningKey")) {
      const why = "the program cannot derive the public key from a signing key it never reads (cacheSigningKey is in vault.externalSecrets): set it (nix key convert-secret-to-public < cache-signing-key)";
      if (cache.useFleetCache === true) r.problem("cache.publicKey", `is required: ${why}`);
      else r.out.warnings.push(`cache.publicKey: not set, so no host substitutes from the fleet cache; ${why}`);
      return;
    }
    for (const name of cacheHosts) {
      if (!cache.domains[name]) {
        r.out.warnings.push(`cache.domains.${name}: not set; ${name} serves with Caddy's internal CA, which no other host trusts, so no host substitutes from it. Set a DNS name that points at it (Caddy then gets an ACME certificate)`);
      }
    }
  },
};

const sshExposure: Rule = {
  name: "sshExposure",
  why: "port 22 is open only to who the config names; the whole world only when said so, and warned",
  needs: ["ssh", "hosts"],
  check(r) {
    const ssh = r.sections.ssh;
    if (!ssh) return;
    const cloudHosts = Object.values(r.hosts).some((h) => h.provider !== "existing");
    const seen = new Map<string, number>();
    ssh.adminCidrs.forEach((cidr, i) => {
      const normal = normalCidr(cidr);
      if (!("normal" in normal)) return;
      const twin = seen.get(normal.normal);
      if (twin !== undefined) r.problem(`ssh.adminCidrs[${i}]`, `is the same network as ssh.adminCidrs[${twin}]`);
      seen.set(normal.normal, i);
      if (normal.prefix === 0) r.out.warnings.push(`ssh.adminCidrs[${i}]: ${cidr} opens port 22 to every ${normal.family === 4 ? "IPv4" : "IPv6"} address; say so with allowFromAnywhere: true, or narrow it`);
    });
    if (ssh.allowFromAnywhere) {
      r.out.warnings.push(cloudHosts
        ? "ssh.allowFromAnywhere is on: port 22 is open to 0.0.0.0/0 and ::/0"
        : "ssh.allowFromAnywhere is set but has no effect: no host is in a cloud (existing machines keep their own firewall)");
    } else if (ssh.adminCidrs.length === 0 && cloudHosts) {
      r.problem("ssh.adminCidrs", "is required: the CIDRs allowed to reach SSH (or set ssh.allowFromAnywhere: true)");
    }
  },
};

const existingHostsDeployable: Rule = {
  name: "existingHostsDeployable",
  why: "an adopted machine must be installable and reachable by the deploy tool, with its host key pinned where known",
  needs: ["hosts", "deploy"],
  check(r) {
    for (const [name, host] of sorted(r.hosts)) {
      if (host.provider !== "existing") continue;
      const at = `hosts.${name}`;
      if (host.install && !host.installDisk) {
        r.problem(`${at}.installDisk`, "is required with install: true: nixos-anywhere partitions this disk with disko (e.g. /dev/disk/by-id/...), wiping it");
      }
      if (!host.hostKey) {
        r.out.warnings.push(`${at}.hostKey: not set; the deploy trusts the key ${host.address} offers on first contact. Set it (cat /etc/ssh/ssh_host_ed25519_key.pub on the machine) to pin it`);
      }
      // colmena builds ssh-ng://user@<address> without brackets (docs/upstream.md).
      if (r.sections.deploy?.tool === "colmena" && isIP(host.address) === 6) {
        r.problem(`${at}.address`, "colmena cannot deploy to an IPv6 address (it builds ssh-ng://user@<address> without brackets); use a DNS name or deploy-rs");
      }
    }
  },
};

const optInsTakeEffect: Rule = {
  name: "optInsTakeEffect",
  why: "an unsafe or unusual opt-in is announced only where it acts; one that cannot act is said to do nothing",
  needs: ["hosts", "unsafe", "vault"],
  check(r) {
    const fireactionsHosts = Object.values(r.hosts).filter((h) => h.roles.includes("fireactions")).length;
    // With the key in Vault only, this stack never holds it, so user-data gets none (fleet.ts).
    const keyInVault = (r.sections.vault?.externalSecrets ?? []).includes("githubApp");
    if (r.sections.unsafe?.githubAppKeyInUserData && keyInVault) {
      r.problem("unsafe.githubAppKeyInUserData", "cannot be combined with githubApp in vault.externalSecrets: the key is then only in Vault, never in this stack, so it would not be written into user-data; remove one of the two");
    } else if (r.sections.unsafe?.githubAppKeyInUserData) {
      r.out.warnings.push(fireactionsHosts > 0
        ? "unsafe.githubAppKeyInUserData is on: the GitHub App private key is written into user-data, which any process on the host (and, on Hetzner and DigitalOcean, anything that reaches the metadata service) can read"
        : "unsafe.githubAppKeyInUserData is set but has no effect: no host has the fireactions role");
    }
    for (const [name, host] of sorted(r.hosts)) {
      if (host.provider === "digitalocean" && host.allowUndocumentedKvm) {
        r.out.warnings.push(host.roles.includes("fireactions")
          ? `hosts.${name}: allowUndocumentedKvm is set; DigitalOcean does not document nested virtualization, so fireactions may not start`
          : `hosts.${name}: allowUndocumentedKvm is set but has no effect: the host has no fireactions role`);
      }
      if (host.replaceOnImageChange && imageCloud(host) === undefined) {
        r.out.warnings.push(`hosts.${name}: replaceOnImageChange is set but has no effect: the host does not boot from an uploaded image`);
      }
    }
  },
};

const deployFlakeExists: Rule = {
  name: "deployFlakeExists",
  why: "every deploy reads the flake; a missing flake.nix fails every host at its first deploy",
  needs: ["deploy"],
  check(r) {
    const deploy = r.sections.deploy;
    if (!deploy) return;
    if (!isLocalFlake(deploy.flake)) {
      if (deploy.tool === "colmena") r.problem("deploy.flake", "colmena deploys from a local flake directory, not a flake URL");
      return;
    }
    const dir = path.resolve(r.ctx.baseDir, deploy.flake);
    if (!fs.existsSync(path.join(dir, "flake.nix"))) r.problem("deploy.flake", `${deploy.flake} has no flake.nix (looked in ${dir})`);
  },
};

const legacyNamesAreHosts: Rule = {
  name: "legacyNamesAreHosts",
  why: "a name kept for a host the stack does not have would be a typo, and that host would be renamed",
  needs: ["hosts", "vault"],
  check(r) {
    const listed = r.sections.vault?.legacyNames;
    if (!Array.isArray(listed)) return;
    listed.forEach((name, i) => {
      if (!Object.prototype.hasOwnProperty.call(r.hosts, name)) r.problem(`vault.legacyNames[${i}]`, `${name} is not a host of this stack`);
    });
  },
};

const unboundHostsAreHosts: Rule = {
  name: "unboundHostsAreHosts",
  why: "an exception for a host the stack does not have would be a typo, and the host meant would stay bound",
  needs: ["hosts", "vault"],
  check(r) {
    (r.sections.vault?.unboundHosts ?? []).forEach((name, i) => {
      if (!Object.prototype.hasOwnProperty.call(r.hosts, name)) r.problem(`vault.unboundHosts[${i}]`, `${name} is not a host of this stack`);
    });
  },
};

const dataDisksAndMirrorValid: Rule = {
  name: "dataDisksAndMirrorValid",
  why: "each disk purpose needs what uses it, one disk per purpose, and the mirror's ports must fit below 65536",
  needs: ["registryMirror"],
  check(r) {
    const fleet = r.sections.registryMirror;
    if (!fleet) return;
    // The fleet's list is checked against each host's upstreams; say each key once.
    const credProblems = new Set<string>();
    for (const [name, host] of sorted(r.hosts)) {
      const m = { ...fleet, ...(host.registryMirror ?? {}) };
      const upstreams = Object.keys(m.upstreams).length;
      const at = host.registryMirror?.firstPort !== undefined || host.registryMirror?.upstreams ? `hosts.${name}.registryMirror` : "registryMirror";
      if (upstreams === 0 && m.enable) r.problem(`${at}.upstreams`, "must name at least one upstream registry (or set enable: false)");
      if (m.firstPort + upstreams - 1 > 65535) r.problem(`${at}.firstPort`, `${upstreams} upstreams from port ${m.firstPort} go past 65535`);
      if (host.registryMirror && !host.roles.includes("fireactions")) r.problem(`hosts.${name}.registryMirror`, "only fireactions hosts run the registry mirror");
      // A host that overrides upstreams is checked against its own list, at its own key.
      const credAt = host.registryMirror?.credentials || host.registryMirror?.upstreams ? `hosts.${name}.registryMirror` : "registryMirror";
      m.credentials.forEach((up, i) => {
        const key = `${credAt}.credentials[${i}]`;
        if (up in m.upstreams || credProblems.has(key)) return;
        credProblems.add(key);
        r.problem(key, `${up} is not one of the mirror's upstreams (${Object.keys(m.upstreams).sort().join(", ") || "none"})`);
      });
      const disks: Array<{ at: string; purpose?: string; mountPoint?: string }> = [];
      if (host.provider === "aws") for (const [vol, v] of sorted(host.dataVolumes)) disks.push({ at: `hosts.${name}.dataVolumes.${vol}`, purpose: v.purpose, mountPoint: v.mountPoint });
      if (host.provider === "azure") {
        const at2 = `hosts.${name}`;
        if ((host.dataDiskPurpose || host.dataDiskMountPoint) && !host.dataDiskGib) r.problem(`${at2}.dataDiskPurpose`, "needs dataDiskGib: the host has no data disk");
        else disks.push({ at: at2, purpose: host.dataDiskPurpose, mountPoint: host.dataDiskMountPoint });
      }
      const seen = new Map<string, string>();
      for (const d of disks) {
        const azure = host.provider === "azure";
        const purposeKey = azure ? `${d.at}.dataDiskPurpose` : `${d.at}.purpose`;
        const mountKey = azure ? `${d.at}.dataDiskMountPoint` : `${d.at}.mountPoint`;
        if (d.purpose === "mount" && !d.mountPoint) r.problem(mountKey, "is required with purpose mount");
        if (d.purpose !== "mount" && d.mountPoint) r.problem(mountKey, "is only for purpose mount");
        if ((d.purpose === "containerd" || d.purpose === "registry-cache") && !host.roles.includes("fireactions")) r.problem(purposeKey, `${d.purpose} is used by fireactions hosts only`);
        if (d.purpose === "registry-cache" && !m.enable) r.problem(purposeKey, "registry-cache needs the registry mirror enabled");
        if (d.purpose === "containerd" || d.purpose === "registry-cache") {
          const other = seen.get(d.purpose);
          if (other) r.problem(purposeKey, `${d.purpose} is already the purpose of ${other}`);
          else seen.set(d.purpose, d.at);
        }
        if (d.purpose === "mount" && d.mountPoint && /^\/(nix|boot|etc|run|proc|sys|dev|usr|var\/lib\/containerd)(\/|$)|^\/$/.test(d.mountPoint)) {
          r.problem(mountKey, `${d.mountPoint} is a system path; mount user data elsewhere (e.g. /srv/...)`);
        }
      }
    }
  },
};

/** Every rule, in the order they run. */
export const RULES: readonly Rule[] = [
  poolsResolve, hostPoolsExist, poolsUsed, poolsMatchRoles, oneForgeRunner, oneActivation, hostNamesUsable, addressesUnique,
  regionsKnown, spreadGroupsFit, dataVolumesValid, dataDisksAndMirrorValid,
  hostFactsKnown, fireactionsHasKvm, stockInstallFits, poolsFitHosts,
  imagesConfigured, rolesHaveServices, fleetCacheUsable, sshExposure, existingHostsDeployable, optInsTakeEffect, deployFlakeExists,
  legacyNamesAreHosts,
  unboundHostsAreHosts,
];

/** Runs every rule whose sections parsed. */
export function runRules(parsed: ParsedConfig, ctx: LoadContext, project: string): Derived {
  const out: Derived = { problems: [], warnings: [], facts: new Map(), pools: {}, images: [] };
  const input: RuleInput = { ...parsed, ctx, project, out, problem: (key, message) => out.problems.push(`${project}:${key}: ${message}`) };
  for (const rule of RULES) {
    if (rule.needs.some((s) => parsed.failed.sections.has(s))) continue;
    rule.check(input);
  }
  return out;
}
