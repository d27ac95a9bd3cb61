/**
 * The fleet's Vault component (components/vault.ts) under the real Pulumi CLI, the vault plugin
 * (test/engine-stand-ins) and a real OpenBao dev server, with nothing else of the fleet around
 * it: existing machines only, and a `rollout` command standing for the deploy's switches.
 *
 *  - #24 item 1: the provider's one child token must outlive the rollout, or the deletes the
 *    engine runs at the end of an `up` fail. TERRAFORM_VAULT_MAX_TTL makes upstream's default
 *    child token short here; the program's maxLeaseTtlSeconds must win over it.
 *  - #24 item 3: with a non-zero secretIdTtl, Vault's read-back ttl must not re-issue (and so
 *    destroy) every secret_id on the next up; a wrapTtl edit must not either.
 *  - #24 item 9: a cloud host's role is bound to its machine's addresses once the machine
 *    exists; OpenBao then refuses its logins from anywhere else, and neither a second run, a
 *    refresh, a tokenTtl edit nor a new machine leaves it unbound or bound to the old address.
 *  - #24 item 14: two stacks of the README's sharing guide on one OpenBao, whose old names met
 *    (stack ci with host eu-a, stack ci-eu with host a), leave each other's objects alone.
 */
import { spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engineBinDir, engineEnv, missingEngineBinaries } from "../engine/env";
import { buildFleetModel } from "../components/config";
import { providerMaxLeaseTtlSeconds } from "../components/vault";
import { startDevBao } from "./support/dev-bao";
import { ROOT, SSH_KEY } from "./support/fixtures";

const missing = missingEngineBinaries();
if (missing.length) console.warn(`skipped: the Pulumi engine is not built (no ${missing.join(", ")}); run npm run engine`);

/** The program: the fleet model from `fleet` (JSON), its FleetVault, then a rollout of `rolloutSeconds`. */
const PROGRAM = `
import * as pulumi from "@pulumi/pulumi";
import { local } from "@pulumi/command";
import { buildFleetModel } from ${JSON.stringify(path.join(ROOT, "components/config"))};
import { FleetVault } from ${JSON.stringify(path.join(ROOT, "components/vault"))};
const cfg = new pulumi.Config();
const model = buildFleetModel(JSON.parse(cfg.require("fleet")), {
  stack: pulumi.getStack(), secretsSet: new Set(), baseDir: ${JSON.stringify(ROOT)}, requireImageFiles: false,
});
// legacy=1: the program as it was before #24 item 3 (no ttl, numUses nor ignoreChanges on the
// secret_id), to make the state an older release left behind.
if (cfg.get("legacy") === "1") {
  pulumi.runtime.registerStackTransformation((a) => {
    if (a.type !== "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId") return undefined;
    const { ttl: _t, numUses: _n, ...props } = a.props;
    return { props, opts: { ...a.opts, ignoreChanges: [] } };
  });
}
// noIgnore=1: the cloud hosts' roles without the ignoreChanges on their two CIDR lists, to show
// what that option keeps (#24 item 9).
if (cfg.get("noIgnore") === "1") {
  pulumi.runtime.registerStackTransformation((a) =>
    a.type === "vault:appRole/authBackendRole:AuthBackendRole" ? { props: a.props, opts: { ...a.opts, ignoreChanges: [] } } : undefined);
}
const fleetVault = new FleetVault("vault", { model, secrets: {} });
// Cloud hosts' machines, standing in for a cloud: a command that prints the machine's address,
// replaced (a new machine) when the address changes. Each host's role is bound after it.
const machines: Record<string, string> = JSON.parse(cfg.get("machines") ?? "{}");
for (const [host, addr] of Object.entries(machines)) {
  const machine = new local.Command(host + "-machine", { create: "printf %s " + addr, triggers: [addr] });
  fleetVault.bindAddresses(host, [machine.stdout, undefined], [machine]);
}
export const access = pulumi.secret(pulumi.all(Object.fromEntries(Object.keys(machines).map((h) =>
  [h, pulumi.all({ roleId: fleetVault.access(h).roleId, wrapped: fleetVault.access(h).wrappedSecretId })]))));
// Stands for the switches: runs after every Vault write of this up and before its deletes.
new local.Command("rollout", { create: "sleep " + cfg.require("rolloutSeconds"), triggers: [cfg.require("run")] },
  { dependsOn: [fleetVault] });
export const policyNames = fleetVault.policyNames;
`;

