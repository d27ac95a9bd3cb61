// monitoring/alerts.yml and monitoring/dashboard.json: promtool check rules and promtool test
// rules (Debian's prometheus 2.42); the dashboard's structure; and, with a real Prometheus
// scraping real exporters (ours relaying the fireactions stand-in and the real scaler, Debian's
// node exporter), that every metric an alert or a panel names is one the exporters serve and
// every panel query runs.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawnSync, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { MONITORING } from "../components/monitoring";
import { apiPasswordFile, appKeyPair, freePort, poolEntry, renderConfig, startFireactions, startGitHub, type FireactionsStandIn, type GitHubStandIn } from "./stand-ins/support";
import { makeSystemRoot, startExporter, writeRootFile, type ExporterProc } from "./support/exporter";
import { ROOT } from "./support/fixtures";
import { startNodeExporter } from "./support/node-exporter";
import { startPrometheus, type PrometheusProc } from "./support/prometheus";
import { startScaler, type ScalerProc } from "./support/scaler";

const ALERTS = join(ROOT, "monitoring", "alerts.yml");
const ALERT_TESTS = join(ROOT, "monitoring", "alerts.test.yml");
const DASHBOARD = join(ROOT, "monitoring", "dashboard.json");

const promtool = (args: string[], cwd?: string) => spawnSync("promtool", args, { encoding: "utf8", cwd });

interface Panel { id: number; type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; targets: Array<{ refId: string; expr: string }> }
const dashboard = () => JSON.parse(readFileSync(DASHBOARD, "utf8")) as { uid: string; title: string; schemaVersion: number; panels: Panel[]; templating: { list: Array<{ name: string; query: string }> } };
const rules = () => (parse(readFileSync(ALERTS, "utf8")) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> }).groups.flatMap((g) => g.rules);

