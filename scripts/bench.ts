/**
 * npm run bench [-- --sizes 1,10,100,1000] [--runs N] [--heap MiB] [--profile] [--no-typecheck] [--keep]
 *                 [--engine [--engine-sizes 10,100,1000] [--rollout-seconds 20] [--engine-only]]
 *                 [--<rows>-only | --no-<rows>], <rows>: monitoring, scaler, cache, drain, mirror
 *
 * Measures the offline plan (scripts/plan.ts --json, the real program under mocks) on synthetic
 * fleets of growing size, against a floor measured in the same run: a process that loads the
 * same provider modules and registers the same number of bare resources under the same mocks
 * (scripts/bench-floor.ts). Prints wall time and peak memory of both, their ratio, and whether
 * each target holds; also the cost of `tsc --noEmit`. Always exits 0: it is a measurement.
 * --profile runs the largest plan once more under `node --cpu-prof` and says where time goes.
 * --engine adds the real-engine rows (scripts/bench-engine.ts; needs `npm run engine` and root);
 * --engine-only prints those alone. The scaler's rows (scripts/bench-scaler.ts: reaction time and
 * cost per host with 10 pools, against the fireactions stand-in) run by default; --scaler-only
 * prints those alone, --no-scaler skips them. The other host-side rows run the same way, each with
 * its --<name>-only and --no-<name> (ROW_SECTIONS): the exporter's (scripts/bench-monitoring.ts:
 * scrape and relay latency, memory, against floors), the fleet cache's (scripts/bench-cache.ts:
 * substitution with the module's settings against a store-to-store copy, and past a dead cache)
 * and the drain's (scripts/bench-drain.ts: a pool edit's apply time and VMs kept, reload against
 * restart in the same run) and the registry mirror's (scripts/bench-mirror.ts: cold and warm pulls
 * through it against a direct pull).
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { modelFrom, writeStackFile } from "../test/support/fixtures";
import { benchEngine } from "./bench-engine";
import { benchMonitoring } from "./bench-monitoring";
import { benchCache } from "./bench-cache";
import { benchScaler } from "./bench-scaler";
import { benchDrain } from "./bench-drain";
import { benchMirror } from "./bench-mirror";
import { missingEngineBinaries } from "../engine/env";
import { benchFleet } from "./bench-fleet";
import {
  median, modulesToLoad, parseGnuTime, pulumiImports, resourcesPerHost, summarisePlanFile, summariseProfile, table,
  type CpuProfile, type ModuleLoad, type PlanSummary,
} from "./bench-lib";

const ROOT = path.resolve(__dirname, "..");
const GNU_TIME = "/usr/bin/time";
/** Targets: the plan may cost this much more than the floor; tsc must stay under these. */
const MAX_RATIO = 1.5;
const TSC_MAX_SECONDS = 10;
const TSC_MAX_MIB = 1024;

type RowSection = { name: string; run: (opts: { work: string; log: (s: string) => void }) => Promise<{ lines: string[]; failures: number }> };
/** Host-side rows, in print order; each gets --<name>-only and --no-<name>. */
const ROW_SECTIONS: RowSection[] = [
  { name: "monitoring", run: benchMonitoring },
  { name: "scaler", run: benchScaler },
  { name: "cache", run: benchCache },
  { name: "drain", run: benchDrain },
  { name: "mirror", run: benchMirror },
];

interface Measurement {
  ok: boolean;
  wallSeconds: number;
  maxRssMib: number;
  stderr: string;
}

const heapArgs: string[] = [];
const hasGnuTime = fs.existsSync(GNU_TIME) && spawnSync(GNU_TIME, ["-f", "%e", "true"]).status === 0;

/** Where the fallback (no GNU time) writes the child's peak RSS from inside the process. */
const RSS_PRELOAD = `import { writeFileSync } from "node:fs";
process.on("exit", () => { if (process.env.BENCH_RSS_FILE) writeFileSync(process.env.BENCH_RSS_FILE, String(process.resourceUsage().maxRSS)); });
`;

