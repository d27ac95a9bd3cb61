/**
 * Monitoring on test hosts (issue 21), with its own stack (Pulumi.mon.yaml): the real engine
 * deploys two existing fireactions machines; the deploy's activation starts node exporter
 * (Debian's, with the flags nixpkgs' module passes) and runner-fleet-exporter on each
 * (host/systemctl runs them under host/unit-supervise). e2e-mon-1 runs the fireactions v0.4.0
 * STAND-IN, whose metrics our exporter relays. A real Prometheus (Debian's 2.42), with the alert
 * rules of monitoring/alerts.yml, scrapes the targets file taken from `pulumi stack output --json
 * prometheusTargets`; PromQL through its HTTP API must return every host's series; a stopped
 * host turns `up` to 0 and makes the host-down rule pending (its firing after 5 minutes is
 * promtool's test, test/monitoring-rules.test.ts); `npm run status` prints the right rows,
 * that host down included.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshHosts, freshStack, RF, hostFile, ok, onHost, pulumi, sh } from "./support";
import { startPrometheus, type PrometheusProc } from "../support/prometheus";

const STACK = "mon";
const HOSTS = { "e2e-mon-1": "10.231.0.31", "e2e-mon-2": "10.231.0.32" } as const;
const GH_PORT = 18331;
const GH = `http://${HOSTS["e2e-mon-1"]}:${GH_PORT}`;
const REPO = path.resolve(__dirname, "../..");
const STANDINS = path.join(REPO, "test", "stand-ins");
let deployed = false;
let prom: PrometheusProc | undefined;
type Ctx = { skip: (note?: string) => void };
const needsUp = (ctx: Ctx) => { if (!deployed) ctx.skip("pulumi up did not pass"); };
const needsProm = (ctx: Ctx) => { if (!prom) ctx.skip("prometheus did not start"); };

const status = (args: string[]) => sh(path.join(REPO, "node_modules", ".bin", "tsx"), [path.join(REPO, "scripts", "status.ts"), "--stack", STACK, ...args]);

beforeAll(() => {
  freshHosts(HOSTS);
  freshStack(STACK);
  const key = path.join(RF, "mon-app-key.pem");
  ok(sh("openssl", ["genrsa", "-out", key, "2048"], { cwd: REPO }));
  ok(sh("openssl", ["rsa", "-in", key, "-pubout", "-out", path.join(RF, "mon-app-pub.pem")], { cwd: REPO }));
  ok(pulumi(["config", "set", "--secret", "runner-fleet:githubAppPrivateKey", "--stack", STACK], { input: fs.readFileSync(key, "utf8").trim() }));
  // fireactions (its stand-in, with the GitHub stand-in) on e2e-mon-1 only.
  ok(onHost("e2e-mon-1", [
    `setsid -f python3 ${STANDINS}/github/github_standin.py --listen ${HOSTS["e2e-mon-1"]}:${GH_PORT} --app-id 4242 --app-public-key ${RF}/mon-app-pub.pem --lost-after 5 </dev/null >>/var/log/github-standin.log 2>&1`,
    `printf 'standin=%s\ngithub_api=%s\n' ${STANDINS}/fireactions/fireactions_standin.py ${GH} > /etc/runner-fleet/e2e-fireactions`,
  ].join("\n")));
}, 300_000);

afterAll(async () => {
  await prom?.stop();
  if (process.env.RF_E2E_KEEP !== "1") {
    if (deployed) pulumi(["destroy", "--yes", "--stack", STACK]);
    sh("bash", [path.join(__dirname, "openbao.sh"), "stop"]);
    sh("bash", [path.join(__dirname, "hosts.sh"), "down"]);
    for (const entry of ["bao", "project", "state", "pulumi-home", "stand-ins.log", "sudoers", "id_ed25519.pub", "mon-app-key.pem", "mon-app-pub.pem"]) {
      fs.rmSync(path.join(RF, entry), { recursive: true, force: true });
    }
    try { fs.rmdirSync(RF); } catch { /* not empty: not ours alone */ }
  }
}, 300_000);

