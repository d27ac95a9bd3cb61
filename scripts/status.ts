/**
 * npm run status -- --stack NAME [--json] [--prometheus URL] [--targets FILE] [--timeout SECONDS]
 *
 * One table for a running stack: per host, whether it answers, the system deployed (the system
 * profile: what the last deploy made the boot default) against the one running, a pending
 * reboot, and per pool current, busy and idle runners. Targets come from the stack's
 * `prometheusTargets` output (`pulumi stack output --json prometheusTargets --stack NAME`), or
 * from a file of them (--targets). Values come from the hosts' exporters directly, or from a
 * Prometheus that scrapes them (--prometheus). A host that cannot be reached is a row that says
 * so; nothing here throws at the user.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { parseArgs } from "node:util";
import type { TargetGroup } from "../components/monitoring";

const USAGE = "usage: npm run status -- --stack NAME [--json] [--prometheus URL] [--targets FILE] [--timeout SECONDS]";

// ---- pure: metrics text, samples, rows ------------------------------------------------------

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format (what the exporters serve): samples only, comments skipped. */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

export interface PoolRow {
  pool: string;
  current: number;
  busy: number;
  idle: number;
}

export interface HostRow {
  host: string;
  provider: string;
  reachable: boolean;
  /** Why not, when not reachable. */
  problem?: string;
  /** The system profile (what the last deploy set) and the running system. */
  deployed?: string;
  running?: string;
  /** Running differs from deployed: a test activation, or a deploy not yet switched to. */
  differs?: boolean;
  rebootPending?: boolean;
  secrets?: boolean;
  pools: PoolRow[];
}

/** The facts of one host, from its samples (any exporter's, with or without target labels). */
export function hostRow(host: string, provider: string, samples: Sample[] | { problem: string }): HostRow {
  if (!Array.isArray(samples)) return { host, provider, reachable: false, problem: samples.problem, pools: [] };
  const one = (name: string) => samples.find((s) => s.name === name);
  const info = one("runner_fleet_nixos_system_info")?.labels;
  const pools = new Map<string, PoolRow>();
  for (const s of samples) {
    const m = /^runner_fleet_scaler_pool_(current|busy|idle)$/.exec(s.name);
    if (!m || s.labels.pool === undefined) continue;
    const row = pools.get(s.labels.pool) ?? { pool: s.labels.pool, current: 0, busy: 0, idle: 0 };
    row[m[1] as "current" | "busy" | "idle"] = s.value;
    pools.set(s.labels.pool, row);
  }
  return {
    host, provider, reachable: true,
    ...(info ? { deployed: info.profile, running: info.current, differs: info.profile !== info.current } : {}),
    ...(one("runner_fleet_nixos_reboot_pending") ? { rebootPending: one("runner_fleet_nixos_reboot_pending")!.value === 1 } : {}),
    ...(one("runner_fleet_secrets_satisfied") ? { secrets: one("runner_fleet_secrets_satisfied")!.value === 1 } : {}),
    pools: [...pools.values()].sort((a, b) => a.pool.localeCompare(b.pool)),
  };
}

/** /nix/store/<hash>-nixos-system-x-25.11 -> <first 8 of hash>…-nixos-system-x-25.11 */
const shortPath = (p?: string) => (p ? p.replace(/^\/nix\/store\/([a-z0-9]{8})[a-z0-9]{24}-/, "$1…-") : "-");
const yesNo = (b?: boolean) => (b === undefined ? "-" : b ? "yes" : "no");

export function renderTable(rows: HostRow[]): string {
  const header = ["HOST", "PROVIDER", "REACHABLE", "SECRETS", "DEPLOYED", "RUNNING", "REBOOT PENDING", "POOLS (current/busy/idle)"];
  const lines = rows.map((r) => r.reachable
    ? [r.host, r.provider, "yes", yesNo(r.secrets), shortPath(r.deployed), r.differs ? shortPath(r.running) : "= deployed", yesNo(r.rebootPending),
      r.pools.map((p) => `${p.pool} ${p.current}/${p.busy}/${p.idle}`).join(", ") || "-"]
    : [r.host, r.provider, `no: ${r.problem}`, "-", "-", "-", "-", "-"]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  return [header, ...lines].map((l) => l.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n") + "\n";
}

// ---- wiring ---------------------------------------------------------------------------------

interface Options { stack: string; json: boolean; prometheus?: string; targets?: string; timeoutMs: number }

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function parseOptions(argv: string[]): Options {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        stack: { type: "string" }, json: { type: "boolean", default: false }, prometheus: { type: "string" },
        targets: { type: "string" }, timeout: { type: "string", default: "3" }, help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (!values.stack && !values.targets) fail(`--stack is required (or --targets FILE)\n${USAGE}`);
  const timeout = Number(values.timeout);
  if (!(timeout > 0 && timeout <= 60)) fail(`--timeout: must be seconds between 0 and 60\n${USAGE}`);
  return { stack: values.stack ?? "", json: values.json ?? false, timeoutMs: timeout * 1000, ...(values.prometheus ? { prometheus: values.prometheus } : {}), ...(values.targets ? { targets: values.targets } : {}) };
}

function readTargets(opts: Options): TargetGroup[] {
  if (opts.targets) {
    try {
      return JSON.parse(fs.readFileSync(opts.targets, "utf8")) as TargetGroup[];
    } catch (err) {
      fail(`${opts.targets}: ${(err as Error).message}`);
    }
  }
  const r = spawnSync("pulumi", ["stack", "output", "--json", "prometheusTargets", "--stack", opts.stack, "--non-interactive"], { encoding: "utf8" }); // in the project directory, as npm run runs it
  if (r.error) fail(`pulumi: ${r.error.message} (is the Pulumi CLI on PATH?)`);
  if (r.status !== 0) fail(`pulumi stack output --stack ${opts.stack}: ${(r.stderr || r.stdout).trim().split("\n").pop()}`);
  try {
    const targets = JSON.parse(r.stdout) as TargetGroup[] | null;
    if (!Array.isArray(targets)) fail(`stack ${opts.stack} has no prometheusTargets output (deployed before monitoring?)`);
    return targets;
  } catch (err) {
    fail(`pulumi stack output: ${(err as Error).message}`);
  }
}

async function fetchText(url: string, timeoutMs: number): Promise<string | { problem: string }> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!r.ok) return { problem: `HTTP ${r.status}` };
    return await r.text();
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    return { problem: e.name === "TimeoutError" ? `no answer in ${timeoutMs / 1000}s` : (e.cause?.code ?? e.message) };
  }
}