/**
 * Runs `node --import tsx <args>` with stdout to `stdoutFile`, under GNU time when present
 * (peak RSS of the process as the kernel saw it) or with an in-process maxRSS report.
 */
async function measure(nodeArgs: string[], stdoutFile: string, work: string): Promise<Measurement> {
  const timeFile = path.join(work, "time.txt");
  const rssFile = path.join(work, "rss.txt");
  fs.rmSync(timeFile, { force: true });
  fs.rmSync(rssFile, { force: true });
  let cmd: string;
  let args: string[];
  const node = [...heapArgs, "--import", "tsx", ...nodeArgs];
  if (hasGnuTime) {
    cmd = GNU_TIME;
    args = ["-f", "%e %M", "-o", timeFile, process.execPath, ...node];
  } else {
    const preload = path.join(work, "rss-preload.mjs");
    fs.writeFileSync(preload, RSS_PRELOAD);
    cmd = process.execPath;
    args = ["--import", preload, ...node];
  }
  const out = fs.openSync(stdoutFile, "w");
  const started = process.hrtime.bigint();
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", out, "pipe"], env: { ...process.env, BENCH_RSS_FILE: rssFile } });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-20_000);
  });
  const code: number = await new Promise((resolve) => child.on("close", (c) => resolve(c ?? 1)));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  fs.closeSync(out);
  if (hasGnuTime) {
    // Measured even when the run failed: a plan that runs out of heap has a peak worth seeing.
    const t = parseGnuTime(fs.readFileSync(timeFile, "utf8"));
    return { ok: code === 0, wallSeconds: t.wallSeconds, maxRssMib: t.maxRssKib / 1024, stderr };
  }
  const rss = fs.existsSync(rssFile) ? Number(fs.readFileSync(rssFile, "utf8")) : NaN;
  return { ok: code === 0, wallSeconds: elapsed, maxRssMib: rss / 1024, stderr };
}

/** Median wall time and peak memory of `runs` runs (one failure ends the series). */
async function series(runs: number, nodeArgs: string[], stdoutFile: string, work: string): Promise<Measurement> {
  const all: Measurement[] = [];
  for (let i = 0; i < runs; i++) {
    const m = await measure(nodeArgs, stdoutFile, work);
    if (!m.ok) return m;
    all.push(m);
  }
  return { ok: true, wallSeconds: median(all.map((m) => m.wallSeconds)), maxRssMib: median(all.map((m) => m.maxRssMib)), stderr: "" };
}

/** The @pulumi imports anywhere in the program (index.ts and components/). */
function programImports(): string[] {
  const files = ["index.ts", ...fs.readdirSync(path.join(ROOT, "components"), { recursive: true, encoding: "utf8" }).map((f) => path.join("components", f))];
  const found = new Set<string>();
  for (const f of files.filter((f) => f.endsWith(".ts"))) {
    for (const spec of pulumiImports(fs.readFileSync(path.join(ROOT, f), "utf8"))) found.add(spec);
  }
  return [...found].sort();
}

const isOom = (m: Measurement) => !m.ok && /heap out of memory|Reached heap limit/.test(m.stderr);
const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "-");
const verdict = (ok: boolean) => (ok ? "PASS" : "FAIL");

interface SizeResult {
  hosts: number;
  plan: Measurement;
  floor?: Measurement;
  summary?: PlanSummary;
  perFireactionsHost?: number;
  loads?: ModuleLoad[];
}

