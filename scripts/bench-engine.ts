/**
 * The real-engine rows of `npm run bench -- --engine [--engine-sizes 10,100,1000] [--rollout-seconds T]`:
 * what a user waits for under the real Pulumi CLI (`npm run engine`), beside a floor measured in
 * the same run.
 *
 * The harness, all in a network namespace of its own (so sshd may take port 22 and every
 * 127.x address is loopback): an OpenBao dev server, one sshd whose ForceCommand reads stdin and
 * succeeds (readiness, seed and pool pushes reach a host at once), an ssh-agent with a
 * throwaway key, and test/bench-engine/bin/deploy, a deploy-rs stand-in that waits
 * RF_BENCH_SWITCH_SECONDS, beside bin/nix, which answers the switch script's two `nix eval`s. Fleets are existing machines (scripts/bench-engine-fleet.ts).
 *
 * Per size, on a stack of its own:
 *   fresh preview            `pulumi preview` of a new stack
 *   (the stack is then made by `pulumi up --yes --skip-preview`, switches taking 0 s)
 *   up, nothing to change    `pulumi up --yes --skip-preview` again
 *   preview after pool edit  `pulumi config set --path runner-fleet:pools.medium.maxRunners 4`, `pulumi preview`
 * and the same three on the floor (test/bench-engine/floor): as many bare command:local:Command
 * resources as the fleet's preview counts, the vault provider configured, same CLI, backend and
 * runtime options; its edit updates as many commands as the fleet's edit updates.
 *
 * The rollout row: 12 hosts, batchSize 4, every switch taking T seconds, a fresh
 * `pulumi up --yes --skip-preview`; target 1.25 x ceil(12/4) x T.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { stringify } from "yaml";
import { engineEnv, missingEngineBinaries } from "../engine/env";
import { engineFleet, EDITED_POOL, hostsRunningEditedPool } from "./bench-engine-fleet";
import { sampleTree, readStat, type TreeUsage } from "./bench-engine-proc";
import { table } from "./bench-lib";

const ROOT = path.resolve(__dirname, "..");
const STAND_INS = path.join(ROOT, "test", "bench-engine", "bin");
const FLOOR_DIR = path.join(ROOT, "test", "bench-engine", "floor");
export const ENGINE_MAX_RATIO = 1.5;
export const ROLLOUT_MAX_RATIO = 1.25;
const ROOT_TOKEN = "bench-root-token";
const VAULT_ADDR = "http://127.0.0.1:8200";
const STACK = "bench";
const SETUP_PARALLEL = 32;
const SETUP_UP = ["up", "--yes", "--skip-preview", "--parallel", String(SETUP_PARALLEL)];
const SETUP_ENV = { PULUMI_SKIP_CHECKPOINTS: "true" };

export interface EngineBenchOptions {
  sizes: number[];
  /** Switch time of the rollout row; 0 skips the row. */
  rolloutSeconds: number;
  work: string;
  log: (s: string) => void;
}

interface Run {
  ok: boolean;
  wallSeconds: number;
  /** GNU time's %M: the largest single process's peak RSS. */
  maxProcMib: number;
  usage: TreeUsage;
  /** CPU seconds OpenBao and sshd spent during the run (outside the pulumi tree). */
  baoCpu: number;
  sshdCpu: number;
  out: string;
}

// ---------------------------------------------------------------------------------------------
// Harness

interface Harness {
  ns: string;
  hostKey: string;
  authorizedKey: string;
  agentSock: string;
  bao: ChildProcess;
  sshd: ChildProcess;
  stop(): void;
}

function sh(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", input: opts.input, env: opts.env, cwd: opts.cwd, maxBuffer: 256 * 2 ** 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${(r.stderr || r.stdout || String(r.error)).slice(-2000)}`);
  return r.stdout;
}