/** Metric names in a PromQL expression: identifiers outside matchers, ranges and by/without lists that are not functions or keywords. */
function metricNames(expr: string): string[] {
  const bare = expr.replace(/"[^"]*"/g, "").replace(/\{[^}]*\}/g, " ").replace(/\[[^\]]*\]/g, " ").replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, " ");
  const keywords = new Set(["and", "or", "unless", "bool", "offset", "group_left", "group_right"]);
  const names = [...bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .filter((m) => !/^\s*\(/.test(bare.slice(m.index! + m[0].length))) // a function call
    .map((m) => m[0]).filter((w) => !keywords.has(w));
  return [...new Set(names)];
}

describe("monitoring/alerts.yml", () => {
  it("passes promtool check rules and has the six alerts the issue names", () => {
    const r = promtool(["check", "rules", ALERTS]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("SUCCESS: 6 rules found");
    expect(rules().map((x) => x.alert)).toEqual([
      "RunnerFleetHostDown", "RunnerFleetSecretsNotRendered", "RunnerFleetPoolNoIdleRunner",
      "RunnerFleetRebootPending", "RunnerFleetDiskNearlyFull", "RunnerFleetVaultUnreachable",
    ]);
  });

  it("passes promtool test rules (each fires on its case, stays quiet on the healthy one)", () => {
    const r = promtool(["test", "rules", ALERT_TESTS]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it("the unit tests can fail: a host-down rule that waits too long misses its case", () => {
    const dir = mkdtempSync(join(tmpdir(), "rf-alerts-"));
    writeFileSync(join(dir, "alerts.yml"), readFileSync(ALERTS, "utf8").replace("for: 5m\n", "for: 50m\n"));
    copyFileSync(ALERT_TESTS, join(dir, "alerts.test.yml"));
    const r = promtool(["test", "rules", "alerts.test.yml"], dir);
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/RunnerFleetHostDown/);
  });
});

describe("monitoring/dashboard.json", () => {
  it("is a Grafana dashboard: uid, panels with unique ids, grid positions inside 24 columns, no overlap, a query each", () => {
    const d = dashboard();
    expect(d.uid).toBe("runner-fleet");
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    const ids = d.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of d.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      expect(new Set(p.targets.map((t) => t.refId)).size).toBe(p.targets.length);
    }
    expect(d.templating.list.map((v) => v.name)).toEqual(["datasource", "stack", "host"]);
  });

  it("the metric-name reader finds names, not functions or labels", () => {
    expect(metricNames('1 - avg by (host) (rate(node_cpu_seconds_total{mode="idle"}[5m]))')).toEqual(["node_cpu_seconds_total"]);
    expect(metricNames("max by (stack, host) (up{exporter=~\"node|x\"}) == 0")).toEqual(["up"]);
    expect(metricNames("time() - runner_fleet_nixos_last_switch_timestamp_seconds > 3 * 86400")).toEqual(["runner_fleet_nixos_last_switch_timestamp_seconds"]);
  });
});

describe("every metric the alerts and the dashboard use is served, and every panel query runs", () => {
  let dir = "";
  let gh: GitHubStandIn;
  let fa: FireactionsStandIn;
  let scaler: ScalerProc;
  let exporter: ExporterProc;
  let node: ChildProcess;
  let prom: PrometheusProc;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "rf-monitoring-live-"));
    const keys = appKeyPair(dir);
    gh = await startGitHub({ dir, appId: 7, publicKeyFile: keys.pub });
    const api = `127.0.0.1:${await freePort()}`;
    const faMetrics = `127.0.0.1:${await freePort()}`;
    const config = renderConfig({ dir, pools: [poolEntry("default", { min: 1, max: 2 })], appId: 7, keyFile: keys.key, bind: api, metrics: faMetrics });
    fa = await startFireactions({ config, root: join(dir, "root"), githubApi: gh.url, api, metrics: faMetrics });
    const scalerMetrics = `127.0.0.1:${await freePort()}`;
    scaler = await startScaler({ pools: join(dir, "pools.json"), poolsDir: join(dir, "root/var/lib/fireactions/pools"), api: `http://${api}`, metricsAddress: scalerMetrics,
      passwordFile: apiPasswordFile(dir) });
    const hostRoot = join(dir, "host");
    makeSystemRoot(hostRoot, { generations: 2, profile: 2, current: 2, booted: 1 });
    writeRootFile(hostRoot, "run/secrets/github-app-id", "7");
    const vault = `http://127.0.0.1:${await freePort()}`;
    exporter = await startExporter({
      listen: `127.0.0.1:${await freePort()}`, root: hostRoot, configFile: join(dir, "exporter.json"),
      config: { secrets: ["/run/secrets/github-app-id"], units: ["vault-agent-runner-fleet"], relays: { fireactions: `http://${faMetrics}/metrics`, scaler: `http://${scalerMetrics}/metrics` }, vault: { address: vault } },
    });
    const nodePort = await freePort();
    node = startNodeExporter("127.0.0.1", nodePort);
    const labels = { stack: "t", host: "h1", provider: "existing", region: "", roles: "fireactions", pools: "default" };
    const ours = exporter.url.replace("http://", "");
    prom = await startPrometheus([
      { targets: [`127.0.0.1:${nodePort}`], labels: { ...labels, exporter: "node" } },
      { targets: [ours], labels: { ...labels, exporter: "runner-fleet" } },
      ...Object.entries(MONITORING.relays).map(([name, r]) => ({ targets: [ours], labels: { ...labels, exporter: name, __metrics_path__: r.path } })),
    ]);
    await prom.until("up", (r) => r.length === 4 && r.every((s) => s.value === 1), 30_000);
    // A job makes the one idle runner busy: the scaler asks fireactions for another VM, and
    // fireactions' scale-request counter (a CounterVec: no series before its first request) appears.
    await gh.queueJob({ org: "acme", labels: ["self-hosted", "default"], name: "job", duration: 2 });
    await prom.until("fireactions_pool_scale_requests", (r) => r.length === 1 && r[0].value >= 1, 45_000);
    await prom.until("rate(fireactions_pool_scale_requests[5m])", (r) => r.length === 1, 30_000);
    // A second scrape of everything, so rate() has two points.
    await prom.until("count(count_over_time(up[1m]) >= 2)", (r) => r.length === 1 && r[0].value === 4, 30_000);
  }, 150_000);

  afterAll(async () => {
    node?.kill();
    await prom?.stop();
    await exporter?.stop();
    await scaler?.stop();
    await fa?.stop();
    await gh?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("the relayed fireactions and scaler series carry the host's labels", async () => {
    const fa = await prom.query('fireactions_pool_max_runners_count{pool="default"}');
    expect(fa).toEqual([{ metric: expect.objectContaining({ host: "h1", exporter: "fireactions", pool: "default" }), value: 2 }]);
    const sc = await prom.query('runner_fleet_scaler_pool_min_runners{pool="default"}');
    expect(sc).toEqual([{ metric: expect.objectContaining({ host: "h1", exporter: "scaler" }), value: 1 }]);
  });

  it("alerts: every metric exists", async () => {
    const served = new Set(((await (await fetch(`${prom.url}/api/v1/label/__name__/values`)).json()) as { data: string[] }).data);
    const used = rules().flatMap((r) => metricNames(r.expr));
    expect(used.length).toBeGreaterThanOrEqual(10);
    expect(used.filter((m) => !served.has(m))).toEqual([]);
  });

  it("dashboard: every metric exists and every query (variables at All) returns series", async () => {
    const served = new Set(((await (await fetch(`${prom.url}/api/v1/label/__name__/values`)).json()) as { data: string[] }).data);
    const targets = dashboard().panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr.replaceAll("$stack", ".*").replaceAll("$host", ".*") })));
    expect(targets.flatMap((t) => metricNames(t.expr)).filter((m) => !served.has(m))).toEqual([]);
    const empty: string[] = [];
    for (const t of targets) if ((await prom.query(t.expr)).length === 0) empty.push(`${t.panel}: ${t.expr}`);
    expect(empty).toEqual([]);
  });
});
