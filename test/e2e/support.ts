/**
 * The e2e's plumbing: the real Pulumi CLI (from `npm run engine`), the test hosts
 * (hosts.sh), OpenBao (openbao.sh) and the project copy the stack lives in. Every command's
 * output is kept, so the canary test can search all of it.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { expect } from "vitest";
import { engineBinDir, engineEnv } from "../../engine/env";

export const REPO = path.resolve(__dirname, "../..");
export const E2E = __dirname;
export const RF = process.env.RF_E2E_DIR ?? "/tmp/rf-e2e";
export const PROJECT = path.join(RF, "project");
export const STATE = path.join(RF, "state");
export const STANDIN_LOG = path.join(RF, "stand-ins.log");
export const STACK = "e2e";
export const BAO_PORT = process.env.RF_E2E_BAO_PORT ?? "18231";
export const BAO_TOKEN = "e2e-root-token";
export const MOUNT = "ci-e2e";
export const PASSPHRASE = "e2e-passphrase-not-a-secret";

/** The test hosts: name -> address (the stack file says the same). */
export const HOSTS: Record<string, string> = {
  "e2e-cache-1": "10.231.0.13",
  "e2e-fa-1": "10.231.0.11",
  "e2e-fa-2": "10.231.0.12",
};

export interface Run {
  cmd: string;
  status: number;
  stdout: string;
  stderr: string;
  /** stdout and stderr together, for error messages and the canary search. */
  output: string;
  seconds: number;
}

/** Everything the pulumi commands printed, for the canary test. */
export const transcript: string[] = [];

export { engineBinDir as engineBin };

/**
 * The environment of every command: engine/env.ts's (the engine first on PATH, its plugins,
 * no downloads, a file:// backend in STATE, the passphrase), the deploy-tool stand-ins ahead of
 * it, and the README's credentials: VAULT_TOKEN for the provider and an SSH agent.
 */
export function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const base = engineEnv({ backendDir: STATE, pulumiHome: path.join(RF, "pulumi-home"), passphrase: PASSPHRASE });
  return {
    ...base,
    PATH: [path.join(E2E, "stand-ins"), base.PATH].join(":"),
    VAULT_TOKEN: BAO_TOKEN,
    VAULT_CACERT: path.join(RF, "tls", "ca.pem"),
    // The machine trusts the CA OpenBao's certificate is from, as it would an internal CA.
    SSL_CERT_FILE: path.join(RF, "tls", "bundle.pem"),
    SSH_AUTH_SOCK: path.join(RF, "agent.sock"),
    RF_E2E_DIR: RF,
    RF_E2E_STANDIN_LOG: STANDIN_LOG,
    NO_COLOR: "1",
    ...extra,
  };
}

function record(cmd: string, r: SpawnSyncReturns<string>, started: number): Run {
  const run: Run = {
    cmd,
    status: r.status ?? -1,
    stdout: r.stdout ?? "",
    stderr: r.stderr ?? "",
    output: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? `\n${r.error.message}` : ""}`,
    seconds: (Date.now() - started) / 1000,
  };
  // The engine's output: what every pulumi command printed (the tests' own reads of secrets are not).
  if (cmd.startsWith("pulumi ")) transcript.push(`$ ${cmd}\n${run.output}`);
  return run;
}

export function sh(file: string, args: string[], opts: { input?: string; cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Run {
  const started = Date.now();
  const r = spawnSync(file, args, {
    cwd: opts.cwd ?? PROJECT,
    env: opts.env ?? env(),
    input: opts.input,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    timeout: opts.timeoutMs ?? 10 * 60_000,
  });
  return record([file, ...args].join(" "), r, started);
}

/** Fails with the command's output when it did not exit 0. */
export function ok(run: Run): Run {
  if (run.status !== 0) throw new Error(`${run.cmd} exited ${run.status}:\n${run.output.slice(-6000)}`);
  return run;
}

export function pulumi(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Run {
  return sh("pulumi", [...args, "--non-interactive"], opts);
}

/** `pulumi ...` in the background: resolves when it exits; `output()` reads what it printed so far. */
export function pulumiAsync(args: string[]): { done: Promise<Run>; output: () => string } {
  const started = Date.now();
  let stdout = "";
  let stderr = "";
  const child = spawn("pulumi", [...args, "--non-interactive"], { cwd: PROJECT, env: env(), stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const done = new Promise<Run>((resolve) => {
    child.on("close", (code) => {
      resolve(record(`pulumi ${args.join(" ")}`, { status: code, stdout, stderr, pid: child.pid ?? 0, output: [], signal: null } as SpawnSyncReturns<string>, started));
    });
  });
  return { done, output: () => stdout + stderr };
}

export function hostsSh(args: string[]): Run {
  return ok(sh("bash", [path.join(E2E, "hosts.sh"), ...args], { cwd: REPO }));
}

export function openbaoSh(args: string[]): Run {
  return ok(sh("bash", [path.join(E2E, "openbao.sh"), ...args], { cwd: REPO }));
}

/** Runs on a test host as root (its network, mount and UTS namespaces). */
export function onHost(host: string, script: string, extraEnv: Record<string, string> = {}): Run {
  const vars = Object.entries(extraEnv).map(([k, v]) => `${k}=${v}`);
  return sh("bash", [path.join(E2E, "hosts.sh"), "exec", host, "env", ...vars, "sh", "-c", script], { cwd: REPO });
}

/**
 * A call to fireactions' API on a test host, as an operator in a root shell makes it: the
 * per-boot password from /run/fireactions-api/password (never argv), basic auth as runner-fleet.
 */
export function hostApi(host: string, method: "GET" | "POST", url: string): Run {
  const py = 'import base64, sys, urllib.request; pw = open("/run/fireactions-api/password").read().strip(); '
    + 'h = {"Authorization": "Basic " + base64.b64encode(("runner-fleet:" + pw).encode()).decode()}; '
    + 'sys.stdout.write(urllib.request.urlopen(urllib.request.Request(sys.argv[2], method=sys.argv[1], data=b"" if sys.argv[1] == "POST" else None, headers=h), timeout=30).read().decode())';
  return onHost(host, `python3 -c '${py}' ${method} ${url}`);
}

/** OpenBao's CLI on the deploy machine, as root token. */
export function bao(args: string[]): Run {
  return sh("bao", args, { cwd: REPO, env: env({ VAULT_ADDR: `https://127.0.0.1:${BAO_PORT}` }) });
}