describe("monitoring on test hosts", () => {
  it("pulumi up deploys both hosts; the activation starts node exporter and runner-fleet-exporter on each", async () => {
    ok(pulumi(["up", "--yes", "--stack", STACK]));
    deployed = true;
    for (const [host, addr] of Object.entries(HOSTS)) {
      const unit = JSON.parse(hostFile(host, "/etc/runner-fleet-e2e/units/runner-fleet-exporter.json") ?? "null");
      expect(unit.ExecStart).toContain(`'--listen' '${addr}:9101'`);
      expect(JSON.parse(hostFile(host, "/etc/runner-fleet-e2e/units/prometheus-node-exporter.json") ?? "null").ExecStart)
        .toBe(`/usr/bin/prometheus-node-exporter --web.listen-address ${addr}:9100`);
      expect(JSON.parse(hostFile(host, "/etc/runner-fleet/exporter.json") ?? "null").relays).toHaveProperty("fireactions");
    }
  });

  it("prometheusTargets from `pulumi stack output` name every host and exporter, with the stack's labels", (ctx) => {
    needsUp(ctx);
    const targets = JSON.parse(ok(pulumi(["stack", "output", "--json", "prometheusTargets", "--stack", STACK])).stdout) as Array<{ targets: string[]; labels: Record<string, string> }>;
    expect(targets.map((t) => `${t.labels.host} ${t.labels.exporter} ${t.targets[0]}${t.labels.__metrics_path__ ?? ""}`).sort()).toEqual([
      "e2e-mon-1 fireactions 10.231.0.31:9101/metrics/fireactions", "e2e-mon-1 node 10.231.0.31:9100", "e2e-mon-1 runner-fleet 10.231.0.31:9101", "e2e-mon-1 scaler 10.231.0.31:9101/metrics/scaler",
      "e2e-mon-2 fireactions 10.231.0.32:9101/metrics/fireactions", "e2e-mon-2 node 10.231.0.32:9100", "e2e-mon-2 runner-fleet 10.231.0.32:9101", "e2e-mon-2 scaler 10.231.0.32:9101/metrics/scaler",
    ]);
    expect(targets[0].labels).toMatchObject({ stack: STACK, provider: "existing", region: "", roles: "fireactions", pools: "burst" });
    fs.writeFileSync(path.join(RF, "targets.json"), JSON.stringify(targets));
  });

  it("Prometheus scrapes every host: up, the NixOS system the deploy set, node exporter's disks, fireactions' pool through the relay", async (ctx) => {
    needsUp(ctx);
    const targets = JSON.parse(fs.readFileSync(path.join(RF, "targets.json"), "utf8"));
    prom = await startPrometheus(targets, { interval: "1s", ruleFiles: [path.join(REPO, "monitoring", "alerts.yml")] });
    await prom.until('up{exporter=~"node|runner-fleet"}', (r) => r.length === 4 && r.every((s) => s.value === 1), 60_000);
    for (const [host] of Object.entries(HOSTS)) {
      const toplevel = ok(onHost(host, "readlink -f /run/current-system")).stdout.trim();
      expect(toplevel).toMatch(/^\/nix\/store\/[0-9a-f]{32}-nixos-system-/);
      const info = await prom.until(`runner_fleet_nixos_system_info{host="${host}"}`, (r) => r.length === 1);
      expect(info[0].metric.current).toBe(toplevel);
      expect(info[0].metric.profile).toBe(toplevel);
      expect((await prom.query(`runner_fleet_nixos_test_active{host="${host}"}`))[0].value).toBe(0);
      expect((await prom.query(`node_filesystem_size_bytes{host="${host}"}`)).length).toBeGreaterThan(0);
    }
    const pool = await prom.until('fireactions_pool_max_runners_count{host="e2e-mon-1",pool="burst"}', (r) => r.length === 1, 60_000);
    expect(pool[0].value).toBe(3);
    // e2e-mon-2 runs no fireactions: its relay answers 502, and Prometheus says so.
    await prom.until('up{host="e2e-mon-2",exporter="fireactions"}', (r) => r.length === 1 && r[0].value === 0);
  }, 180_000);

  it("npm run status: one row per host from the stack's outputs (Pulumi CLI) and the exporters", (ctx) => {
    needsUp(ctx);
    const r = ok(status(["--json"]));
    const doc = JSON.parse(r.stdout);
    expect(doc.hosts.map((h: { host: string; reachable: boolean }) => [h.host, h.reachable])).toEqual([["e2e-mon-1", true], ["e2e-mon-2", true]]);
    for (const h of doc.hosts) {
      expect(h.deployed).toBe(ok(onHost(h.host, "readlink -f /nix/var/nix/profiles/system")).stdout.trim());
      expect(h.differs).toBe(false);
    }
    const table = ok(status([])).stdout;
    expect(table).toMatch(/^e2e-mon-1\s+existing\s+yes\s/m);
    process.stdout.write(`monitoring e2e: npm run status\n${table}`);
  });

  it("a stopped host: up turns 0, the host-down rule goes pending, npm run status shows the row as down", async (ctx) => {
    needsUp(ctx);
    needsProm(ctx);
    ok(onHost("e2e-mon-2", "systemctl stop runner-fleet-exporter.service; systemctl stop prometheus-node-exporter.service"));
    await prom!.until('up{host="e2e-mon-2",exporter=~"node|runner-fleet"}', (r) => r.length === 2 && r.every((s) => s.value === 0), 30_000);
    const pending = await prom!.until('ALERTS{alertname="RunnerFleetHostDown"}', (r) => r.length === 1, 30_000);
    expect(pending[0].metric).toMatchObject({ host: "e2e-mon-2", stack: STACK, alertstate: "pending" });
    const doc = JSON.parse(ok(status(["--json"])).stdout);
    expect(doc.hosts[1]).toMatchObject({ host: "e2e-mon-2", reachable: false, problem: "ECONNREFUSED" });
    const viaProm = JSON.parse(ok(status(["--json", "--prometheus", prom!.url])).stdout);
    expect(viaProm.hosts.map((h: { host: string; reachable: boolean }) => [h.host, h.reachable])).toEqual([["e2e-mon-1", true], ["e2e-mon-2", false]]);
    process.stdout.write(`monitoring e2e: npm run status, e2e-mon-2 stopped\n${ok(status([])).stdout}`);
  }, 120_000);

  it("a restarted exporter is scraped again (up back to 1)", async (ctx) => {
    needsUp(ctx);
    needsProm(ctx);
    ok(onHost("e2e-mon-2", "systemctl restart runner-fleet-exporter.service"));
    await prom!.until('up{host="e2e-mon-2",exporter="runner-fleet"}', (r) => r.length === 1 && r[0].value === 1, 30_000);
  }, 60_000);
});