async function waitFor(what: string, check: () => boolean, seconds = 30): Promise<void> {
  const until = Date.now() + seconds * 1000;
  while (!check()) {
    if (Date.now() > until) throw new Error(`bench harness: ${what} did not come up within ${seconds} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function startHarness(work: string): Promise<Harness> {
  const ns = `rfbench-${process.pid}`;
  const dir = path.join(work, "harness");
  fs.mkdirSync(dir, { recursive: true });
  sh("ip", ["netns", "add", ns]);
  const procs: ChildProcess[] = [];
  const stop = () => {
    for (const p of procs) if (p.exitCode === null) p.kill("SIGTERM");
    spawnSync("ssh-agent", ["-k"], { env: { ...process.env, SSH_AGENT_PID: agentPid } });
    spawnSync("ip", ["netns", "del", ns]);
  };
  let agentPid = "";
  try {
    sh("ip", ["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
    sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "bench-host", "-f", path.join(dir, "host_key")]);
    sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "bench-user", "-f", path.join(dir, "user_key")]);
    const hostKey = fs.readFileSync(path.join(dir, "host_key.pub"), "utf8").trim().split(" ").slice(0, 2).join(" ");
    const authorizedKey = fs.readFileSync(path.join(dir, "user_key.pub"), "utf8").trim();
    fs.writeFileSync(path.join(dir, "authorized_keys"), `${authorizedKey}\n`);
    const agentSock = path.join(dir, "agent.sock");
    agentPid = /SSH_AGENT_PID=(\d+)/.exec(sh("ssh-agent", ["-a", agentSock]))![1];
    sh("ssh-add", ["-q", path.join(dir, "user_key")], { env: { ...process.env, SSH_AUTH_SOCK: agentSock } });
    fs.mkdirSync("/run/sshd", { recursive: true });
    fs.writeFileSync(path.join(dir, "sshd_config"), [
      "ListenAddress 0.0.0.0:22",
      `HostKey ${path.join(dir, "host_key")}`,
      `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
      "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
      "UsePAM no", "StrictModes no", `PidFile ${path.join(dir, "sshd.pid")}`,
      // Every remote step (readiness, seed, pools) reaches its host at once and succeeds, and
      // the switch's checks find the system the nix stand-in names: the bench measures the
      // engine and the program around them, not the hosts.
      `ForceCommand ${path.join(ROOT, "test", "bench-engine", "host-command")}`,
      "MaxStartups 1000:30:1000", "MaxSessions 1000", "LogLevel ERROR",
    ].join("\n") + "\n");
    const sshd = spawn("ip", ["netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", path.join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
    procs.push(sshd);
    const env = engineEnv({ backendDir: path.join(work, "state"), pulumiHome: path.join(work, "home") });
    const bao = spawn("ip", ["netns", "exec", ns, "bao", "server", "-dev", `-dev-root-token-id=${ROOT_TOKEN}`, "-dev-listen-address=127.0.0.1:8200", "-log-level=error"], { env, stdio: ["ignore", "ignore", "pipe"] });
    procs.push(bao);
    await waitFor("sshd", () => fs.existsSync(path.join(dir, "sshd.pid")));
    await waitFor("OpenBao", () => spawnSync("ip", ["netns", "exec", ns, "bao", "status", "-address", VAULT_ADDR], { env }).status === 0);
    return { ns, hostKey, authorizedKey, agentSock, bao, sshd, stop };
  } catch (err) {
    stop();
    throw err;
  }
}

/** CPU seconds of a process and its reaped children, looked up by the pid `ip netns exec` became. */
function cpuOf(pid: number | undefined): number {
  const s = pid ? readStat(pid) : undefined;
  return s ? s.cpu + s.childCpu : 0;
}

// ---------------------------------------------------------------------------------------------
// Projects and runs

class Project {
  readonly env: NodeJS.ProcessEnv;
  constructor(readonly dir: string, readonly h: Harness, work: string, extraEnv: NodeJS.ProcessEnv = {}) {
    const { VAULT_ADDR: _a, ...base } = process.env;
    this.env = {
      // A backend per project: every fleet project is named runner-fleet and its stack bench.
      ...engineEnv({ backendDir: path.join(dir, ".state"), pulumiHome: path.join(work, "home"), base }),
      VAULT_TOKEN: ROOT_TOKEN, SSH_AUTH_SOCK: h.agentSock, ...extraEnv,
    };
    this.env.PATH = `${STAND_INS}${path.delimiter}${this.env.PATH}`;
  }

  /** pulumi in the harness namespace, unmeasured; throws on failure. */
  pulumi(args: string[], input?: string): string {
    return sh("ip", ["netns", "exec", this.h.ns, "pulumi", ...args, "--non-interactive"], { env: this.env, cwd: this.dir, input });
  }

  /** pulumi in the harness namespace under GNU time, its process tree sampled. */
  async measure(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Run> {
    const timeFile = path.join(this.dir, ".time");
    const baoBefore = cpuOf(this.h.bao.pid);
    const sshdBefore = cpuOf(this.h.sshd.pid);
    const started = process.hrtime.bigint();
    const child = spawn("/usr/bin/time", ["-f", "%e %M", "-o", timeFile, "ip", "netns", "exec", this.h.ns, "pulumi", ...args, "--non-interactive"], { env: { ...this.env, ...extraEnv }, cwd: this.dir, stdio: ["ignore", "pipe", "pipe"] });
    const sampler = sampleTree(child.pid!);
    let out = "";
    const keep = (d: Buffer) => { out = (out + d.toString()).slice(-200_000); };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    const code: number = await new Promise((resolve) => child.on("close", (c) => resolve(c ?? 1)));
    const wall = Number(process.hrtime.bigint() - started) / 1e9;
    const usage = sampler.stop();
    const [, maxKib] = fs.readFileSync(timeFile, "utf8").trim().split("\n").at(-1)!.split(" ").map(Number);
    return { ok: code === 0, wallSeconds: wall, maxProcMib: maxKib / 1024, usage, baoCpu: cpuOf(this.h.bao.pid) - baoBefore, sshdCpu: cpuOf(this.h.sshd.pid) - sshdBefore, out };
  }

  /** A new stack with `config` (runner-fleet: keys, or full keys when `namespaced`). */
  initStack(config: Record<string, unknown>, secrets: Record<string, string>): void {
    this.pulumi(["stack", "init", STACK]);
    const file = path.join(this.dir, `Pulumi.${STACK}.yaml`);
    const salt = fs.readFileSync(file, "utf8");
    fs.writeFileSync(file, `${salt.trimEnd()}\n${stringify({ config })}`);
    for (const [key, value] of Object.entries(secrets)) this.pulumi(["config", "set", "--secret", key], value);
  }
}

function fleetProject(work: string, name: string, h: Harness, extraEnv: NodeJS.ProcessEnv = {}): Project {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ["Pulumi.yaml", "package.json", "tsconfig.json", "index.ts"]) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
  for (const d of ["components", "nix"]) fs.cpSync(path.join(ROOT, d), path.join(dir, d), { recursive: true, filter: (src) => !/\/result[^/]*$/.test(src) });
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  return new Project(dir, h, work, extraEnv);
}

function floorProject(work: string, name: string, h: Harness): Project {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ["Pulumi.yaml", "index.ts"]) fs.copyFileSync(path.join(FLOOR_DIR, f), path.join(dir, f));
  fs.copyFileSync(path.join(ROOT, "package.json"), path.join(dir, "package.json"));
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  return new Project(dir, h, work);
}

