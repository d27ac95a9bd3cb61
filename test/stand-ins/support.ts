/**
 * Starting the fireactions v0.4.0 and GitHub REST STAND-INS (README.md in each directory) from a
 * test, on loopback. Used by their own tests and by e2e and scaler/observability tests.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";

export const STANDINS = resolve(__dirname);
export const GITHUB_STANDIN = join(STANDINS, "github", "github_standin.py");
export const FIREACTIONS_STANDIN = join(STANDINS, "fireactions", "fireactions_standin.py");
const RENDERER = resolve(__dirname, "..", "..", "nix", "pkgs", "render-fireactions-config.py");

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A TCP port nothing listens on right now (loopback). */
export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function json(url: string, init?: RequestInit): Promise<{ status: number; body: any }> {
  const r = await fetch(url, init);
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : undefined };
}

export interface Job {
  id: number;
  name: string;
  labels: string[];
  status: "queued" | "in_progress" | "completed" | "lost";
  runner: string | null;
  result: string;
}

export interface GitHubStandIn {
  url: string;
  proc: ChildProcess;
  queueJob(job: { org: string; labels: string[]; name?: string; duration: number; result?: string }): Promise<Job>;
  jobs(): Promise<Job[]>;
  events(): Promise<{ time: number; kind: string; runner?: string; job?: number }[]>;
  runners(org: string, token: string): Promise<any[]>;
  stop(): Promise<void>;
}

