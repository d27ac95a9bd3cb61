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
 *  - #24 item 14: two stacks of the README's sharing guide on one OpenBao, whose old names met
 *    (stack ci with host eu-a, stack ci-eu with host a), leave each other's objects alone.
 */
import { spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
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
const fleetVault = new FleetVault("vault", { model, secrets: {} });
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
