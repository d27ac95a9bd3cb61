/**
 * The host's secret_id against a real OpenBao dev server (the engine build's `bao`, which is also
 * the `vault` CLI the bootstrap calls), for #24 item 9:
 *  - what a secret_id resource's delete does (upstream destroys `secret-id-accessor/destroy` with
 *    the wrapped accessor): the unwrapped secret_id itself stops working;
 *  - runner-fleet-bootstrap (nix/modules/bootstrap.nix, evaluated, then run with bash) unwraps
 *    only a token whose creation path is this host's own AppRole's secret-id endpoint.
 */
import { execFileSync, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engineBinDir } from "../engine/env";
import { startDevBao } from "./support/dev-bao";
import { ROOT } from "./support/fixtures";

const BAO = path.join(engineBinDir(), "bao");
const haveBao = fs.existsSync(BAO);
if (!haveBao) console.warn(`skipped: no ${BAO}; run npm run engine`);

/** runner-fleet-bootstrap's text, as the module renders it for a host of the example inventory. */
function bootstrapText(scratch: string): string {
  const modules = path.join(ROOT, "test", "support", "nix-modules.nix");
  const expr = `
    let t = import ${modules}; inventory = t.readInventory ${path.join(ROOT, "nix", "inventory.example.json")};
      r = t.call { file = ${path.join(ROOT, "nix", "modules", "bootstrap.nix")}; inherit inventory; hostName = "aws-metal-1"; };
    in (builtins.head (builtins.filter (p: p.name == "runner-fleet-bootstrap") r.environment.systemPackages)).text`;
  const out = execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], {
    env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" }, encoding: "utf8",
  });
  return JSON.parse(out) as string;
}