/** The resource counts of the summary the CLI prints: `+ 12 to create`, `~ 3 to update`, `5 unchanged`. */
export function parseSummary(out: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const m of out.matchAll(/^\s*(?:[+~-]|\+-)?\s*(\d+) (to create|to update|to delete|to replace|unchanged|created|updated|deleted|replaced)\s*$/gm)) counts[m[2]] = Number(m[1]);
  return counts;
}

const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);

function demand(run: Run, what: string): Run {
  if (!run.ok) throw new Error(`${what} failed after ${run.wallSeconds.toFixed(1)} s:\n${run.out.slice(-3000)}`);
  return run;
}

// ---------------------------------------------------------------------------------------------
// The rows

interface Row {
  hosts: number;
  what: string;
  fleet: Run;
  floor: Run;
  resources: number;
  changed: number;
}

async function sizeRows(hosts: number, h: Harness, o: EngineBenchOptions): Promise<Row[]> {
  const fleet = fleetProject(o.work, `fleet-${hosts}`, h);
  const config = engineFleet({ hosts, hostKey: h.hostKey, authorizedKey: h.authorizedKey, vaultAddress: VAULT_ADDR, mount: `ci-${hosts}`, authMount: `approle-${hosts}`, batchSize: 10 });
  // The hosts go in a file (runner-fleet:hostsFile): inline, 1,000 hosts exceed the 128 KiB the
  // language host's PULUMI_CONFIG may hold, and node does not start ("argument list too long").
  fs.writeFileSync(path.join(fleet.dir, "hosts.yaml"), stringify(config.hosts));
  const namespaced = Object.fromEntries(Object.entries({ ...config, hosts: {}, hostsFile: "hosts.yaml" }).map(([k, v]) => [`runner-fleet:${k}`, v]));
  fleet.initStack(namespaced, { "runner-fleet:githubAppPrivateKey": "-----BEGIN RSA PRIVATE KEY-----\nbench\n-----END RSA PRIVATE KEY-----\n" });

  o.log(`${hosts} hosts: fleet fresh preview ... `);
  const fresh = demand(await fleet.measure(["preview"]), `fleet preview (${hosts} hosts)`);
  const resources = total(parseSummary(fresh.out));
  o.log(`${fresh.wallSeconds.toFixed(1)} s (${resources} resources); floor ... `);
  const floor = floorProject(o.work, `floor-${hosts}`, h);
  // The floor counts the stack and its vault provider too: the rest are commands.
  floor.initStack({ "floor:count": resources - 2, "floor:vaultAddress": VAULT_ADDR }, {});
  const floorFresh = demand(await floor.measure(["preview"]), `floor preview (${hosts} hosts)`);
  const floorCount = total(parseSummary(floorFresh.out));
  if (floorCount !== resources) throw new Error(`floor preview counts ${floorCount} resources, the fleet's ${resources}`);
  o.log(`${floorFresh.wallSeconds.toFixed(1)} s\n`);

  // Not a row: the state the rows start from, made as fast as the engine allows (the file
  // backend rewrites the whole state after every step unless told not to).
  o.log(`${hosts} hosts: up (making the state, --parallel ${SETUP_PARALLEL}, PULUMI_SKIP_CHECKPOINTS) ... `);
  const made = demand(await fleet.measure(SETUP_UP, SETUP_ENV), `fleet up (${hosts} hosts)`);
  o.log(`${made.wallSeconds.toFixed(1)} s; floor ... `);
  const floorMade = demand(await floor.measure(SETUP_UP, SETUP_ENV), `floor up (${hosts} hosts)`);
  o.log(`${floorMade.wallSeconds.toFixed(1)} s\n`);

  o.log(`${hosts} hosts: up, nothing to change ... `);
  const noop = demand(await fleet.measure(["up", "--yes", "--skip-preview"]), `fleet no-op up (${hosts} hosts)`);
  const noopSummary = parseSummary(noop.out);
  if (total(noopSummary) !== (noopSummary.unchanged ?? -1)) throw new Error(`the second up changed something: ${JSON.stringify(noopSummary)}\n${noop.out.slice(-3000)}`);
  o.log(`${noop.wallSeconds.toFixed(1)} s; floor ... `);
  const floorNoop = demand(await floor.measure(["up", "--yes", "--skip-preview"]), `floor no-op up (${hosts} hosts)`);
  o.log(`${floorNoop.wallSeconds.toFixed(1)} s\n`);

  o.log(`${hosts} hosts: preview after a ${EDITED_POOL} maxRunners edit ... `);
  fleet.pulumi(["config", "set", "--path", `runner-fleet:pools.${EDITED_POOL}.maxRunners`, "4"]);
  const edit = demand(await fleet.measure(["preview"]), `fleet edit preview (${hosts} hosts)`);
  const changed = parseSummary(edit.out)["to update"] ?? 0;
  if (changed !== hostsRunningEditedPool(hosts)) throw new Error(`the ${EDITED_POOL} edit updates ${changed} resources, expected ${hostsRunningEditedPool(hosts)} pools pushes\n${edit.out.slice(-3000)}`);
  o.log(`${edit.wallSeconds.toFixed(1)} s (${changed} to update); floor ... `);
  floor.pulumi(["config", "set", "floor:changed", String(changed)]);
  const floorEdit = demand(await floor.measure(["preview"]), `floor edit preview (${hosts} hosts)`);
  o.log(`${floorEdit.wallSeconds.toFixed(1)} s\n`);

  return [
    { hosts, what: "fresh preview", fleet: fresh, floor: floorFresh, resources, changed: resources },
    { hosts, what: "up, nothing to change", fleet: noop, floor: floorNoop, resources, changed: 0 },
    { hosts, what: `preview after ${EDITED_POOL} edit`, fleet: edit, floor: floorEdit, resources, changed },
  ];
}