/** `bao <args> -format=json` parsed; args must end with the positional ones. */
export function baoJson<T = any>(sub: string[], args: string[] = []): T {
  return JSON.parse(ok(bao([...sub, "-format=json", ...args])).stdout) as T;
}

/** A file on a host, read through its upper layers as the host sees it. */
export function hostFile(host: string, file: string): string | undefined {
  const r = onHost(host, `cat ${file}`);
  return r.status === 0 ? r.stdout : undefined;
}

/**
 * The project copy the stack lives in: the repo's program (links) and the stack files of
 * `stacks` (test/e2e/Pulumi.<stack>.yaml; default the e2e stack).
 */
export function makeProject(stacks: string[] = [STACK]): void {
  fs.rmSync(PROJECT, { recursive: true, force: true });
  fs.mkdirSync(PROJECT, { recursive: true });
  for (const entry of ["index.ts", "components", "nix", "node_modules", "package.json", "tsconfig.json"]) {
    fs.symlinkSync(path.join(REPO, entry), path.join(PROJECT, entry));
  }
  fs.copyFileSync(path.join(REPO, "Pulumi.yaml"), path.join(PROJECT, "Pulumi.yaml"));
  for (const stack of stacks) fs.copyFileSync(path.join(E2E, `Pulumi.${stack}.yaml`), path.join(PROJECT, `Pulumi.${stack}.yaml`));
}

/**
 * Fresh test hosts for one suite: the engine is built, and OpenBao restarts around the hosts
 * coming up (its listener binds on their bridge).
 */
export function freshHosts(hosts: Record<string, string>): void {
  expect(process.getuid?.(), "the e2e needs root (network namespaces, mounts)").toBe(0);
  for (const tool of ["pulumi", "pulumi-language-nodejs", "pulumi-resource-command", "pulumi-resource-vault", "bao"]) {
    expect(fs.existsSync(path.join(engineBinDir(), tool)), `${engineBinDir()}/${tool} is missing: run npm run engine`).toBe(true);
  }
  openbaoSh(["stop"]);
  hostsSh(["up", ...Object.entries(hosts).map(([h, a]) => `${h}=${a}`)]);
  openbaoSh(["start"]);
}

/**
 * A fresh stack, as the README's real-use steps make one: empty state and Pulumi home, the
 * project with `stack`'s file, `pulumi login file://...`, `stack init`, and the deploy key.
 * Each suite sets its own secrets after.
 */
export function freshStack(stack: string): void {
  fs.rmSync(STATE, { recursive: true, force: true });
  fs.rmSync(path.join(RF, "pulumi-home"), { recursive: true, force: true });
  fs.rmSync(STANDIN_LOG, { force: true });
  fs.mkdirSync(STATE, { recursive: true });
  makeProject([stack]);
  ok(pulumi(["login", `file://${STATE}`]));
  ok(pulumi(["stack", "init", stack]));
  ok(pulumi(["config", "set", "--path", "runner-fleet:ssh.authorizedKeys[0]", fs.readFileSync(path.join(RF, "id_ed25519.pub"), "utf8").trim(), "--stack", stack]));
}

/** The offline plan of the stack file as it is now: `npm run plan -- --config FILE --out DIR --json`. */
export function plan(out: string): { resources: Array<{ urn: string; type: string; name: string }> } {
  fs.rmSync(out, { recursive: true, force: true });
  const r = ok(sh("npm", ["run", "-s", "plan", "--", "--config", path.join(PROJECT, `Pulumi.${STACK}.yaml`), "--json", "--out", out], { cwd: REPO }));
  return JSON.parse(r.stdout);
}

/** Lines of the stand-ins' log (one JSON object per call). */
export function standinCalls(): Array<{ time: number; tool: string; argv: string[] }> {
  if (!fs.existsSync(STANDIN_LOG)) return [];
  return fs.readFileSync(STANDIN_LOG, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

/** The host a deploy stand-in call was for (FLAKE#HOST). */
export function deployedHost(call: { argv: string[] }): string | undefined {
  const target = call.argv.find((a) => a.includes("#"));
  return target?.split("#")[1].replace(/^"|"$/g, "");
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false, seconds = 60): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds}s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Every file under dir (recursively), for the canary search. */
export function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));
}