describe.skipIf(!haveBao)("a host's secret_id against OpenBao (#24 item 9)", () => {
  let bao: ChildProcess;
  let address: string;
  let scratch: string;
  const api = async (method: string, p: string, body?: unknown, token = "root", wrapTtl?: string) => {
    const headers: Record<string, string> = { "X-Vault-Token": token };
    if (wrapTtl) headers["X-Vault-Wrap-TTL"] = wrapTtl;
    const res = await fetch(`${address}/v1/${p}`, { method, headers, body: body ? JSON.stringify(body) : undefined });
    return { status: res.status, json: (await res.text().then((t) => (t ? JSON.parse(t) : {}))) as any };
  };
  const wrappedSecretId = async (role: string) => (await api("POST", `auth/approle/role/${role}/secret-id`, {}, "root", "10m")).json.wrap_info;
  const roleId = async (role: string) => (await api("GET", `auth/approle/role/${role}/role-id`)).json.data.role_id as string;

  beforeAll(async () => {
    ({ proc: bao, address } = await startDevBao(BAO, { rootToken: "root" }));
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), "rf-bootstrap-bao-"));
    await api("POST", "sys/auth/approle", { type: "approle" });
    await api("POST", "sys/mounts/ci", { type: "kv", options: { version: "2" } });
    await api("PUT", "sys/policies/acl/host", { policy: 'path "ci/data/hosts/aws-metal-1/ssh-host-key" { capabilities = ["create", "update", "read"] }' });
    for (const role of ["runner-fleet.ci.aws-metal-1", "runner-fleet.ci.other", "r1"]) {
      await api("POST", `auth/approle/role/${role}`, { token_policies: ["host"] });
    }
  }, 60_000);

  afterAll(() => {
    bao?.kill();
  });

  it("destroying by the wrapped accessor, as the resource's delete does, ends the unwrapped secret_id too", async () => {
    const wrap = await wrappedSecretId("r1");
    const unwrapped = (await api("POST", "sys/wrapping/unwrap", undefined, wrap.token)).json.data;
    // The wrapped accessor is the secret_id's own accessor, not the wrapping token's.
    expect(unwrapped.secret_id_accessor).toBe(wrap.wrapped_accessor);
    expect(wrap.accessor).not.toBe(wrap.wrapped_accessor);
    const login = () => api("POST", "auth/approle/login", { role_id: id, secret_id: unwrapped.secret_id });
    const id = await roleId("r1");
    expect((await login()).status).toBe(200);
    expect((await api("POST", "auth/approle/role/r1/secret-id-accessor/destroy", { secret_id_accessor: wrap.wrapped_accessor })).status).toBe(204);
    const after = await login();
    expect(after.status).toBe(400);
    expect(JSON.stringify(after.json.errors)).toMatch(/invalid (role or )?secret id/i);
    expect((await api("LIST", "auth/approle/role/r1/secret-id")).status).toBe(404);
  });

  /** A host's files and stand-ins for systemctl only; `vault` is the real CLI (bao). */
  function host(wrappingToken: string, role: string) {
    const dir = fs.mkdtempSync(path.join(scratch, "host-"));
    const bin = path.join(dir, "bin");
    for (const d of ["bin", "etc/runner-fleet/vault", "state", "ssh"]) fs.mkdirSync(path.join(dir, d), { recursive: true });
    fs.writeFileSync(path.join(dir, "etc/runner-fleet/host.json"), JSON.stringify({ name: "aws-metal-1", stack: "ci", vault: { address, mount: "ci", authMount: "approle" } }));
    fs.writeFileSync(path.join(dir, "etc/runner-fleet/vault/role-id"), `${role}\n`);
    fs.writeFileSync(path.join(dir, "etc/runner-fleet/vault/wrapped-secret-id"), wrappingToken);
    fs.writeFileSync(path.join(dir, "ssh/ssh_host_ed25519_key.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKey0 root@host\n");
    fs.symlinkSync(BAO, path.join(bin, "vault"));
    fs.writeFileSync(path.join(bin, "systemctl"), `#!/usr/bin/env bash\necho "$*" >> "${dir}/systemctl.log"\n`, { mode: 0o755 });
    const script = bootstrapText(scratch)
      .replaceAll("/etc/runner-fleet", path.join(dir, "etc/runner-fleet"))
      .replaceAll("/var/lib/runner-fleet", path.join(dir, "state"))
      .replaceAll("/etc/ssh", path.join(dir, "ssh"));
    const { VAULT_TOKEN: _t, VAULT_ADDR: _a, ...base } = process.env;
    // stdin /dev/null, as systemd runs it: on a socket (what Node's "pipe" is), a bash whose
    // SHLVL is below 2 reads /etc/bash.bashrc, which fails under -u on Debian (no PS1).
    const run = () => spawnSync("bash", ["-euo", "pipefail", "-c", script], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...base, HOME: dir, PATH: `${bin}:${process.env.PATH}` } });
    return { dir, run };
  }

  it("bootstrap unwraps its own AppRole's secret_id and logs in with it", async () => {
    const wrap = await wrappedSecretId("runner-fleet.ci.aws-metal-1");
    const { dir, run } = host(wrap.token, await roleId("runner-fleet.ci.aws-metal-1"));
    const r = run();
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(fs.readFileSync(path.join(dir, "state/vault/secret-id"), "utf8")).toMatch(/^[0-9a-f-]{36}$/);
    expect((await api("GET", "ci/data/hosts/aws-metal-1/ssh-host-key")).json.data.data.public_key).toMatch(/^ssh-ed25519 /);
  });

  it("bootstrap refuses, in one line and before unwrapping, a token wrapped anywhere else", async () => {
    // Another host's AppRole, and a token wrapped by sys/wrapping/wrap around chosen data.
    const other = await wrappedSecretId("runner-fleet.ci.other");
    const forged = (await api("POST", "sys/wrapping/wrap", { secret_id: "chosen" }, "root", "10m")).json.wrap_info;
    for (const [wrap, madeAt] of [[other, "auth/approle/role/runner-fleet.ci.other/secret-id"], [forged, "sys/wrapping/wrap"]] as const) {
      const { dir, run } = host(wrap.token, await roleId("runner-fleet.ci.aws-metal-1"));
      const r = run();
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split("\n")).toEqual([
        `runner-fleet-bootstrap: refusing the wrapped secret_id: it was made at ${madeAt}, not at auth/approle/role/runner-fleet.ci.aws-metal-1/secret-id`,
      ]);
      expect(fs.existsSync(path.join(dir, "state/vault/secret-id"))).toBe(false);
      expect(fs.existsSync(path.join(dir, "systemctl.log"))).toBe(false);
      // Not unwrapped: the token is still there to look up.
      expect((await api("POST", "sys/wrapping/lookup", { token: wrap.token })).status).toBe(200);
    }
  });
});