async function main() {
  const { values } = parseArgs({
    options: {
      sizes: { type: "string", default: "1,10,100,1000" },
      runs: { type: "string" },
      profile: { type: "boolean", default: false },
      "no-typecheck": { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      heap: { type: "string" },
      engine: { type: "boolean", default: false },
      "engine-only": { type: "boolean", default: false },
      "engine-sizes": { type: "string", default: "10,100,1000" },
      "rollout-seconds": { type: "string", default: "20" },
      "scaler-only": { type: "boolean", default: false },
      "no-scaler": { type: "boolean", default: false },
      ...Object.fromEntries(ROW_SECTIONS.flatMap((r) => [[`${r.name}-only`, { type: "boolean" as const, default: false }], [`no-${r.name}`, { type: "boolean" as const, default: false }]])),
    },
  });
  const flags = values as Record<string, boolean | string | undefined>;
  // --<row>-only prints those rows alone; without any, every row not turned off runs, unless
  // --engine-only asks for the engine's rows alone.
  const onlyRows = ROW_SECTIONS.filter((r) => flags[`${r.name}-only`]);
  const rowsToRun = onlyRows.length ? onlyRows : values["engine-only"] ? [] : ROW_SECTIONS.filter((r) => !flags[`no-${r.name}`]);
  const engineOnly = values["engine-only"]! || onlyRows.length > 0;
  const sizes = values.sizes!.split(",").map(Number);
  // --heap MiB raises V8's old-space limit for plan and floor alike (default: node's own, the
  // limit a user running `pulumi up` meets first).
  if (values.heap) heapArgs.push(`--max-old-space-size=${Number(values.heap)}`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "rf-bench-"));
  const sourceImports = programImports();
  process.stdout.write(`runner-fleet bench: ${os.cpus().length} CPUs, node ${process.version}, peak memory from ${hasGnuTime ? "GNU time" : "process.resourceUsage() (GNU time not found)"}\n`);
  process.stdout.write(`work dir ${work}\n\n`);

  const results: SizeResult[] = [];
  for (const hosts of engineOnly ? [] : sizes) {
    // Small sizes are noisy (start-up dominates): median of 3. Larger ones run once, to keep
    // the whole bench within a few minutes on 2 cores.
    const runs = values.runs ? Number(values.runs) : hosts <= 10 ? 3 : 1;
    const config = benchFleet(hosts);
    const model = modelFrom(config); // throws if the generator ever produces an invalid fleet
    const stackFile = writeStackFile(config, fs.mkdtempSync(path.join(work, `h${hosts}-`)));
    const planOut = path.join(work, `plan-${hosts}.json`);
    process.stdout.write(`${hosts} hosts: plan x${runs} ... `);
    const plan = await series(runs, ["scripts/plan.ts", "--config", stackFile, "--json"], planOut, work);
    if (!plan.ok) {
      process.stdout.write(`FAILED after ${fmt(plan.wallSeconds)} s, ${fmt(plan.maxRssMib, 0)} MiB${isOom(plan) ? " (JavaScript heap out of memory)" : ""}\n`);
      if (!isOom(plan)) process.stdout.write(`${plan.stderr.slice(-1500)}\n`);
      results.push({ hosts, plan });
      continue;
    }
    const summary = await summarisePlanFile(planOut);
    const fa = model.hosts.filter((h) => h.roles.includes("fireactions")).map((h) => h.name);
    const perHost = resourcesPerHost(summary.names, fa);
    const perFireactionsHost = fa.length ? [...perHost.values()].reduce((a, b) => a + b, 0) / fa.length : NaN;
    const loads = modulesToLoad(summary.types, sourceImports);
    process.stdout.write(`${fmt(plan.wallSeconds)} s; floor x${runs} ... `);
    const counts: Record<string, number> = {};
    for (const t of summary.types) counts[t] = (counts[t] ?? 0) + 1;
    const specFile = path.join(work, `floor-spec-${hosts}.json`);
    fs.writeFileSync(specFile, JSON.stringify({ loads, counts }));
    const floor = await series(runs, ["scripts/bench-floor.ts", "--config", stackFile, "--spec", specFile], path.join(work, `floor-${hosts}.json`), work);
    process.stdout.write(floor.ok ? `${fmt(floor.wallSeconds)} s\n` : `FAILED\n${floor.stderr.slice(-2000)}\n`);
    if (!values.keep) fs.rmSync(planOut, { force: true });
    results.push({ hosts, plan, floor, summary, perFireactionsHost, loads });
  }

  let tsc: Measurement | undefined;
  if (!values["no-typecheck"] && !engineOnly) {
    process.stdout.write("tsc --noEmit ... ");
    tsc = await measureTsc(work);
    process.stdout.write(`${fmt(tsc.wallSeconds)} s${tsc.ok ? "" : " (type errors: see npm run typecheck)"}\n`);
  }

  // ---- report
  const rows = [["hosts", "resources", "custom", "plan s", "floor s", "time x", "plan MiB", "floor MiB", "mem x", "ms/host", "res/fa-host", "time", "memory"]];
  for (const r of results) {
    if (!r.summary || !r.floor?.ok) {
      const why = isOom(r.plan) ? "OOM" : r.plan.ok ? "" : "failed";
      rows.push([String(r.hosts), "-", "-", `${why} ${fmt(r.plan.wallSeconds)}`.trim(), r.floor ? "failed" : "-", "-", fmt(r.plan.maxRssMib, 0), "-", "-", "-", "-", "FAIL", "FAIL"]);
      continue;
    }
    const tr = r.plan.wallSeconds / r.floor.wallSeconds;
    const mr = r.plan.maxRssMib / r.floor.maxRssMib;
    rows.push([
      String(r.hosts), String(r.summary.total), String(r.summary.custom),
      fmt(r.plan.wallSeconds), fmt(r.floor.wallSeconds), fmt(tr),
      fmt(r.plan.maxRssMib, 0), fmt(r.floor.maxRssMib, 0), fmt(mr),
      fmt((r.plan.wallSeconds * 1000) / r.hosts, 1), fmt(r.perFireactionsHost ?? NaN, 1),
      verdict(tr <= MAX_RATIO), verdict(mr <= MAX_RATIO),
    ]);
  }
  const out: string[] = engineOnly ? [] : [
    "",
    `Plan vs floor (target: plan at most ${MAX_RATIO}x the floor in wall time and peak memory, at every size)`,
    table(rows),
    "  resources: every registered resource, components included; custom: provider resources",
    "  res/fa-host: resources named after a fireactions host, averaged over fireactions hosts",
  ];
  const last = results.at(-1);
  if (last?.loads) out.push(`  floor loads: ${last.loads.map((l) => l.specifier + (l.property ? `.${l.property}` : "")).join(", ") || "@pulumi/pulumi only"}`);
  if (tsc) {
    out.push("", `Type check (target: under ${TSC_MAX_SECONDS} s and ${TSC_MAX_MIB} MiB)`, table([
      ["command", "wall s", "peak MiB", "exit", "time", "memory"],
      ["tsc --noEmit -p tsconfig.json", fmt(tsc.wallSeconds), fmt(tsc.maxRssMib, 0), tsc.ok ? "0" : "errors",
        verdict(tsc.wallSeconds < TSC_MAX_SECONDS), verdict(tsc.maxRssMib < TSC_MAX_MIB)],
    ]));
  }
  const failures = rows.slice(1).flatMap((r) => r.slice(-2)).filter((v) => v === "FAIL").length
    + (tsc && !(tsc.wallSeconds < TSC_MAX_SECONDS && tsc.maxRssMib < TSC_MAX_MIB) ? 1 : 0);
  let engineFailures = 0;
  for (const section of rowsToRun) {
    const r = await section.run({ work, log: (s) => process.stdout.write(s) });
    out.push(...r.lines);
    engineFailures += r.failures;
  }
  if (onlyRows.length) {
    // those rows only
  } else if (values.engine || engineOnly) {
    process.stdout.write(`${out.join("\n")}\n\n`);
    out.length = 0;
    const engine = await benchEngine({
      sizes: values["engine-sizes"]!.split(",").map(Number), rolloutSeconds: Number(values["rollout-seconds"]), work,
      log: (s) => process.stdout.write(s),
    });
    out.push(...engine.lines);
    engineFailures += engine.failures;
  } else {
    const missing = missingEngineBinaries();
    out.push("", missing.length
      ? "Real-engine rows: the engine is not built: run npm run engine, then npm run bench -- --engine"
      : "Real-engine rows: npm run bench -- --engine (as root: a network namespace, sshd and OpenBao; minutes at 1,000 hosts)");
  }
  const all = failures + engineFailures;
  out.push("", all ? `RESULT: FAIL (${all} target${all > 1 ? "s" : ""} missed)` : "RESULT: all targets PASS", "");
  process.stdout.write(out.join("\n"));

  if (values.profile) {
    const hosts = Math.max(...sizes);
    await profile(hosts, work);
  }
  if (!values.keep) fs.rmSync(work, { recursive: true, force: true });
}

