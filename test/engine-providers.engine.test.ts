/**
 * The engine's command and vault plugins (test/engine-stand-ins) under the real Pulumi CLI and a
 * real OpenBao dev server: the resource shapes components/vault.ts registers are created,
 * left alone on a second run, updated in place on an edit and removed on destroy; a KV document
 * reads back through getSecretV2; generated and wrapped secrets stay out of state in plaintext.
 */
import { spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomHexCommand } from "../components/vault";
import { engineBinDir, engineEnv, missingEngineBinaries } from "../engine/env";
import { ROOT } from "./support/fixtures";
import { startDevBao } from "./support/dev-bao";

const missing = missingEngineBinaries();
if (missing.length) console.warn(`skipped: the Pulumi engine is not built (no ${missing.join(", ")}); run npm run engine`);

const PROGRAM = (tokenCommand: object) => `
const pulumi = require("@pulumi/pulumi");
const command = require("@pulumi/command");
const vault = require("@pulumi/vault");
const cfg = new pulumi.Config();
const provider = new vault.Provider("bao", { address: cfg.require("address") });
const opts = { provider };
const token = new command.local.Command("token", { ...${JSON.stringify(tokenCommand)}, logging: "none" },
  { additionalSecretOutputs: ["stdout"] });
const kv = new vault.Mount("kv", { path: "ci", type: "kv", options: { version: "2" } }, opts);
const approle = new vault.AuthBackend("approle", { type: "approle", path: "ci-approle" }, opts);
const policy = new vault.Policy("policy", { name: "ci-host-a", policy: cfg.require("policy") }, opts);
const role = new vault.approle.AuthBackendRole("role", {
  backend: approle.path, roleName: "host-a", tokenPolicies: [policy.name], tokenTtl: 600, secretIdNumUses: 0,
}, opts);
const secretId = new vault.approle.AuthBackendRoleSecretId("secret-id", {
  backend: approle.path, roleName: role.roleName, wrappingTtl: "10m", withWrappedAccessor: true,
  metadata: JSON.stringify({ host: "host-a" }),
}, { ...opts, additionalSecretOutputs: ["secretId", "wrappingToken"] });
const doc = new vault.kv.SecretV2("doc", {
  mount: kv.path, name: "hosts/host-a/forgejo-runner", deleteAllVersions: true,
  dataJson: pulumi.secret(pulumi.jsonStringify({ token: token.stdout })),
}, { ...opts, additionalSecretOutputs: ["data", "dataJson"] });
// Read back through the data source, as the deploy side reads a host's published key.
const readBack = vault.kv.getSecretV2Output({ mount: doc.mount, name: doc.name }, { provider });
exports.readToken = readBack.data.apply((d) => d.token);
exports.roleId = role.roleId;
exports.wrappingToken = secretId.wrappingToken;
`;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