/** Starts the GitHub stand-in on 127.0.0.1 (or `listen`), waiting until it answers. */
export async function startGitHub(opts: { appId?: number; publicKeyFile?: string; lostAfter?: number; listen?: string; dir: string }): Promise<GitHubStandIn> {
  mkdirSync(opts.dir, { recursive: true });
  const portFile = join(opts.dir, "github.port");
  const args = [GITHUB_STANDIN, "--listen", opts.listen ?? "127.0.0.1:0", "--port-file", portFile];
  if (opts.appId !== undefined) args.push("--app-id", String(opts.appId));
  if (opts.publicKeyFile) args.push("--app-public-key", opts.publicKeyFile);
  if (opts.lostAfter !== undefined) args.push("--lost-after", String(opts.lostAfter));
  const proc = spawn("python3", args, { stdio: ["ignore", "ignore", "inherit"] });
  const port = await waitFor("the GitHub stand-in's port", () => (existsSync(portFile) ? readFileSync(portFile, "utf8").trim() : undefined));
  const host = (opts.listen ?? "127.0.0.1:0").replace(/:\d+$/, "");
  const url = `http://${host}:${port}`;
  return {
    url,
    proc,
    async queueJob(job) {
      const r = await json(`${url}/_standin/jobs`, { method: "POST", body: JSON.stringify(job) });
      if (r.status !== 201) throw new Error(`queue job: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    },
    jobs: async () => (await json(`${url}/_standin/jobs`)).body.jobs,
    events: async () => (await json(`${url}/_standin/events`)).body.events,
    async runners(org, token) {
      const r = await json(`${url}/orgs/${org}/actions/runners?per_page=100`, { headers: { Authorization: `Bearer ${token}` } });
      return r.body.runners;
    },
    stop: () => stopProcess(proc),
  };
}

export async function stopProcess(proc: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  await new Promise<void>((ok) => {
    proc.once("exit", () => ok());
    proc.kill(signal);
  });
}

/** A throwaway GitHub App key pair (PEM files) for the stand-ins. */
export function appKeyPair(dir: string): { key: string; pub: string } {
  mkdirSync(dir, { recursive: true });
  const key = join(dir, "app-key.pem");
  const pub = join(dir, "app-pub.pem");
  for (const argv of [["genrsa", "-out", key, "2048"], ["rsa", "-in", key, "-pubout", "-out", pub]]) {
    const r = spawnSync("openssl", argv, { stdio: ["ignore", "ignore", "pipe"] });
    if (r.status !== 0) throw new Error(`openssl ${argv[0]}: ${r.stderr}`);
  }
  return { key, pub };
}

/** Where renderConfig keeps the API password of `dir` (as /run/fireactions-api/password on a host). */
export const apiPasswordFile = (dir: string) => join(dir, "api-password");

/** Writes `dir`'s API password once (a host's per-boot generator); later renders reuse it. */
export function ensureApiPassword(dir: string): string {
  const file = apiPasswordFile(dir);
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString("base64url") + "\n", { mode: 0o600 });
  return file;
}

/**
 * Renders a fireactions config with OUR renderer (nix/pkgs/render-fireactions-config.py), so the
 * stand-in reads exactly what hosts get. `pools` is pools.json's content. The API asks for basic
 * auth, as on hosts (the password in apiPasswordFile(dir)), unless `auth` is false.
 */
export function renderConfig(opts: { dir: string; pools: unknown; appId: number; keyFile: string; bind: string; metrics: string; out?: string; auth?: boolean }): string {
  mkdirSync(opts.dir, { recursive: true });
  const poolsFile = join(opts.dir, "pools.json");
  const idFile = join(opts.dir, "github-app-id");
  writeFileSync(poolsFile, JSON.stringify(opts.pools));
  writeFileSync(idFile, `${opts.appId}\n`);
  const out = opts.out ?? join(opts.dir, "config.yaml");
  const r = spawnSync("python3", [RENDERER, "--pools", poolsFile, "--app-id-file", idFile, "--app-key-file", opts.keyFile,
    "--out", out, "--bind-address", opts.bind, "--metrics-address", opts.metrics,
    ...(opts.auth === false ? [] : ["--api-password-file", ensureApiPassword(opts.dir)])], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`render-fireactions-config: ${r.stderr}`);
  return out;
}

/** One pools.json entry (the contract of docs/contracts.md). */
export function poolEntry(name: string, o: { min?: number; max?: number; labels?: string[]; org?: string } = {}) {
  return {
    name,
    minRunners: o.min ?? 1,
    maxRunners: o.max ?? 2,
    runner: { name, image: "ghcr.io/acme/runner:1", organization: o.org ?? "acme", labels: o.labels ?? ["self-hosted", name] },
    firecracker: { vcpuCount: 1, memSizeMib: 512, kernelArgs: "console=ttyS0" },
  };
}

export interface FireactionsStandIn {
  api: string;
  metrics: string;
  proc: ChildProcess;
  /** Log lines it wrote to stderr so far. */
  log(): string;
  /** The Authorization header the config's basic auth accepts ({} when it is off). */
  auth: Record<string, string>;
  pools(): Promise<any[]>;
  /** POST with the config's credentials (`auth` false: without any). */
  post(path: string, auth?: boolean): Promise<{ status: number; body: any }>;
  /** Console logs of its VMs: runner name -> text. */
  consoles(pool: string): Record<string, string>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** An HTTP basic-auth Authorization value (RFC 7617). */
export const basicAuth = (user: string, password: string) => "Basic " + Buffer.from(`${user}:${password}`).toString("base64");

/** The basic-auth header for a rendered config's first basic_auth_users account, if it asks for one. */
export function authHeader(config: string): Record<string, string> {
  const c = JSON.parse(readFileSync(config, "utf8"));
  const [user] = Object.keys(c.basic_auth_users ?? {});
  if (!c.basic_auth_enabled || user === undefined) return {};
  return { Authorization: basicAuth(user, c.basic_auth_users[user]) };
}

export async function startFireactions(opts: { config: string; root: string; githubApi: string; api: string; metrics: string }): Promise<FireactionsStandIn> {
  const proc = spawn("python3", [FIREACTIONS_STANDIN, "--config", opts.config, "--root", opts.root, "--github-api", opts.githubApi],
    { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  const api = `http://${opts.api}`;
  const auth = authHeader(opts.config);
  await waitFor("the fireactions stand-in's API", async () => {
    if (proc.exitCode !== null) throw new Error(`fireactions stand-in exited ${proc.exitCode}: ${stderr}`);
    try {
      return (await fetch(`${api}/healthz`)).ok || undefined;
    } catch {
      return undefined;
    }
  });
  return {
    api,
    metrics: `http://${opts.metrics}/metrics`,
    proc,
    log: () => stderr,
    auth,
    pools: async () => (await json(`${api}/api/v1/pools`, { headers: auth })).body.pools,
    post: (path, withAuth = true) => json(`${api}${path}`, { method: "POST", headers: withAuth ? auth : {} }),
    consoles(pool) {
      const dir = join(opts.root, "var/lib/fireactions/pools", pool);
      const out: Record<string, string> = {};
      if (!existsSync(dir)) return out;
      for (const f of readdirSync(dir)) {
        if (f.endsWith(".log")) out[f.slice(0, -4)] = readFileSync(join(dir, f), "utf8");
      }
      return out;
    },
    stop: (signal = "SIGTERM") => stopProcess(proc, signal),
  };
}

/**
 * One "host": our renderer writes its config (free loopback ports for the API and metrics) under
 * `dir`, and the fireactions stand-in runs it against `githubApi`. `rerender` writes new pools.
 */
export async function startStandInHost(o: { dir: string; pools: unknown[]; appId: number; keyFile: string; githubApi: string }) {
  const bind = `127.0.0.1:${await freePort()}`;
  const metrics = `127.0.0.1:${await freePort()}`;
  const render = (pools: unknown[]) => renderConfig({ dir: o.dir, pools, appId: o.appId, keyFile: o.keyFile, bind, metrics });
  const config = render(o.pools);
  const fa = await startFireactions({ config, root: join(o.dir, "root"), githubApi: o.githubApi, api: bind, metrics });
  return { fa, config, sub: o.dir, bind, metrics, rerender: render };
}
