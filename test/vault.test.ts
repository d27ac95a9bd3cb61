/**
 * Vault: KV paths, per-host policies, AppRoles and wrapped secret_ids; secrets stay secret from
 * config to Vault and never show in plan output. Mocks are installed before the component loads.
 */
import { execFileSync } from "node:child_process";
import { beforeAll, describe, expect, it } from "vitest";
import * as pulumi from "@pulumi/pulumi";
import { containsSecret, installMocks, reveal, settle, type RecordedResource } from "../scripts/mock-runtime";
import { registrationsSettled } from "./support/mocks";
import { baseConfig, mockConfig, modelFrom, PLANTED_SECRETS, planJson, runPlan, writeStackFile } from "./support/fixtures";
import { ConfigError } from "../components/config";
import type { FleetModel, HostModel } from "../components/model";
import { hostKvPaths, policyFor, secretFilesFor, sshHostKeyApiPath } from "../components/vault-paths";

const { resources } = installMocks({ stack: "test", ...mockConfig(baseConfig()) });
const { BINDING_FIELDS, FleetVault, MAX_CHILD_TOKEN_SECONDS, boundCidrs, durationSeconds, hostCidr, policyName, providerMaxLeaseTtlSeconds, randomHexCommand, roleBindingJson, roleName, vaultNames } = await import("../components/vault");
const { captureOptions } = await import("./support/mocks");

const T = {
  mount: "vault:index/mount:Mount",
  auth: "vault:index/authBackend:AuthBackend",
  kv: "vault:kv/secretV2:SecretV2",
  policy: "vault:index/policy:Policy",
  role: "vault:appRole/authBackendRole:AuthBackendRole",
  secretId: "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId",
  provider: "pulumi:providers:vault",
  command: "command:local:Command",
};

/** Every role, with host names that are prefixes of each other (hosts/gitea vs hosts/gitea-2). */
function fullConfig(): Record<string, any> {
  const cfg = baseConfig();
  cfg.hosts = {
    ...cfg.hosts,
    onprem: {
      provider: "existing", address: "192.0.2.10", privateAddress: "10.0.0.5", arch: "x86_64", vcpus: 16, memoryMib: 32768, kvm: true,
      roles: ["fireactions", "forgejo-runner"], pools: ["small"],
    },
    v6: { provider: "existing", address: "2001:db8::10", arch: "x86_64", vcpus: 4, memoryMib: 8192, roles: ["cache"] },
    named: { provider: "existing", address: "runner.example.org", arch: "x86_64", vcpus: 4, memoryMib: 8192, roles: ["gitea-runner"] },
    cache: { provider: "hetzner", serverType: "ccx23", location: "fsn1", roles: ["cache"] },
    gitea: { provider: "digitalocean", size: "s-4vcpu-8gb", region: "fra1", roles: ["gitea-runner"] },
    "gitea-2": { provider: "digitalocean", size: "s-4vcpu-8gb", region: "fra1", roles: ["gitea-runner"] },
  };
  return cfg;
}

const planted = () => ({
  githubApp: pulumi.secret(PLANTED_SECRETS.githubAppPrivateKey),
  giteaRunnerToken: pulumi.secret(PLANTED_SECRETS.giteaRunnerToken),
  cacheSigningKey: pulumi.secret(PLANTED_SECRETS.cacheSigningKey),
});

const quiet = () => registrationsSettled(resources);

/** Paths named in a rendered policy, and the capabilities each one gets. */
function parsePolicy(hcl: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of hcl.matchAll(/path "([^"]+)" \{\s*capabilities = (\[[^\]]*\])\s*\}/g)) out.set(m[1], m[2]);
  return out;
}

const byType = (rs: RecordedResource[], type: string) => rs.filter((r) => r.type === type);
const one = (rs: RecordedResource[], type: string, name: string) => {
  const found = rs.filter((r) => r.type === type && r.name === name);
  expect(found, `${type} ${name}`).toHaveLength(1);
  return found[0];
};

// ---------------------------------------------------------------------------------------------