describe.skipIf(missing.length > 0)("command and vault plugins against OpenBao", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let bao: ChildProcess;
  let address: string;
  const pulumi = (...args: string[]) => {
    const stack = args[0] === "stack" && args[1] === "init" ? [] : ["--stack", "test"];
    const r = spawnSync("pulumi", [...args, "--non-interactive", ...stack], { cwd: dir, env, encoding: "utf8", timeout: 180_000 });
    return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
  };
  const api = async (method: string, p: string, body?: unknown, token = "root") => {
    const res = await fetch(`${address}/v1/${p}`, { method, headers: { "X-Vault-Token": token }, body: body ? JSON.stringify(body) : undefined });
    return { status: res.status, json: (await res.text().then((t) => (t ? JSON.parse(t) : {}))) as any };
  };

  /** A fresh in-memory dev server on the same port: a restart loses everything. */
  const startBao = async (port: number) => {
    ({ proc: bao } = await startDevBao(path.join(engineBinDir(), "bao"), { rootToken: "root", port }));
  };
  const stopBao = () => new Promise<void>((resolve) => {
    bao.once("exit", () => resolve());
    bao.kill();
  });
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    address = `http://127.0.0.1:${port}`;
    await startBao(port);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-providers-"));
    fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: providers\nruntime:\n  name: nodejs\n  options:\n    typescript: false\n");
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "providers", main: "index.js" }));
    fs.writeFileSync(path.join(dir, "index.js"), PROGRAM(randomHexCommand(20)));
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
    env = { ...engineEnv({ backendDir: path.join(dir, ".state"), pulumiHome: path.join(dir, ".home") }), VAULT_TOKEN: "root" };
    const init = pulumi("stack", "init", "test");
    expect(init.code, init.out).toBe(0);
    for (const [k, v] of [["address", address], ["policy", 'path "ci/data/hosts/host-a/*" { capabilities = ["read"] }']]) {
      const set = pulumi("config", "set", "--plaintext", `providers:${k}`, v);
      expect(set.code, set.out).toBe(0);
    }
  }, 60_000);

  afterAll(() => {
    bao?.kill();
  });

  it("up creates everything, and OpenBao holds what the program asked for", async () => {
    const r = pulumi("up", "--yes");
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/\+ 9 created/);
    const doc = await api("GET", "ci/data/hosts/host-a/forgejo-runner");
    const generated = doc.json.data.data.token as string;
    expect(generated).toMatch(/^[0-9a-f]{40}$/);
    expect((await api("GET", "sys/policies/acl/ci-host-a")).json.data.policy).toContain("ci/data/hosts/host-a/*");
    // The wrapped secret_id unwraps once and logs in with the role's policy.
    const outputs = JSON.parse(spawnSync("pulumi", ["stack", "output", "--json", "--show-secrets", "--stack", "test"], { cwd: dir, env, encoding: "utf8" }).stdout);
    const unwrapped = await api("POST", "sys/wrapping/unwrap", undefined, outputs.wrappingToken);
    expect(unwrapped.status).toBe(200);
    const login = await api("POST", "auth/ci-approle/login", { role_id: outputs.roleId, secret_id: unwrapped.json.data.secret_id });
    expect(login.json.auth.policies).toContain("ci-host-a");
    const read = await api("GET", "ci/data/hosts/host-a/forgejo-runner", undefined, login.json.auth.client_token);
    expect(read.json.data.data.token).toBe(generated);
    // getSecretV2 reads the document back, as a secret.
    expect(outputs.readToken).toBe(generated);
    expect(pulumi("stack", "output", "readToken").out).toContain("[secret]");
    // Neither the generated token nor the wrapping token is in state or the output in plaintext.
    const state = spawnSync("pulumi", ["stack", "export", "--stack", "test"], { cwd: dir, env, encoding: "utf8" }).stdout;
    for (const s of [generated, outputs.wrappingToken]) {
      expect(state).not.toContain(s);
      expect(r.out).not.toContain(s);
    }
  }, 180_000);

  it("a second run changes nothing", () => {
    const r = pulumi("preview", "--expect-no-changes");
    expect(r.code, r.out).toBe(0);
  }, 180_000);

  it("a policy edit updates only the policy, in place; the generated secret survives", async () => {
    const before = (await api("GET", "ci/data/hosts/host-a/forgejo-runner")).json.data.data.token;
    expect(pulumi("config", "set", "--plaintext", "providers:policy", 'path "ci/data/hosts/host-a/*" { capabilities = ["read", "list"] }').code).toBe(0);
    const preview = pulumi("preview", "--diff");
    expect(preview.out).toMatch(/~ 1 to update/);
    expect(preview.out).toMatch(/~ vault:index\/policy:Policy: \(update\)/);
    expect(preview.out).not.toMatch(/replace|to create|to delete/);
    const up = pulumi("up", "--yes");
    expect(up.code, up.out).toBe(0);
    expect((await api("GET", "sys/policies/acl/ci-host-a")).json.data.policy).toContain('"list"');
    expect((await api("GET", "ci/data/hosts/host-a/forgejo-runner")).json.data.data.token).toBe(before);
  }, 180_000);

  it("with OpenBao down the error names it; after a restart that lost everything, up --refresh converges", async () => {
    const token = (await api("GET", "ci/data/hosts/host-a/forgejo-runner")).json.data.data.token;
    await stopBao();
    const down = pulumi("up", "--refresh", "--yes");
    expect(down.code).not.toBe(0);
    expect(down.out).toContain(`${address}/v1/`);
    expect(down.out).toMatch(/connection refused/);
    await startBao(port);
    expect((await api("GET", "sys/policies/acl/ci-host-a")).status).toBe(404);
    const up = pulumi("up", "--refresh", "--yes");
    expect(up.code, up.out).toBe(0);
    expect((await api("GET", "sys/policies/acl/ci-host-a")).status).toBe(200);
    // The generated secret lives in state, so the recreated document holds the same value.
    expect((await api("GET", "ci/data/hosts/host-a/forgejo-runner")).json.data.data.token).toBe(token);
    expect(pulumi("preview", "--refresh", "--expect-no-changes").code).toBe(0);
  }, 300_000);

  it("destroy leaves OpenBao with none of it", async () => {
    const r = pulumi("destroy", "--yes");
    expect(r.code, r.out).toBe(0);
    expect((await api("GET", "sys/policies/acl/ci-host-a")).status).toBe(404);
    const mounts = (await api("GET", "sys/mounts")).json.data;
    expect(Object.keys(mounts)).not.toContain("ci/");
    expect(Object.keys((await api("GET", "sys/auth")).json.data)).not.toContain("ci-approle/");
  }, 180_000);
});
