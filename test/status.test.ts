// `npm run status` (scripts/status.ts): its pure pieces, then the script itself against real
// exporters (one host up, relaying the scaler's real metrics text, one host down), straight and
// through a real Prometheus. The Pulumi CLI path runs in test/e2e/monitoring.e2e.ts.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { MONITORING, type TargetGroup } from "../components/monitoring";
import { hostRow, parseMetrics, renderTable } from "../scripts/status";
import { makeSystemRoot, startExporter, type ExporterProc } from "./support/exporter";
import { ROOT } from "./support/fixtures";
import { freePort } from "./support/free-port";
import { startPrometheus, type PrometheusProc } from "./support/prometheus";
import { SCALER } from "./support/scaler";

/** The scaler's own render_metrics for these pools (nix/pkgs/runner-fleet-scaler.py). */
function scalerText(pools: Record<string, Record<string, number>>): string {
  const r = spawnSync("python3", ["-c", `
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("scaler", sys.argv[1]); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
sys.stdout.write(m.render_metrics(json.loads(sys.argv[2]), True))`, SCALER, JSON.stringify(pools)], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}

const run = async (args: string[]) => {
  try {
    const { stdout, stderr } = await promisify(execFile)(join(ROOT, "node_modules", ".bin", "tsx"), ["scripts/status.ts", ...args], { cwd: ROOT });
    return { code: 0, stdout, stderr };
  } catch (err: any) {
    return { code: err.code as number, stdout: err.stdout as string, stderr: err.stderr as string };
  }
};

let dir = "";
let ex: ExporterProc;
let scaler: Server;
let systems: Record<number, string>;
let targetsFile = "";
let targets: TargetGroup[];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "rf-status-"));
  const text = scalerText({ default: { current: 3, busy: 2, idle: 1, desired: 3, min_runners: 1, max_runners: 5, paused: 0 }, small: { current: 1, busy: 0, idle: 1 } });
  scaler = createServer((_, res) => res.end(text));
  await new Promise<void>((ok) => scaler.listen(0, "127.0.0.1", ok));
  const root = join(dir, "h1");
  // A test activation of generation 3 on a host booted into 1, profile at 2 (new kernel).
  systems = makeSystemRoot(root, { generations: 3, profile: 2, current: 3, booted: 1 });
  ex = await startExporter({
    listen: `127.0.0.1:${await freePort()}`, root, configFile: join(dir, "h1.json"),
    config: { relays: { scaler: `http://127.0.0.1:${(scaler.address() as { port: number }).port}/metrics` } },
  });
  const up = ex.url.replace("http://", "");
  const down = `127.0.0.1:${await freePort()}`;
  const labels = (host: string) => ({ stack: "st", host, provider: "existing", region: "", roles: "fireactions", pools: "default,small" });
  targets = [
    { targets: [up], labels: { ...labels("h1"), exporter: "runner-fleet" } },
    { targets: [up], labels: { ...labels("h1"), exporter: "scaler", __metrics_path__: MONITORING.relays.scaler.path } },
    { targets: [down], labels: { ...labels("h2"), exporter: "runner-fleet" } },
  ];
  targetsFile = join(dir, "targets.json");
  writeFileSync(targetsFile, JSON.stringify(targets));
}, 30_000);

afterAll(async () => {
  await ex?.stop();
  scaler?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("status: pure pieces", () => {
  it("parses the exporter's text, labels with escapes included", async () => {
    const samples = parseMetrics((await ex.get()).text);
    expect(samples.find((s) => s.name === "runner_fleet_nixos_current_generation")!.value).toBe(3);
    expect(parseMetrics('x{a="q\\"u\\\\o",b="n"} 2\n# c\n')).toEqual([{ name: "x", labels: { a: 'q"u\\o', b: "n" }, value: 2 }]);
  });

  it("a row per host: deployed vs running, reboot, pools; an unreachable host says why", () => {
    const row = hostRow("h", "aws", parseMetrics(`runner_fleet_nixos_system_info{current="/a",booted="/b",profile="/c"} 1\nrunner_fleet_nixos_reboot_pending 1\nrunner_fleet_scaler_pool_idle{pool="p"} 2\n`));
    expect(row).toEqual({ host: "h", provider: "aws", reachable: true, deployed: "/c", running: "/a", differs: true, rebootPending: true, pools: [{ pool: "p", current: 0, busy: 0, idle: 2 }] });
    const table = renderTable([row, hostRow("g", "existing", { problem: "ECONNREFUSED" })]);
    expect(table.split("\n")[0]).toMatch(/^HOST\s+PROVIDER\s+REACHABLE/);
    expect(table).toMatch(/^g\s+existing\s+no: ECONNREFUSED/m);
  });
});

describe("npm run status against real exporters", () => {
  it("--targets, --json: h1 with its systems and pools, h2 unreachable (a row, not a stack trace)", async () => {
    const r = await run(["--targets", targetsFile, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.stack).toBe("st");
    expect(doc.hosts).toEqual([
      {
        host: "h1", provider: "existing", reachable: true, deployed: systems[2], running: systems[3], differs: true, rebootPending: true, secrets: true,
        pools: [{ pool: "default", current: 3, busy: 2, idle: 1 }, { pool: "small", current: 1, busy: 0, idle: 1 }],
      },
      { host: "h2", provider: "existing", reachable: false, problem: "ECONNREFUSED", pools: [] },
    ]);
  });

  it("the table says the same", async () => {
    const r = await run(["--targets", targetsFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^h1\s+existing\s+yes\s+yes\s+\S+-nixos-system-host-2\s+\S+-nixos-system-host-3\s+yes\s+default 3\/2\/1, small 1\/0\/1$/m);
    expect(r.stdout).toMatch(/^h2\s+existing\s+no: ECONNREFUSED/m);
    expect(r.stderr).toBe("");
  });

  it("--prometheus: the same rows from a Prometheus that scrapes them (h2 down there too)", async () => {
    const prom: PrometheusProc = await startPrometheus(targets);
    try {
      await prom.until("up", (res) => res.length === 3 && res.filter((s) => s.value === 1).length === 2);
      await prom.until("runner_fleet_scaler_pool_current", (res) => res.length === 2);
      const r = await run(["--targets", targetsFile, "--prometheus", prom.url, "--json"]);
      expect(r.code, r.stderr).toBe(0);
      const doc = JSON.parse(r.stdout);
      expect(doc.hosts[0]).toMatchObject({ host: "h1", reachable: true, deployed: systems[2], running: systems[3], rebootPending: true, pools: [{ pool: "default", current: 3, busy: 2, idle: 1 }, { pool: "small", current: 1, busy: 0, idle: 1 }] });
      expect(doc.hosts[1]).toEqual({ host: "h2", provider: "existing", reachable: false, problem: "down (up == 0)", pools: [] });
    } finally {
      await prom.stop();
    }
  }, 60_000);

  it("bad arguments and an unreachable Prometheus: one line, exit 1", async () => {
    const none = await run([]);
    expect(none.code).toBe(1);
    expect(none.stderr.split("\n")[0]).toBe("--stack is required (or --targets FILE)");
    const dead = await run(["--targets", targetsFile, "--prometheus", `http://127.0.0.1:${await freePort()}`]);
    expect(dead.code).toBe(1);
    expect(dead.stderr.trim()).toMatch(/^prometheus http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED$/);
  }, 30_000);
});