describe("pure helpers", () => {
  it("converts config durations to seconds and rejects other forms", () => {
    expect(durationSeconds("90s")).toBe(90);
    expect(durationSeconds("30m")).toBe(1800);
    expect(durationSeconds("2h")).toBe(7200);
    expect(() => durationSeconds("2 hours")).toThrow(/not a duration/);
  });

  it("binds only existing hosts with IP addresses, v4 as /32 and v6 as /128", () => {
    const model = modelFrom(fullConfig());
    const host = (n: string) => model.hosts.find((h) => h.name === n)!;
    expect(boundCidrs(host("onprem"))).toEqual(["192.0.2.10/32", "10.0.0.5/32"]);
    expect(boundCidrs(host("v6"))).toEqual(["2001:db8::10/128"]);
    expect(boundCidrs(host("named"))).toEqual([]);
    expect(boundCidrs(host("metal"))).toEqual([]);
    expect(boundCidrs(host("gitea"))).toEqual([]);
  });

  it("writes a cloud host's binding as Vault reads it back: sorted keys, token CIDRs of one address bare (#24 item 9)", () => {
    expect(hostCidr("203.0.113.7")).toBe("203.0.113.7/32");
    // Vault prints IPv6 in RFC 5952 form; another spelling would differ on every read-back.
    expect(hostCidr("2001:DB8:0:0:0:0:0:10")).toBe("2001:db8::10/128");
    // A network the machine owns whole (a Hetzner server's IPv6 /64) stays a network.
    expect(hostCidr("2A01:4F8:C17:1234:0:0:0:0/64")).toBe("2a01:4f8:c17:1234::/64");
    expect(hostCidr("203.0.113.0/24")).toBe("203.0.113.0/24");
    expect(hostCidr("runner.example.org")).toBeUndefined();
    expect(hostCidr("")).toBeUndefined();
    expect(hostCidr(undefined)).toBeUndefined();
    const json = roleBindingJson(["203.0.113.7", "10.20.0.7", undefined, "", "203.0.113.7", "2001:db8::10"]);
    expect(json).toBe('{"secret_id_bound_cidrs":["203.0.113.7/32","10.20.0.7/32","2001:db8::10/128"],"token_bound_cidrs":["203.0.113.7","10.20.0.7","2001:db8::10"]}');
    // Unbound (vault.unboundHosts) or no IP at all: both lists written empty, which clears them.
    expect(roleBindingJson(["203.0.113.7", "2a01:4f8:c17:1234::/64"])).toBe('{"secret_id_bound_cidrs":["203.0.113.7/32","2a01:4f8:c17:1234::/64"],"token_bound_cidrs":["203.0.113.7","2a01:4f8:c17:1234::/64"]}');
    expect(roleBindingJson(["203.0.113.7"], false)).toBe('{"secret_id_bound_cidrs":[],"token_bound_cidrs":[]}');
    expect(roleBindingJson([undefined, ""])).toBe('{"secret_id_bound_cidrs":[],"token_bound_cidrs":[]}');
  });

  it("gives the provider's child token the whole rollout: waves of step timeouts, in days, at most 768h (#24 item 1)", () => {
    const model = modelFrom(fullConfig());
    const hosts = (n: number) => Array.from({ length: n }, (_, i) => ({ ...model.hosts[0], name: `h${i}`, image: "nix" as const }));
    const deploy = { ...model.deploy, batchSize: 10 };
    // One wave of the defaults: minutes, so a day.
    expect(providerMaxLeaseTtlSeconds({ hosts: hosts(10), deploy })).toBe(86_400);
    // The README's 1,000 hosts in waves of 10 at default timeouts: 100 waves of 2h05 (not 1200 s).
    const perWave = (deploy.readyTimeoutMinutes + 1) + deploy.readyTimeoutMinutes + deploy.switchTimeoutMinutes + deploy.drainTimeoutMinutes + 2 + 11 + deploy.readyTimeoutMinutes + 1 + 11;
    const minutes = 100 * perWave + deploy.drainTimeoutMinutes + 2;
    expect(providerMaxLeaseTtlSeconds({ hosts: hosts(1000), deploy })).toBe(Math.ceil(minutes / 1440) * 86_400);
    // Stock images add their install; one host a wave at the longest timeouts hits the cap.
    const stock = hosts(1).map((h) => ({ ...h, image: "stock" as const }));
    expect(providerMaxLeaseTtlSeconds({ hosts: stock, deploy })).toBe(86_400);
    const slow = { ...deploy, batchSize: 1, switchTimeoutMinutes: 1440, drainTimeoutMinutes: 1440 };
    expect(providerMaxLeaseTtlSeconds({ hosts: hosts(1000), deploy: slow })).toBe(MAX_CHILD_TOKEN_SECONDS);
  });

  it("names policies and roles runner-fleet.<stack>.<host>, lowercase, escaping the stack (#24 item 14)", () => {
    expect(vaultNames("prod", "h1")).toEqual({ policy: "runner-fleet.prod.h1", role: "runner-fleet.prod.h1" });
    // The README's collision: stack ci, host eu-a against stack ci-eu, host a.
    expect(policyName("ci", "eu-a")).not.toBe(policyName("ci-eu", "a"));
    expect(roleName("ci", "eu-a")).not.toBe(roleName("ci-eu", "a"));
    // Vault lowercases policy names: stacks that differ by case or `_` stay apart.
    const stacks = ["Prod", "prod", "_prod", "__prod", "p_rod", "pRod", "p.rod", "p-rod", "prod.h1"];
    const names = stacks.flatMap((st) => ["h1", "rod", "h1-x"].map((h) => policyName(st, h)));
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toBe(n.toLowerCase());
    // Legacy names are the pre-#24 ones, as stacks made then have them.
    expect(vaultNames("Prod", "h1", true)).toEqual({ policy: "runner-fleet-prod-h1", role: "Prod-h1" });
  });
});

