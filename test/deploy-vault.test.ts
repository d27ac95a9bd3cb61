/**
 * The deploy's wait for a host's published SSH host key (issue 14 item 7), against a real
 * OpenBao dev server: the host writes `public_key` with a token of its own policy (policyFor:
 * create/update/read on its ssh-host-key path), the deploy's command polls with the operator's
 * VAULT_TOKEN from the environment and prints the key; a key that differs from the one a stock
 * install connected to is refused. OpenBao is the engine cache's `bao` (npm run engine; or
 * RUNNER_FLEET_ENGINE_DIR), else `bao` on PATH; without it these tests are skipped.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDevBao } from "./support/dev-bao";
import { hostKeyFromVaultCommand } from "../components/deploy-commands";
import { policyFor, sshHostKeyApiPath } from "../components/vault-paths";
import { baseConfig, modelFrom } from "./support/fixtures";

function findBao(): string | undefined {
  const dirs = [
    process.env.RUNNER_FLEET_ENGINE_DIR ? path.join(process.env.RUNNER_FLEET_ENGINE_DIR, "bin") : "",
    path.join(__dirname, "..", ".engine", "bin"),
    ...(process.env.PATH ?? "").split(":"),
  ].filter(Boolean);
  return dirs.map((d) => path.join(d, "bao")).find((p) => fs.existsSync(p));
}

const BAO = findBao();
const ROOT_TOKEN = "root-token-for-tests";
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdlcGxveS12YXVsdC10ZXN0LWtleS1ub3QtcmVhbA";
const OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG90aGVyLWtleS1mb3ItdGhlLWRlcGxveS10ZXN0cw";

describe.skipIf(!BAO)("waiting for a host's SSH host key in Vault (real OpenBao)", () => {
  let server: ChildProcess | undefined;
  let addr = "";
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-bao-"));
  // The fixture fleet, on the dev server's KV v2 mount `secret`.
  const model = modelFrom(baseConfig());
  const vaultModel = { ...model, vault: { ...model.vault, mount: "secret" } };
  const host = model.hosts[0];
  const apiPath = sshHostKeyApiPath(host.name, vaultModel);

  const bao = (args: string[], token = ROOT_TOKEN, input?: string) => {
    const r = spawnSync(BAO!, args, { encoding: "utf8", input, env: { ...process.env, VAULT_ADDR: addr, BAO_ADDR: addr, VAULT_TOKEN: token, BAO_TOKEN: token, HOME: dir } });
    if (r.status !== 0) throw new Error(`bao ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };

  /** Runs the deploy's command with the given environment; resolves when it exits. */
  const poll = (env: Record<string, string>, minutes = 1) => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn("/bin/sh", ["-c", hostKeyFromVaultCommand(host.name, apiPath, minutes)], {
      // A home of its own: the dev server leaves its root token in the server's ~/.vault-token.
      env: { PATH: process.env.PATH ?? "", HOME: fs.mkdtempSync(path.join(os.tmpdir(), "rf-home-")), RF_VAULT_ADDR: addr, ...env },
    });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("exit", (code) => resolve({ code, stdout, stderr }));
  });

  beforeAll(async () => {
    ({ proc: server, address: addr } = await startDevBao(BAO!, { rootToken: ROOT_TOKEN, env: { ...process.env, HOME: dir } }));
    // The host's own policy, as FleetVault writes it.
    bao(["policy", "write", "host", "-"], ROOT_TOKEN, policyFor(host, vaultModel));
  }, 30_000);

  afterAll(() => {
    server?.kill();
  });

  it("waits until the host publishes with its own token, then prints `type base64`; no token on any command line", async () => {
    const hostToken = bao(["token", "create", "-policy=host", "-field=token"]);
    const waiting = poll({ VAULT_TOKEN: ROOT_TOKEN });
    await new Promise((r) => setTimeout(r, 1500));
    // The host's write: its policy allows exactly this path.
    bao(["kv", "put", `-mount=secret`, `hosts/${host.name}/ssh-host-key`, `public_key=${KEY} root@${host.name}`], hostToken);
    const r = await waiting;
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(KEY);
    expect(hostKeyFromVaultCommand(host.name, apiPath, 1)).not.toContain(ROOT_TOKEN);
  }, 30_000);

  it("the host's policy lets it write only its own key", () => {
    const hostToken = bao(["token", "create", "-policy=host", "-field=token"]);
    expect(() => bao(["kv", "put", "-mount=secret", "hosts/someone-else/ssh-host-key", `public_key=${KEY}`], hostToken)).toThrow(/permission denied|403/);
  });

  it("refuses a published key other than the one a stock install connected to", async () => {
    const r = await poll({ VAULT_TOKEN: ROOT_TOKEN, RF_EXPECT_KEY: OTHER });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${host.name}: the host key published at ${apiPath} (${KEY}) is not the key this deploy pinned at first contact`);
    expect(r.stderr).toContain("refusing to deploy");
  }, 30_000);

  it("fails at once, naming the host, without VAULT_TOKEN or with a token that may not read the key", async () => {
    const none = await poll({});
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("VAULT_TOKEN is not set");
    // The token helper's file stands in for VAULT_TOKEN, as for the Vault CLI and provider.
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "rf-home-"));
    fs.writeFileSync(path.join(home, ".vault-token"), `${ROOT_TOKEN}\n`);
    const helper = await poll({ HOME: home });
    expect(helper.stdout).toBe(KEY);
    const weak = bao(["token", "create", "-policy=default", "-field=token"]);
    const denied = await poll({ VAULT_TOKEN: weak });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/refused to read .* \(403\)/);
  }, 30_000);
});