function fleetConfig(hosts: string[], vault: Record<string, unknown>): Record<string, unknown> {
  return {
    ssh: { authorizedKeys: [SSH_KEY], adminCidrs: ["198.51.100.0/24"] },
    forgejo: { url: "https://forgejo.example.org" },
    hosts: Object.fromEntries(hosts.map((h, i) => [h, {
      provider: "existing", address: `192.0.2.${10 + i}`, roles: ["forgejo-runner"], arch: "x86_64", vcpus: 4, memoryMib: 8192,
    }])),
    vault,
  };
}

describe.skipIf(missing.length > 0)("the fleet's Vault component against OpenBao", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let bao: ChildProcess;
  let address: string;
  let run = 0;
  const pulumi = (stack: string, ...args: string[]) => {
    const r = spawnSync("pulumi", [...args, "--non-interactive", "--stack", stack], { cwd: dir, env, encoding: "utf8", timeout: 240_000 });
    return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
  };
  const api = async (method: string, p: string, body?: unknown, token = "root") => {
    const res = await fetch(`${address}/v1/${p}`, { method, headers: { "X-Vault-Token": token }, body: body ? JSON.stringify(body) : undefined });
    return { status: res.status, json: (await res.text().then((t) => (t ? JSON.parse(t) : {}))) as any };
  };
  /** Sets the stack's fleet and rollout length; every call is a new run of the rollout. */
  const configure = (stack: string, fleet: Record<string, unknown>, rolloutSeconds: number, legacy = false) => {
    for (const [k, v] of [["fleet", JSON.stringify(fleet)], ["rolloutSeconds", String(rolloutSeconds)], ["run", String(++run)], ["legacy", legacy ? "1" : "0"]]) {
      const set = pulumi(stack, "config", "set", "--plaintext", `vaultfleet:${k}`, v);
      expect(set.code, set.out).toBe(0);
    }
  };
  const newStack = (stack: string) => {
    const r = spawnSync("pulumi", ["stack", "init", stack, "--non-interactive"], { cwd: dir, env, encoding: "utf8" });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  };

  beforeAll(async () => {
    ({ proc: bao, address } = await startDevBao(path.join(engineBinDir(), "bao"), { rootToken: "root" }));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-vault-fleet-"));
    fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: vaultfleet\nruntime:\n  name: nodejs\n  options:\n    typescript: false\n    nodeargs: \"--import tsx\"\n");
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "vaultfleet", main: "index.ts" }));
    fs.writeFileSync(path.join(dir, "index.ts"), PROGRAM);
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
    // A short default child token (upstream's GetResourceDataInt falls back to this variable).
    env = { ...engineEnv({ backendDir: path.join(dir, ".state"), pulumiHome: path.join(dir, ".home") }), VAULT_TOKEN: "root", TERRAFORM_VAULT_MAX_TTL: "4" };
  }, 60_000);

  afterAll(() => {
    bao?.kill();
  });

  it("a rollout longer than a short default child token still ends with its deletes done (#24 item 1)", async () => {
    newStack("long");
    const vault = { address, mount: "long", authMount: "long-approle" };
    configure("long", fleetConfig(["a", "b"], vault), 0);
    const first = pulumi("long", "up", "--yes");
    expect(first.code, first.out).toBe(0);
    expect((await api("GET", "sys/policies/acl/runner-fleet.long.b")).status).toBe(200);

    // Host b leaves and c joins: c's writes make the provider's child token, the rollout then
    // outlasts TERRAFORM_VAULT_MAX_TTL, and b's policy, role, secret_id and KV go at the end.
    configure("long", fleetConfig(["a", "c"], vault), 7);
    const second = pulumi("long", "up", "--yes");
    expect(second.code, second.out).toBe(0);
    expect(second.out).toMatch(/- \d+ deleted/);
    expect((await api("GET", "sys/policies/acl/runner-fleet.long.b")).status).toBe(404);
    expect((await api("GET", "auth/long-approle/role/runner-fleet.long.b")).status).toBe(404);
    expect((await api("GET", "long/metadata/hosts/b/forgejo-runner")).status).toBe(404);

    // The provider's child tokens carry the TTL the program derived, not TERRAFORM_VAULT_MAX_TTL.
    const expected = providerMaxLeaseTtlSeconds(buildFleetModel(fleetConfig(["a", "c"], vault), {
      stack: "long", secretsSet: new Set(), baseDir: ROOT, requireImageFiles: false,
    }));
    const accessors = (await api("LIST", "auth/token/accessors")).json.data.keys as string[];
    const ttls: number[] = [];
    for (const accessor of accessors) {
      const t = (await api("POST", "auth/token/lookup-accessor", { accessor })).json.data;
      // Response-wrapping tokens the child made inherit its display name; they have their own TTL.
      if (t.display_name === "token-terraform" && !t.policies.includes("response-wrapping")) ttls.push(t.creation_ttl, t.explicit_max_ttl);
    }
    expect(ttls.length).toBeGreaterThan(0);
    expect(new Set(ttls)).toEqual(new Set([expected]));
  }, 300_000);

  it("a non-zero secretIdTtl keeps each secret_id on the next up, and a wrapTtl edit too (#24 item 3)", async () => {
    newStack("ttl");
    const vault = { address, mount: "ttl", authMount: "ttl-approle", secretIdTtl: "1h" };
    configure("ttl", fleetConfig(["a"], vault), 0);
    const up = pulumi("ttl", "up", "--yes");
    expect(up.code, up.out).toBe(0);
    const accessors = async () => (await api("LIST", "auth/ttl-approle/role/runner-fleet.ttl.a/secret-id")).json.data?.keys as string[];
    const before = await accessors();
    expect(before).toHaveLength(1);
    const looked = await api("POST", "auth/ttl-approle/role/runner-fleet.ttl.a/secret-id-accessor/lookup", { secret_id_accessor: before[0] });
    expect(looked.json.data.secret_id_ttl).toBe(3600);

    // Vault reports the ttl back; the next run must find nothing to do.
    const again = pulumi("ttl", "preview", "--expect-no-changes", "--diff");
    expect(again.code, again.out).toBe(0);

    configure("ttl", fleetConfig(["a"], { ...vault, wrapTtl: "30m" }), 0);
    const edit = pulumi("ttl", "preview", "--diff");
    expect(edit.code, edit.out).toBe(0);
    expect(edit.out).not.toMatch(/AuthBackendRoleSecretId.*(replace|create)/);
    const applied = pulumi("ttl", "up", "--yes");
    expect(applied.code, applied.out).toBe(0);
    expect(await accessors()).toEqual(before);

    // A new secretIdTtl is for new secret_ids; the host keeps its own.
    configure("ttl", fleetConfig(["a"], { ...vault, secretIdTtl: "2h" }), 0);
    const longer = pulumi("ttl", "up", "--yes");
    expect(longer.code, longer.out).toBe(0);
    expect(longer.out).not.toMatch(/AuthBackendRoleSecretId.*(replac|creat|delet)/);
    expect(await accessors()).toEqual(before);
  }, 300_000);

  /** POST to OpenBao from a given loopback source address: what Vault's CIDR checks see. */
  const from = (source: string, method: string, p: string, body?: unknown, token?: string) => new Promise<{ status: number; json: any }>((resolve, reject) => {
    const url = new URL(address);
    const req = http.request({ host: url.hostname, port: url.port, path: `/v1/${p}`, method, localAddress: source, headers: token ? { "X-Vault-Token": token } : {} }, (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : {} }));
    });
    req.on("error", reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
  const setKey = (stack: string, key: string, value: string) => {
    const set = pulumi(stack, "config", "set", "--plaintext", `vaultfleet:${key}`, value);
    expect(set.code, set.out).toBe(0);
  };
  /** A fleet of existing host a and Hetzner host c, whose machine gets `machine` as its address. */
  const cloudFleet = (vault: Record<string, unknown>) => {
    const fleet = fleetConfig(["a"], vault);
    (fleet.hosts as Record<string, unknown>).c = { provider: "hetzner", serverType: "ccx23", location: "fsn1", roles: ["forgejo-runner"] };
    return fleet;
  };
  /** Host c's secret_id, unwrapped once from the stack's output (as the host does at boot). */
  const unwrapAccess = async (stack: string) => {
    const out = spawnSync("pulumi", ["stack", "output", "access", "--show-secrets", "--json", "--stack", stack], { cwd: dir, env, encoding: "utf8" });
    const { roleId, wrapped } = JSON.parse(out.stdout).c as { roleId: string; wrapped: string };
    const unwrapped = await api("POST", "sys/wrapping/unwrap", undefined, wrapped);
    expect(unwrapped.status, JSON.stringify(unwrapped.json)).toBe(200);
    return { role_id: roleId, secret_id: unwrapped.json.data.secret_id as string };
  };

  it("binds a cloud host's role to its machine's address once it exists, and keeps it bound (#24 item 9)", async () => {
    newStack("bind");
    const vault = { address, mount: "bind", authMount: "bind-approle" };
    const rolePath = "auth/bind-approle/role/runner-fleet.bind.c";
    const cidrs = async () => {
      const d = (await api("GET", rolePath)).json.data;
      return { secret: d.secret_id_bound_cidrs, token: d.token_bound_cidrs, ttl: d.token_ttl };
    };
    configure("bind", cloudFleet(vault), 0);
    setKey("bind", "machines", JSON.stringify({ c: "127.0.0.1" }));
    const up = pulumi("bind", "up", "--yes");
    expect(up.code, up.out).toBe(0);
    expect(await cidrs()).toEqual({ secret: ["127.0.0.1/32"], token: ["127.0.0.1"], ttl: 3600 });
    // The existing host keeps its binding from config, on the role and on its secret_id.
    expect((await api("GET", "auth/bind-approle/role/runner-fleet.bind.a")).json.data.secret_id_bound_cidrs).toEqual(["192.0.2.10/32"]);

    // The host's own secret_id: refused from another address by the role's list, accepted from
    // the machine's; the token it yields is refused elsewhere too (token_bound_cidrs).
    const creds = await unwrapAccess("bind");
    const refused = await from("127.0.0.2", "POST", "auth/bind-approle/login", creds);
    expect(refused.status).toBe(400);
    expect(refused.json.errors.join()).toMatch(/source address "127\.0\.0\.2" unauthorized by CIDR restrictions on the role/);
    const login = await from("127.0.0.1", "POST", "auth/bind-approle/login", creds);
    expect(login.status, JSON.stringify(login.json)).toBe(200);
    const token = login.json.auth.client_token as string;
    expect((await from("127.0.0.1", "GET", "auth/token/lookup-self", undefined, token)).status).toBe(200);
    expect((await from("127.0.0.2", "GET", "auth/token/lookup-self", undefined, token)).status).toBe(403);

    // Nothing to do on a second run, with or without reading everything back from Vault first.
    const again = pulumi("bind", "preview", "--expect-no-changes", "--diff");
    expect(again.code, again.out).toBe(0);
    const refreshed = pulumi("bind", "preview", "--expect-no-changes", "--refresh", "--diff");
    expect(refreshed.code, refreshed.out).toBe(0);

    // A tokenTtl edit updates the role and leaves its CIDRs alone, refreshed first or not.
    configure("bind", cloudFleet({ ...vault, tokenTtl: "2h" }), 0);
    const ttl = pulumi("bind", "up", "--yes", "--refresh");
    expect(ttl.code, ttl.out).toBe(0);
    expect(await cidrs()).toEqual({ secret: ["127.0.0.1/32"], token: ["127.0.0.1"], ttl: 7200 });
    expect((await from("127.0.0.2", "POST", "auth/bind-approle/login", creds)).status).toBe(400);
    const afterTtl = pulumi("bind", "preview", "--expect-no-changes", "--refresh", "--diff");
    expect(afterTtl.code, afterTtl.out).toBe(0);

    // A new machine with a new address: the role follows it, and the old address is refused.
    setKey("bind", "machines", JSON.stringify({ c: "127.0.0.3" }));
    const moved = pulumi("bind", "up", "--yes");
    expect(moved.code, moved.out).toBe(0);
    expect(await cidrs()).toMatchObject({ secret: ["127.0.0.3/32"], token: ["127.0.0.3"] });
    expect((await from("127.0.0.1", "POST", "auth/bind-approle/login", creds)).status).toBe(400);
    expect((await from("127.0.0.3", "POST", "auth/bind-approle/login", creds)).status).toBe(200);

    // vault.unboundHosts (a host behind NAT): both lists emptied, logins from anywhere.
    configure("bind", cloudFleet({ ...vault, tokenTtl: "2h", unboundHosts: ["c"] }), 0);
    const unbound = pulumi("bind", "up", "--yes");
    expect(unbound.code, unbound.out).toBe(0);
    expect(await cidrs()).toMatchObject({ secret: [], token: [] });
    expect((await from("127.0.0.2", "POST", "auth/bind-approle/login", creds)).status).toBe(200);
    expect(pulumi("bind", "preview", "--expect-no-changes", "--refresh").code).toBe(0);

    // The binding is never deleted on its own: destroy removes the role through its resource.
    const destroy = pulumi("bind", "destroy", "--yes");
    expect(destroy.code, destroy.out).toBe(0);
    expect((await api("GET", rolePath)).status).toBe(404);
  }, 400_000);

  it("without ignoreChanges on the two lists, the role's next update after a refresh unbinds the host (#24 item 9)", async () => {
    newStack("fight");
    const vault = { address, mount: "fight", authMount: "fight-approle" };
    configure("fight", cloudFleet(vault), 0);
    setKey("fight", "machines", JSON.stringify({ c: "127.0.0.1" }));
    setKey("fight", "noIgnore", "1");
    expect(pulumi("fight", "up", "--yes").code).toBe(0);
    const creds = await unwrapAccess("fight");
    expect((await from("127.0.0.2", "POST", "auth/fight-approle/login", creds)).status).toBe(400);
    // Upstream's Read copies the bound lists into the role's state; config has none, so the diff
    // clears them, and the binding is only written again when the machine changes.
    const preview = pulumi("fight", "preview", "--refresh", "--diff");
    expect(preview.out).toMatch(/authBackendRole:AuthBackendRole: \(update\)/);
    configure("fight", cloudFleet({ ...vault, tokenTtl: "2h" }), 0);
    expect(pulumi("fight", "up", "--yes", "--refresh").code).toBe(0);
    const d = (await api("GET", "auth/fight-approle/role/runner-fleet.fight.c")).json.data;
    expect({ secret: d.secret_id_bound_cidrs, token: d.token_bound_cidrs }).toEqual({ secret: [], token: [] });
    expect((await from("127.0.0.2", "POST", "auth/fight-approle/login", creds)).status).toBe(200);
  }, 300_000);

  it("stacks ci (host eu-a) and ci-eu (host a) on one OpenBao neither read, overwrite nor delete each other's objects (#24 item 14)", async () => {
    const shared = { address, mount: "shared", authMount: "shared-approle" };
    newStack("ci");
    configure("ci", fleetConfig(["eu-a"], shared), 0);
    const ciUp = pulumi("ci", "up", "--yes");
    expect(ciUp.code, ciUp.out).toBe(0);
    const names = (stack: string) => JSON.parse(spawnSync("pulumi", ["stack", "output", "policyNames", "--json", "--stack", stack], { cwd: dir, env, encoding: "utf8" }).stdout) as Record<string, string>;
    const ciPolicyName = names("ci")["eu-a"];
    /** Everything of ci's host in Vault: its policy text, role (with role_id) and secret_ids. */
    const ciObjects = async () => {
      const roles = (await api("LIST", "auth/shared-approle/role")).json.data.keys as string[];
      const role = roles.find((r) => r.startsWith("runner-fleet.ci.") || r === "ci-eu-a")!;
      return {
        policy: (await api("GET", `sys/policies/acl/${ciPolicyName}`)).json.data?.policy,
        role: (await api("GET", `auth/shared-approle/role/${role}`)).json.data,
        roleId: (await api("GET", `auth/shared-approle/role/${role}/role-id`)).json.data?.role_id,
        secretIds: (await api("LIST", `auth/shared-approle/role/${role}/secret-id`)).json.data?.keys,
        kv: (await api("GET", "shared/data/hosts/eu-a/forgejo-runner")).json.data?.data,
      };
    };
    const before = await ciObjects();
    expect(before.policy).toContain("shared/data/hosts/eu-a/forgejo-runner");
    expect(before.secretIds).toHaveLength(1);

    newStack("ci-eu");
    configure("ci-eu", fleetConfig(["a"], { ...shared, createMount: false, createAuthMount: false }), 0);
    const euUp = pulumi("ci-eu", "up", "--yes");
    expect(euUp.code, euUp.out).toBe(0);
    const euPolicyName = names("ci-eu").a;
    expect(euPolicyName).not.toBe(ciPolicyName);
    expect((await api("GET", `sys/policies/acl/${euPolicyName}`)).json.data.policy).toContain("shared/data/hosts/a/forgejo-runner");
    expect(await ciObjects()).toEqual(before);
    // ci sees nothing of ci-eu's run.
    expect(pulumi("ci", "preview", "--expect-no-changes", "--refresh").code).toBe(0);

    const destroy = pulumi("ci-eu", "destroy", "--yes");
    expect(destroy.code, destroy.out).toBe(0);
    expect((await api("GET", `sys/policies/acl/${euPolicyName}`)).status).toBe(404);
    expect(await ciObjects()).toEqual(before);
    expect(pulumi("ci", "preview", "--expect-no-changes", "--refresh").code).toBe(0);
  }, 300_000);

  it("state from before #24 item 3 with a non-zero secretIdTtl: re-issued on every up then, kept now", async () => {
    newStack("legacy");
    const vault = { address, mount: "legacy", authMount: "legacy-approle", secretIdTtl: "1h" };
    configure("legacy", fleetConfig(["a"], vault), 0, true);
    expect(pulumi("legacy", "up", "--yes").code).toBe(0);
    // The old program: Vault's read-back ttl against no ttl at all forces a new secret_id.
    const old = pulumi("legacy", "preview", "--diff");
    expect(old.code, old.out).toBe(0);
    expect(old.out).toMatch(/\+-\s*vault:appRole\/authBackendRoleSecretId:AuthBackendRoleSecretId: \(replace\)/);
    // This program on the same state: nothing to do, and up keeps the secret_id.
    const sids = async () => (await api("LIST", "auth/legacy-approle/role/runner-fleet.legacy.a/secret-id")).json.data?.keys as string[];
    const before = await sids();
    configure("legacy", fleetConfig(["a"], vault), 0, false);
    const now = pulumi("legacy", "up", "--yes");
    expect(now.code, now.out).toBe(0);
    expect(now.out).not.toMatch(/AuthBackendRoleSecretId.*(replac|creat|delet)/);
    expect(await sids()).toEqual(before);
    expect(pulumi("legacy", "preview", "--expect-no-changes").code).toBe(0);
  }, 300_000);
});