describe("policyFor", () => {
  const model = modelFrom(fullConfig());

  it("grants read on exactly the data and metadata paths of the host's own files", () => {
    for (const host of model.hosts) {
      const rules = parsePolicy(policyFor(host, model));
      rules.delete(`ci/data/hosts/${host.name}/ssh-host-key`);
      const expected = new Set(secretFilesFor(host, model).flatMap((f) => [f.path, f.path.replace("ci/data/", "ci/metadata/")]));
      expect(new Set(rules.keys()), host.name).toEqual(expected);
      for (const caps of rules.values()) expect(caps).toBe('["read"]');
    }
  });

  it("lets the host write its own SSH host key (create/update/read), nobody else's, and nothing else", () => {
    for (const host of model.hosts) {
      const rules = parsePolicy(policyFor(host, model));
      expect(rules.get(`ci/data/hosts/${host.name}/ssh-host-key`), host.name).toBe('["create", "update", "read"]');
      const writable = [...rules].filter(([, caps]) => caps !== '["read"]').map(([p]) => p);
      expect(writable, host.name).toEqual([`ci/data/hosts/${host.name}/ssh-host-key`]);
    }
    expect(sshHostKeyApiPath("h1", { vault: { ...model.vault, mount: "teams/ci" } })).toBe("teams/ci/data/hosts/h1/ssh-host-key");
  });

  it("never names another host's path, a glob or list", () => {
    for (const host of model.hosts) {
      const hcl = policyFor(host, model);
      expect(hcl).not.toMatch(/[*+]|"list"/);
      for (const path of parsePolicy(hcl).keys()) {
        const m = /^ci\/(data|metadata)\/hosts\/([^/]+)\//.exec(path);
        if (m) expect(m[2], `${host.name} policy names ${path}`).toBe(host.name);
        else expect(path).toMatch(/^ci\/(data|metadata)\/shared\/github-app\/acme$/);
      }
    }
  });

  it("gives the shared GitHub App to fireactions hosts only", () => {
    for (const host of model.hosts) {
      const reads = parsePolicy(policyFor(host, model)).has("ci/data/shared/github-app/acme");
      expect(reads, host.name).toBe(host.roles.includes("fireactions"));
    }
  });

  it("follows a nested mount and refuses a path that could widen the rule", () => {
    const nested = { ...model, vault: { ...model.vault, mount: "teams/ci" } };
    const cache = model.hosts.find((h) => h.name === "cache")!;
    expect(hostKvPaths(cache, nested)).toEqual({ data: ["teams/ci/data/hosts/cache/cache"], metadata: ["teams/ci/metadata/hosts/cache/cache"] });
    const evil = { ...cache, name: "x/../*" } as HostModel;
    expect(() => policyFor(evil, nested)).toThrow(/refusing/);
  });
});