interface Rollout {
  run: Run;
  seconds: number;
  waves: number;
  /** Per wave: first switch start and last switch end, seconds after the up started. */
  timeline: Array<{ start: number; end: number }>;
}

async function rollout(h: Harness, o: EngineBenchOptions): Promise<Rollout> {
  const N = 12;
  const batch = 4;
  const log = path.join(o.work, "switches.log");
  const fleet = fleetProject(o.work, "rollout", h, { RF_BENCH_SWITCH_SECONDS: String(o.rolloutSeconds), RF_BENCH_LOG: log });
  const config = engineFleet({ hosts: N, hostKey: h.hostKey, authorizedKey: h.authorizedKey, vaultAddress: VAULT_ADDR, mount: "ci-rollout", authMount: "approle-rollout", batchSize: batch });
  fleet.initStack(Object.fromEntries(Object.entries(config).map(([k, v]) => [`runner-fleet:${k}`, v])), { "runner-fleet:githubAppPrivateKey": "-----BEGIN RSA PRIVATE KEY-----\nbench\n-----END RSA PRIVATE KEY-----\n" });
  o.log(`rollout: ${N} hosts, batchSize ${batch}, switch ${o.rolloutSeconds} s, fresh up ... `);
  const startedAt = Date.now() / 1000;
  const run = demand(await fleet.measure(["up", "--yes", "--skip-preview"]), "rollout up");
  o.log(`${run.wallSeconds.toFixed(1)} s\n`);
  const waves = Math.ceil(N / batch);
  const events = fs.readFileSync(log, "utf8").trim().split("\n").map((l) => l.split(" ")).map(([t, ev, host]) => ({ t: Number(t) - startedAt, ev, host }));
  const hostIndex = (name: string) => Number(name.split("-").at(-1));
  const timeline = Array.from({ length: waves }, (_, w) => {
    const of = events.filter((e) => Math.floor(hostIndex(e.host) / batch) === w);
    return { start: Math.min(...of.filter((e) => e.ev === "start").map((e) => e.t)), end: Math.max(...of.filter((e) => e.ev === "end").map((e) => e.t)) };
  });
  return { run, seconds: o.rolloutSeconds, waves, timeline };
}