async function measureTsc(work: string): Promise<Measurement> {
  // The same tsc `npm run typecheck` runs (TypeScript 7, installed under the alias "tsgo").
  const tscBin = path.join(ROOT, "node_modules", ".bin", "tsc");
  const timeFile = path.join(work, "tsc-time.txt");
  const started = process.hrtime.bigint();
  const cmd = hasGnuTime ? GNU_TIME : process.execPath;
  const args = hasGnuTime ? ["-f", "%e %M", "-o", timeFile, process.execPath, tscBin, "--noEmit", "-p", "tsconfig.json"] : [tscBin, "--noEmit", "-p", "tsconfig.json"];
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  if (hasGnuTime) {
    const t = parseGnuTime(fs.readFileSync(timeFile, "utf8"));
    return { ok: r.status === 0, wallSeconds: t.wallSeconds, maxRssMib: t.maxRssKib / 1024, stderr: r.stdout };
  }
  // Without GNU time the peak of a child is the largest any child of ours reached.
  return { ok: r.status === 0, wallSeconds: elapsed, maxRssMib: NaN, stderr: r.stdout };
}

/** One more plan run under --cpu-prof; self time by package and the top functions. */
async function profile(hosts: number, work: string) {
  const stackFile = writeStackFile(benchFleet(hosts), fs.mkdtempSync(path.join(work, `prof-`)));
  // Outside the work dir: the profile outlives the run, for Chrome DevTools or speedscope.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-profile-"));
  process.stdout.write(`\nProfiling the ${hosts}-host plan (node --cpu-prof) ... `);
  const m = await measure(["--cpu-prof", "--cpu-prof-dir", dir, "scripts/plan.ts", "--config", stackFile, "--json"], "/dev/null", work);
  const file = fs.readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")).map((f) => path.join(dir, f)).sort().at(-1);
  if (!m.ok || !file) {
    process.stdout.write(`failed\n${m.stderr.slice(-2000)}\n`);
    return;
  }
  process.stdout.write(`${fmt(m.wallSeconds)} s (profile: ${file})\n`);
  const s = summariseProfile(JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile, ROOT, 25);
  process.stdout.write(`\nSelf time by where the code lives (${fmt(s.totalMs / 1000)} s sampled)\n`);
  process.stdout.write(`${table([["category", "ms", "share"], ...s.byCategory.map((c) => [c.category, fmt(c.ms, 0), `${fmt(c.share * 100, 1)}%`])])}\n`);
  process.stdout.write("\nTop functions by self time\n");
  process.stdout.write(`${table([["function", "ms", "category", "where"], ...s.topFunctions.map((f) => [f.fn.slice(0, 40), fmt(f.ms, 0), f.category, f.where.slice(0, 80)])])}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  // A broken harness is not a measurement: this one is a real failure.
  process.exit(1);
});