describe("bad Vault config fails with the key path", () => {
  const problems = (cfg: Record<string, any>, secretsSet?: string[]): string[] => {
    try {
      modelFrom(cfg, secretsSet);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as ConfigError).problems;
    }
    throw new Error("config was accepted");
  };
  const withVault = (vault: Record<string, unknown>) => ({ ...baseConfig(), vault });

  it("missing Vault section or address", () => {
    const { vault: _, ...noVault } = baseConfig();
    expect(problems(noVault)).toContain("runner-fleet:vault: is required");
    expect(problems(withVault({}))).toContain("runner-fleet:vault.address: is required");
    expect(problems(withVault({ address: "vault.example.org" }))).toContain("runner-fleet:vault.address: must be an http(s) URL");
  });

  it("invalid mount, auth mount, durations and external secret names", () => {
    const address = "https://vault.example.org";
    expect(problems(withVault({ address, mount: "/ci" })).join("\n")).toMatch(/^runner-fleet:vault\.mount: must be a Vault path/m);
    expect(problems(withVault({ address, mount: "ci/../sys" })).join("\n")).toMatch(/^runner-fleet:vault\.mount: must be a Vault path/m);
    expect(problems(withVault({ address, authMount: "auth/approle" })).join("\n")).toMatch(/^runner-fleet:vault\.authMount: must be a Vault auth path/m);
    expect(problems(withVault({ address, wrapTtl: "2 hours" })).join("\n")).toMatch(/^runner-fleet:vault\.wrapTtl: must be a duration/m);
    expect(problems(withVault({ address, externalSecrets: ["forgejoToken"] })).join("\n")).toMatch(/^runner-fleet:vault\.externalSecrets\[0\]: must be one of/m);
  });

  it("a secret a role needs but nobody configured", () => {
    const all = problems(fullConfig(), []);
    expect(all.some((p) => p.startsWith("runner-fleet:githubAppPrivateKey: not set; the fireactions role needs it: run pulumi config set --secret runner-fleet:githubAppPrivateKey"))).toBe(true);
    expect(all.some((p) => p.startsWith("runner-fleet:giteaRunnerToken: not set; the gitea-runner role needs it"))).toBe(true);
    expect(all.some((p) => p.startsWith("runner-fleet:cacheSigningKey: not set; the cache role needs it"))).toBe(true);
    // Kept only in Vault: nothing to configure.
    const cfg = fullConfig();
    cfg.vault.externalSecrets = ["githubApp", "giteaRunnerToken", "cacheSigningKey"];
    expect(() => modelFrom(cfg, [])).not.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------

describe("FleetVault resources (mocks)", () => {
  let model: FleetModel;
  let rs: RecordedResource[];
  let vaultA: InstanceType<typeof FleetVault>;

  beforeAll(async () => {
    model = modelFrom(fullConfig());
    const start = resources.length;
    vaultA = new FleetVault("va", { model, secrets: planted() });
    await Promise.all(model.hosts.map((h) => settle(vaultA.access(h.name).wrappedSecretId)));
    await quiet();
    rs = resources.slice(start);
  });

  it("uses an explicit provider with the address and no token", () => {
    const provider = one(rs, T.provider, "va");
    expect(provider.inputs.address).toBe("https://vault.example.org:8200");
    expect(provider.inputs).not.toHaveProperty("token");
    expect(Number(provider.inputs.maxLeaseTtlSeconds)).toBe(providerMaxLeaseTtlSeconds(model));
  });

  it("creates the KV v2 mount and the AppRole auth backend", () => {
    expect(one(rs, T.mount, "va-kv").inputs).toMatchObject({ path: "ci", type: "kv", options: { version: "2" } });
    expect(one(rs, T.auth, "va-approle").inputs).toMatchObject({ type: "approle", path: "approle" });
  });

  it("writes every KV path a host reads, and only those", () => {
    const written = byType(rs, T.kv).map((r) => `${r.inputs.mount}/data/${r.inputs.name}`).sort();
    const read = [...new Set(model.hosts.flatMap((h) => secretFilesFor(h, model).map((f) => f.path)))].sort();
    expect(written).toEqual(read);
  });

  it("keeps every written document secret and puts the right fields in it", () => {
    const docs = new Map(byType(rs, T.kv).map((r) => [r.inputs.name as string, r]));
    for (const r of docs.values()) expect(containsSecret(r.inputs.dataJson), r.name).toBe(true);
    const doc = (name: string) => JSON.parse(reveal(docs.get(name)!.inputs.dataJson) as string);
    expect(doc("shared/github-app/acme")).toEqual({ app_id: "123456", private_key: PLANTED_SECRETS.githubAppPrivateKey });
    expect(doc("hosts/gitea/gitea-runner")).toEqual({ token: PLANTED_SECRETS.giteaRunnerToken });
    expect(doc("hosts/named/gitea-runner")).toEqual({ token: PLANTED_SECRETS.giteaRunnerToken });
    expect(doc("hosts/cache/cache")).toEqual({ signing_key: PLANTED_SECRETS.cacheSigningKey });
    expect(doc("hosts/v6/cache")).toEqual({ signing_key: PLANTED_SECRETS.cacheSigningKey });
    expect(doc("hosts/onprem/forgejo-runner").token).toMatch(/^[0-9a-f]{40}$/);
  });

  it("generates the Forgejo secret once per forgejo host: 20 random bytes, secret, never logged", () => {
    const generators = byType(rs, T.command).filter((r) => r.name.endsWith("-forgejo-runner-secret"));
    expect(generators.map((r) => r.name)).toEqual(["onprem-forgejo-runner-secret"]);
    const [g] = generators;
    expect(g.inputs.logging).toBe("none");
    // Nothing may re-run it: no triggers, and an update re-prints the value it already has.
    expect(g.inputs.triggers).toBeUndefined();
    expect(g.inputs.update).toContain("$PULUMI_COMMAND_STDOUT");
  });

  it("prints 20 random bytes as 40 hex characters, and re-prints the previous value on update", () => {
    const { create, update } = randomHexCommand(20);
    const out = execFileSync("/bin/sh", ["-c", create], { encoding: "utf8" });
    expect(out).toMatch(/^[0-9a-f]{40}$/);
    expect(execFileSync("/bin/sh", ["-c", create], { encoding: "utf8" })).not.toBe(out);
    expect(execFileSync("/bin/sh", ["-c", update], { encoding: "utf8", env: { ...process.env, PULUMI_COMMAND_STDOUT: out } })).toBe(out);
    // With no previous value the update fails instead of storing an empty secret.
    const { PULUMI_COMMAND_STDOUT: _, ...env } = process.env;
    expect(() => execFileSync("/bin/sh", ["-c", update], { env, stdio: "ignore" })).toThrow();
  });

  it("exposes secret outputs only as secrets", async () => {
    for (const [name, kv] of Object.entries(vaultA.kvSecrets)) {
      expect(await pulumi.isSecret(kv.dataJson), name).toBe(true);
    }
    for (const host of model.hosts) {
      const { roleId, wrappedSecretId } = vaultA.access(host.name);
      expect(await pulumi.isSecret(wrappedSecretId), host.name).toBe(true);
      expect(await pulumi.isSecret(roleId), host.name).toBe(false);
      expect((await settle(wrappedSecretId)).value).toMatch(/^hvs\.wrapped-/);
      expect((await settle(roleId)).value).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it("registers each host's rendered policy under its own name", () => {
    const policies = byType(rs, T.policy);
    expect(policies).toHaveLength(model.hosts.length);
    for (const host of model.hosts) {
      const p = one(rs, T.policy, `${host.name}-policy`);
      expect(p.inputs.name).toBe(`runner-fleet.test.${host.name}`);
      expect(p.inputs.policy).toBe(policyFor(host, model));
      for (const other of model.hosts.filter((h) => h.name !== host.name)) {
        expect(p.inputs.policy as string).not.toContain(`/hosts/${other.name}/`);
      }
    }
  });

  it("gives every host an AppRole bound to its policy with the configured lifetimes", () => {
    for (const host of model.hosts) {
      const role = one(rs, T.role, `${host.name}-approle`).inputs;
      expect(role).toMatchObject({
        backend: "approle", roleName: `runner-fleet.test.${host.name}`, tokenPolicies: [`runner-fleet.test.${host.name}`],
        tokenTtl: 3600, tokenMaxTtl: 3600, secretIdTtl: 0, secretIdNumUses: 0,
      });
      const cidrs = boundCidrs(host);
      if (cidrs.length) {
        expect(role.secretIdBoundCidrs).toEqual(cidrs);
        expect(role.tokenBoundCidrs).toEqual(cidrs);
      } else {
        expect(role.secretIdBoundCidrs).toBeUndefined();
        expect(role.tokenBoundCidrs).toBeUndefined();
      }
    }
    expect(one(rs, T.role, "onprem-approle").inputs.secretIdBoundCidrs).toEqual(["192.0.2.10/32", "10.0.0.5/32"]);
  });

  it("wraps one secret_id per host, with the wrapped accessor and metadata; the role's lists bind it, not its own", () => {
    for (const host of model.hosts) {
      const sid = one(rs, T.secretId, `${host.name}-secret-id`).inputs;
      expect(sid).toMatchObject({ backend: "approle", roleName: `runner-fleet.test.${host.name}`, wrappingTtl: "2h", withWrappedAccessor: true });
      // Set explicitly: Vault's read-back values must match the config (#24 item 3).
      expect(sid).toMatchObject({ ttl: 0, numUses: 0 });
      expect(JSON.parse(sid.metadata as string)).toEqual({ host: host.name, stack: "test" });
      // Its own list would be ForceNew: a change of binding would destroy the host's secret_id.
      expect(sid.cidrLists).toBeUndefined();
    }
  });

  it("refuses an unknown host", () => {
    expect(() => vaultA.access("nope")).toThrow(/unknown host "nope"/);
  });
});

describe("FleetVault with secrets kept in Vault and existing mounts (mocks)", () => {
  let model: FleetModel;
  let rs: RecordedResource[];

  beforeAll(async () => {
    const cfg = baseConfig();
    cfg.hosts = {
      "b-metal": cfg.hosts.metal,
      "b-cache": { provider: "hetzner", serverType: "ccx23", location: "fsn1", roles: ["cache"] },
      "b-forge": { provider: "hetzner", serverType: "ccx23", location: "nbg1", roles: ["forgejo-runner"] },
      "b-gitea": { provider: "digitalocean", size: "s-4vcpu-8gb", region: "fra1", roles: ["gitea-runner"] },
    };
    cfg.vault = {
      address: "https://vault.internal:8200", mount: "teams/ci", createMount: false, authMount: "ci-hosts", createAuthMount: false,
      externalSecrets: ["githubApp", "giteaRunnerToken", "cacheSigningKey"], wrapTtl: "15m", secretIdTtl: "90s", tokenTtl: "30m",
      legacyNames: ["b-metal", "b-cache"],
    };
    model = modelFrom(cfg, []);
    const start = resources.length;
    const v = new FleetVault("vb", { model, secrets: {} });
    await Promise.all(model.hosts.map((h) => settle(v.access(h.name).wrappedSecretId)));
    await quiet();
    rs = resources.slice(start);
  });

  it("references the mounts instead of creating them", () => {
    expect(byType(rs, T.mount)).toHaveLength(0);
    expect(byType(rs, T.auth)).toHaveLength(0);
  });

  it("writes only the generated Forgejo secret, into the configured mount", () => {
    expect(byType(rs, T.kv).map((r) => [r.inputs.mount, r.inputs.name])).toEqual([["teams/ci", "hosts/b-forge/forgejo-runner"]]);
  });

  it("still grants each host read on its external secrets", () => {
    const policy = (h: string) => [...parsePolicy(one(rs, T.policy, `${h}-policy`).inputs.policy as string).keys()];
    const key = (h: string) => `teams/ci/data/hosts/${h}/ssh-host-key`;
    expect(policy("b-metal")).toEqual(["teams/ci/data/shared/github-app/acme", "teams/ci/metadata/shared/github-app/acme", key("b-metal")]);
    expect(policy("b-cache")).toEqual(["teams/ci/data/hosts/b-cache/cache", "teams/ci/metadata/hosts/b-cache/cache", key("b-cache")]);
    expect(policy("b-gitea")).toEqual(["teams/ci/data/hosts/b-gitea/gitea-runner", "teams/ci/metadata/hosts/b-gitea/gitea-runner", key("b-gitea")]);
  });

  it("uses the configured auth mount and lifetimes", () => {
    const role = one(rs, T.role, "b-gitea-approle").inputs;
    expect(role).toMatchObject({ backend: "ci-hosts", tokenTtl: 1800, tokenMaxTtl: 1800, secretIdTtl: 90 });
    expect(one(rs, T.secretId, "b-gitea-secret-id").inputs).toMatchObject({ backend: "ci-hosts", wrappingTtl: "15m", ttl: 90 });
  });

  it("keeps the pre-#24 names for the hosts vault.legacyNames lists, and only those", () => {
    const names = (h: string) => [one(rs, T.policy, `${h}-policy`).inputs.name, one(rs, T.role, `${h}-approle`).inputs.roleName];
    expect(names("b-metal")).toEqual(["runner-fleet-test-b-metal", "test-b-metal"]);
    expect(names("b-cache")).toEqual(["runner-fleet-test-b-cache", "test-b-cache"]);
    expect(names("b-gitea")).toEqual(["runner-fleet.test.b-gitea", "runner-fleet.test.b-gitea"]);
  });

  it("refuses a vault.legacyNames entry that is not a host, by key path", () => {
    const cfg = baseConfig();
    cfg.vault.legacyNames = ["metal", "gone"];
    expect(() => modelFrom(cfg)).toThrow(/runner-fleet:vault\.legacyNames\[1\]: gone is not a host of this stack/);
    cfg.vault.legacyNames = true;
    expect(modelFrom(cfg).vault.legacyNames).toBe(true);
  });
});

describe("FleetVault role binding of cloud hosts (mocks, #24 item 9)", () => {
  let rs: RecordedResource[];
  let captured: ReturnType<typeof captureOptions>["captured"];
  let endpoint: pulumi.CustomResource;

  beforeAll(async () => {
    const cfg = fullConfig();
    cfg.vault.unboundHosts = ["gitea-2", "v6"];
    const model = modelFrom(cfg);
    const capture = captureOptions();
    captured = capture.captured;
    const start = resources.length;
    const v = new FleetVault("vd", { model, secrets: planted() }, { transformations: [capture.transformation] });
    const { local } = await import("@pulumi/command");
    const machine = new local.Command("gitea-machine", { create: "true" });
    endpoint = v.bindAddresses("gitea", [pulumi.output("198.51.100.9"), pulumi.output(undefined)], [machine]);
    v.bindAddresses("gitea-2", [pulumi.output("198.51.100.10")], [machine]);
    await Promise.all(model.hosts.map((h) => settle(v.access(h.name).wrappedSecretId)));
    await quiet();
    rs = resources.slice(start);
  });

  const opts = (name: string) => captured.find((c) => c.name === name)!.opts;

  it("writes the machine's addresses to the role's path, after the machine, and never deletes that path", async () => {
    const binding = one(rs, "vault:generic/endpoint:Endpoint", "gitea-approle-binding").inputs;
    expect(binding).toMatchObject({ path: "gitea-approle-id", disableDelete: true, ignoreAbsentFields: true });
    expect(binding.disableRead).toBeUndefined();
    expect(JSON.parse(reveal(binding.dataJson) as string)).toEqual({ secret_id_bound_cidrs: ["198.51.100.9/32"], token_bound_cidrs: ["198.51.100.9"] });
    expect(opts("gitea-approle-binding").dependsOn).toEqual([expect.objectContaining({ __name: "gitea-machine" })]);
    expect((await settle(endpoint.urn)).value).toMatch(/FleetVault\$vault:generic\/endpoint:Endpoint::gitea-approle-binding$/);
  });

  it("empties both lists of a host in vault.unboundHosts, and leaves an existing one unbound at creation too", () => {
    const binding = one(rs, "vault:generic/endpoint:Endpoint", "gitea-2-approle-binding").inputs;
    expect(JSON.parse(reveal(binding.dataJson) as string)).toEqual({ secret_id_bound_cidrs: [], token_bound_cidrs: [] });
    expect(one(rs, T.role, "v6-approle").inputs.tokenBoundCidrs).toBeUndefined();
    expect(one(rs, T.secretId, "v6-secret-id").inputs.cidrLists).toBeUndefined();
    expect(one(rs, T.role, "onprem-approle").inputs.tokenBoundCidrs).toEqual(["192.0.2.10/32", "10.0.0.5/32"]);
  });

  it("keeps every secret_id through a change of binding: none has a list of its own, an old state's list is ignored", () => {
    for (const h of ["gitea", "gitea-2", "cache", "metal", "onprem", "v6", "named"]) {
      expect(one(rs, T.secretId, `${h}-secret-id`).inputs.cidrLists, h).toBeUndefined();
      expect(opts(`${h}-secret-id`).ignoreChanges, h).toEqual(["wrappingTtl", "ttl", "numUses", "cidrLists"]);
    }
  });

  it("lets the binding own a cloud host's two lists: its role ignores them, an existing host's does not", () => {
    expect(BINDING_FIELDS).toEqual(["tokenBoundCidrs", "secretIdBoundCidrs"]);
    for (const h of ["gitea", "gitea-2", "cache", "metal"]) expect(opts(`${h}-approle`).ignoreChanges, h).toEqual(BINDING_FIELDS);
    for (const h of ["onprem", "v6", "named"]) expect(opts(`${h}-approle`).ignoreChanges, h).toBeUndefined();
  });

  it("refuses a vault.unboundHosts entry that is not a host, by key path", () => {
    const cfg = baseConfig();
    cfg.vault.unboundHosts = ["metal", "gone"];
    expect(() => modelFrom(cfg)).toThrow(/runner-fleet:vault\.unboundHosts\[1\]: gone is not a host of this stack/);
    cfg.vault.unboundHosts = ["metal", "metal"];
    expect(() => modelFrom(cfg)).toThrow(/runner-fleet:vault\.unboundHosts: lists the same value twice/);
    delete cfg.vault.unboundHosts;
    expect(modelFrom(cfg).vault.unboundHosts).toEqual([]);
  });
});

describe("FleetVault argument checks (mocks)", () => {
  it("names the missing secret and its hosts before creating any child", async () => {
    const model = modelFrom(fullConfig());
    const start = resources.length;
    expect(() => new FleetVault("vc", { model, secrets: { githubApp: pulumi.secret("k"), giteaRunnerToken: pulumi.secret("t") } }))
      .toThrow("FleetVault: runner-fleet:cacheSigningKey is required by hosts cache, v6 (or list cacheSigningKey in vault.externalSecrets)");
    await quiet();
    expect(resources.slice(start).filter((r) => r.type !== "runner-fleet:vault:FleetVault")).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe("plan output (end to end)", () => {
  it("prod: a mount, shared App credentials, secrets, a policy and an AppRole per host, secrets redacted", async () => {
    const plan = await planJson("prod");
    const of = (type: string) => plan.resources.filter((r) => r.type === type);
    expect(of(T.provider).map((r) => r.name)).toEqual(["vault"]);
    expect(of(T.mount)).toHaveLength(1);
    const kvNames = of(T.kv).map((r) => r.inputs.name).sort();
    expect(kvNames).toEqual([
      "hosts/cache-1/cache", "hosts/do-gitea-1/gitea-runner", "hosts/forgejo-1/forgejo-runner", "hosts/onprem-1/forgejo-runner",
      "shared/github-app/acme",
    ]);
    for (const r of of(T.kv)) expect(r.inputs.dataJson, r.name).toBe("[secret]");
    const hosts = plan.resources.filter((r) => r.type === T.policy).map((r) => r.name.replace(/-policy$/, "")).sort();
    expect(hosts).toHaveLength(8);
    expect(of(T.role).map((r) => r.name.replace(/-approle$/, "")).sort()).toEqual(hosts);
    expect(of(T.secretId).map((r) => r.name.replace(/-secret-id$/, "")).sort()).toEqual(hosts);
    // Every cloud host's role is bound after its machine; the existing one at creation instead.
    const bindings = of("vault:generic/endpoint:Endpoint");
    expect(bindings.map((r) => r.name.replace(/-approle-binding$/, "")).sort()).toEqual(hosts.filter((h) => h !== "onprem-1"));
    for (const b of bindings) expect(b.inputs, b.name).toMatchObject({ path: `${b.name.replace(/-binding$/, "")}-id`, disableDelete: true, dataJson: "[secret]" });
    expect(plan.outputs.userData).toBe("[secret]");
  });

  it("no planted secret value appears anywhere in the plan", async () => {
    const result = await runPlan(["--config", writeStackFile(fullConfig()), "--json"]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).resources.some((r: { type: string }) => r.type === T.kv)).toBe(true);
    for (const value of Object.values(PLANTED_SECRETS)) {
      for (const fragment of [value, ...value.split("\n").filter((l) => l.length > 12)]) {
        expect(result.stdout).not.toContain(fragment);
        expect(result.stderr).not.toContain(fragment);
      }
    }
  });
});