// ---------------------------------------------------------------------------------------------
// Report

const fmt = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "-");
const verdict = (ok: boolean) => (ok ? "PASS" : "FAIL");

/** CPU seconds by where they were spent: the CLI, the language host and node, the plugins, OpenBao and sshd. */
export function cpuSplit(run: Pick<Run, "usage" | "baoCpu" | "sshdCpu">): Record<string, number> {
  const c = run.usage.cpuByProgram;
  const pick = (re: RegExp) => Object.entries(c).filter(([p]) => re.test(p)).reduce((a, [, v]) => a + v, 0);
  return {
    cli: pick(/^pulumi$/),
    node: pick(/^node$|^pulumi-language/),
    command: pick(/^pulumi-resource-command$/),
    vault: pick(/^pulumi-resource-vault$/),
    bao: run.baoCpu,
    sshd: run.sshdCpu,
  };
}

export async function benchEngine(o: EngineBenchOptions): Promise<{ lines: string[]; failures: number }> {
  const missing = missingEngineBinaries();
  if (missing.length) return { lines: [`Real-engine rows: the engine is not built (no ${missing.join(", ")}): run npm run engine`], failures: 0 };
  // A network namespace, sshd on port 22: root only (sudo npm run bench -- --engine).
  if (process.getuid?.() !== 0) return { lines: ["Real-engine rows: need root (a network namespace and sshd): run sudo npm run bench -- --engine"], failures: 0 };
  const h = await startHarness(o.work);
  const rows: Row[] = [];
  let roll: Rollout | undefined;
  const errors: string[] = [];
  try {
    // A failure ends its own part only: the rows measured so far are still reported.
    for (const n of o.sizes) {
      try {
        rows.push(...(await sizeRows(n, h, o)));
      } catch (err) {
        errors.push(`${n} hosts: ${(err as Error).message}`);
        o.log(`FAILED\n`);
      }
    }
    if (o.rolloutSeconds > 0) {
      try {
        roll = await rollout(h, o);
      } catch (err) {
        errors.push(`rollout: ${(err as Error).message}`);
        o.log(`FAILED\n`);
      }
    }
  } finally {
    h.stop();
  }

  const lines: string[] = ["", `Real engine vs floor (pulumi v3.248.0; target: at most ${ENGINE_MAX_RATIO}x the floor's wall time and peak tree memory)`];
  const t = [["hosts", "row", "resources", "changed", "s", "floor s", "time x", "tree MiB", "floor MiB", "mem x", "max proc MiB", "time", "memory"]];
  let failures = 0;
  for (const r of rows) {
    const tr = r.fleet.wallSeconds / r.floor.wallSeconds;
    const mr = r.fleet.usage.peakTreeMib / r.floor.usage.peakTreeMib;
    failures += Number(tr > ENGINE_MAX_RATIO) + Number(mr > ENGINE_MAX_RATIO);
    t.push([String(r.hosts), r.what, String(r.resources), String(r.changed), fmt(r.fleet.wallSeconds, 1), fmt(r.floor.wallSeconds, 1), fmt(tr),
      fmt(r.fleet.usage.peakTreeMib, 0), fmt(r.floor.usage.peakTreeMib, 0), fmt(mr), fmt(r.fleet.maxProcMib, 0), verdict(tr <= ENGINE_MAX_RATIO), verdict(mr <= ENGINE_MAX_RATIO)]);
  }
  lines.push(table(t));
  lines.push("  tree MiB: peak of the summed RSS of pulumi, the language host, node and the plugins, sampled every 100 ms;",
    "  max proc MiB: GNU time's %M, the largest single process's peak");
  const cpu = [["hosts", "row", "", "cli s", "node s", "command s", "vault s", "bao s", "sshd s"]];
  for (const r of rows) {
    for (const [who, run] of [["fleet", r.fleet], ["floor", r.floor]] as const) {
      const s = cpuSplit(run);
      cpu.push([String(r.hosts), r.what, who, fmt(s.cli, 1), fmt(s.node, 1), fmt(s.command, 1), fmt(s.vault, 1), fmt(s.bao, 1), fmt(s.sshd, 1)]);
    }
  }
  lines.push("", "Where the CPU goes (seconds; node = our program and the @pulumi/pulumi SDK; bao and sshd run outside the tree)", table(cpu));
  if (roll) {
    const target = roll.waves * roll.seconds;
    const ratio = roll.run.wallSeconds / target;
    if (ratio > ROLLOUT_MAX_RATIO) failures++;
    lines.push("", `Rollout critical path (target: a fresh up of 12 hosts in waves of 4 within ${ROLLOUT_MAX_RATIO}x ceil(12/4) x t)`, table([
      ["hosts", "batchSize", "t s", "waves x t", "up s", "ratio", "result"],
      ["12", "4", String(roll.seconds), fmt(target, 0), fmt(roll.run.wallSeconds, 1), fmt(ratio), verdict(ratio <= ROLLOUT_MAX_RATIO)],
    ]), "  waves (s after the up started): " + roll.timeline.map((w, i) => `${i + 1}: ${fmt(w.start, 1)}-${fmt(w.end, 1)}`).join(", "));
  }
  for (const e of errors) lines.push("", `FAILED ${e.slice(0, 4000)}`);
  return { lines, failures: failures + errors.length };
}