/** Hosts' samples straight from their exporters: runner-fleet's, and the scaler's where relayed. */
async function fromExporters(groups: TargetGroup[], timeoutMs: number): Promise<Map<string, Sample[] | { problem: string }>> {
  const byHost = new Map<string, Sample[] | { problem: string }>();
  const wanted = groups.filter((g) => g.labels.exporter === "runner-fleet" || g.labels.exporter === "scaler");
  const texts = await Promise.all(wanted.map((g) => fetchText(`http://${g.targets[0]}${g.labels.__metrics_path__ ?? "/metrics"}`, timeoutMs)));
  wanted.forEach((g, i) => {
    const host = g.labels.host;
    const text = texts[i];
    const prev = byHost.get(host);
    if (g.labels.exporter === "runner-fleet") {
      byHost.set(host, typeof text === "string" ? [...parseMetrics(text), ...(Array.isArray(prev) ? prev : [])] : text);
    } else if (typeof text === "string" && (prev === undefined || Array.isArray(prev))) {
      // The scaler's samples join the host's; a failed relay alone does not make the host unreachable.
      byHost.set(host, [...(prev ?? []), ...parseMetrics(text)]);
    }
  });
  return byHost;
}

/** Hosts' samples from a Prometheus that scrapes the stack (its labels come from the targets). */
async function fromPrometheus(url: string, stack: string, hosts: string[], timeoutMs: number): Promise<Map<string, Sample[] | { problem: string }>> {
  const query = `{stack=${JSON.stringify(stack)},__name__=~"up|runner_fleet_.*"}`;
  const text = await fetchText(`${url.replace(/\/$/, "")}/api/v1/query?query=${encodeURIComponent(query)}`, timeoutMs);
  if (typeof text !== "string") fail(`prometheus ${url}: ${text.problem}`);
  let body: { status: string; error?: string; data?: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
  try {
    body = JSON.parse(text);
  } catch {
    fail(`prometheus ${url}: not a Prometheus API answer`);
  }
  if (body.status !== "success" || !body.data) fail(`prometheus ${url}: ${body.error ?? body.status}`);
  const byHost = new Map<string, Sample[] | { problem: string }>();
  for (const host of hosts) {
    const samples = body.data.result.filter((s) => s.metric.host === host).map((s) => {
      const { __name__: name, ...labels } = s.metric;
      return { name, labels, value: Number(s.value[1]) };
    });
    const up = samples.find((s) => s.name === "up" && s.labels.exporter === "runner-fleet");
    byHost.set(host, !up ? { problem: "not scraped by that Prometheus" } : up.value === 0 ? { problem: "down (up == 0)" } : samples);
  }
  return byHost;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const groups = readTargets(opts);
  const hosts = [...new Map(groups.map((g) => [g.labels.host, g.labels.provider ?? ""])).entries()].sort(([a], [b]) => a.localeCompare(b));
  const stack = opts.stack || groups[0]?.labels.stack || "";
  const samples = opts.prometheus
    ? await fromPrometheus(opts.prometheus, stack, hosts.map(([h]) => h), opts.timeoutMs)
    : await fromExporters(groups, opts.timeoutMs);
  const rows = hosts.map(([host, provider]) => hostRow(host, provider, samples.get(host) ?? { problem: "no runner-fleet exporter target" }));
  process.stdout.write(opts.json ? `${JSON.stringify({ stack, hosts: rows }, null, 2)}\n` : renderTable(rows));
}

if (require.main === module) {
  main().catch((err: Error) => fail(`status: ${err.message}`));
}
