// runner-fleet's exporter (nix/pkgs/runner-fleet-exporter.py), run for real over HTTP against a
// host root of plain files (NixOS' profile and /run links), and scraped by Debian's Prometheus
// together with Debian's node exporter started with the flags the NixOS module passes.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeSystemRoot, startExporter, writeRootFile, type ExporterProc } from "./support/exporter";
import { freePort } from "./support/free-port";
import { startPrometheus } from "./support/prometheus";
import { startNodeExporter } from "./support/node-exporter";

let scratch = "";
beforeAll(() => { scratch = mkdtempSync(join(tmpdir(), "rf-exporter-")); });
afterAll(() => { if (scratch) rmSync(scratch, { recursive: true, force: true }); });

/** The value of one series (name plus exact label text) in metrics text. */
function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * STAND-IN for systemctl (no systemd runs in the test sandbox): `show --property=Id,ActiveState
 * -- UNITS` prints one block per unit, separated by blank lines, as systemctl does; states come
 * from a JSON file the test edits.
 */
function fakeSystemctl(states: Record<string, string>): { path: string; set(s: Record<string, string>): void } {
  const dir = mkdtempSync(join(scratch, "systemctl-"));
  const file = join(dir, "states.json");
  const path = join(dir, "systemctl");
  writeFileSync(path, `#!/usr/bin/env python3
import json, sys
states = json.load(open(${JSON.stringify(file)}))
units = sys.argv[sys.argv.index("--") + 1:]
print("\\n\\n".join(f"Id={u}.service\\nActiveState={states.get(u, 'inactive')}" for u in units))
`);
  chmodSync(path, 0o755);
  const set = (s: Record<string, string>) => writeFileSync(file, JSON.stringify(s));
  set(states);
  return { path, set };
}

async function exporterOn(root: string, config: Parameters<typeof startExporter>[0]["config"], systemctl?: string): Promise<ExporterProc> {
  const port = await freePort();
  return startExporter({ listen: `127.0.0.1:${port}`, root, config, systemctl, configFile: join(root, "exporter.json") });
}

describe("exporter: the NixOS system", () => {
  it("reports current, booted and profile generations and a pending reboot when the kernel changed", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const systems = makeSystemRoot(root, { generations: 3, profile: 3, current: 3, booted: 2 });
    const ex = await exporterOn(root, {});
    try {
      const { status, text } = await ex.get();
      expect(status).toBe(200);
      expect(value(text, "runner_fleet_nixos_current_generation")).toBe(3);
      expect(value(text, "runner_fleet_nixos_boot_generation")).toBe(2);
      expect(value(text, "runner_fleet_nixos_profile_generation")).toBe(3);
      expect(value(text, "runner_fleet_nixos_reboot_pending")).toBe(1);
      expect(value(text, "runner_fleet_nixos_test_active")).toBe(0);
      expect(text).toContain(`runner_fleet_nixos_system_info{current="${systems[3]}",booted="${systems[2]}",profile="${systems[3]}"} 1`);
    } finally {
      await ex.stop();
    }
  });

  it("no reboot pending when only the system changed, not its kernel, initrd or modules", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    makeSystemRoot(root, { generations: 2, profile: 2, current: 2, booted: 1, sameKernel: true });
    const ex = await exporterOn(root, {});
    try {
      const { text } = await ex.get();
      expect(value(text, "runner_fleet_nixos_reboot_pending")).toBe(0);
      expect(value(text, "runner_fleet_nixos_boot_generation")).toBe(1);
    } finally {
      await ex.stop();
    }
  });

  it("a test activation: current is not the profile's, and the last switch time follows /run/current-system", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const systems = makeSystemRoot(root, { generations: 2, profile: 1, current: 1, booted: 1 });
    const ex = await exporterOn(root, {});
    try {
      expect(value((await ex.get()).text, "runner_fleet_nixos_test_active")).toBe(0);
      // What switch-to-configuration test does: /run/current-system moves, the profile stays.
      unlinkSync(join(root, "run", "current-system"));
      symlinkSync(systems[2], join(root, "run", "current-system"));
      const switched = Date.now() / 1000;
      const { text } = await ex.get();
      expect(value(text, "runner_fleet_nixos_test_active")).toBe(1);
      expect(value(text, "runner_fleet_nixos_current_generation")).toBe(2);
      expect(value(text, "runner_fleet_nixos_profile_generation")).toBe(1);
      expect(Math.abs(value(text, "runner_fleet_nixos_last_switch_timestamp_seconds")! - switched)).toBeLessThan(5);
    } finally {
      await ex.stop();
    }
  });

  it("a host without the links (not NixOS yet) scrapes fine with zeros", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const ex = await exporterOn(root, { secrets: ["/run/secrets/x"] });
    try {
      const { status, text } = await ex.get();
      expect(status).toBe(200);
      expect(value(text, "runner_fleet_nixos_current_generation")).toBe(0);
      expect(value(text, "runner_fleet_secrets_satisfied")).toBe(0);
      expect(text).not.toContain("runner_fleet_nixos_last_switch_timestamp_seconds ");
    } finally {
      await ex.stop();
    }
  });
});

describe("exporter: secrets and units", () => {
  it("secrets satisfied only when every file is present and non-empty; freshness per file", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    writeRootFile(root, "run/secrets/github-app.pem", "key");
    writeRootFile(root, "run/secrets/runner-token", "");
    const written = new Date("2026-12-01T10:00:00Z");
    utimesSync(join(root, "run/secrets/github-app.pem"), written, written);
    const ex = await exporterOn(root, { secrets: ["/run/secrets/github-app.pem", "/run/secrets/runner-token"] });
    try {
      let { text } = await ex.get();
      expect(value(text, "runner_fleet_secrets_satisfied")).toBe(0);
      expect(value(text, 'runner_fleet_secret_present{file="/run/secrets/github-app.pem"}')).toBe(1);
      expect(value(text, 'runner_fleet_secret_present{file="/run/secrets/runner-token"}')).toBe(0);
      expect(value(text, 'runner_fleet_secret_modified_timestamp_seconds{file="/run/secrets/github-app.pem"}')).toBe(written.getTime() / 1000);
      writeRootFile(root, "run/secrets/runner-token", "t");
      ({ text } = await ex.get());
      expect(value(text, "runner_fleet_secrets_satisfied")).toBe(1);
    } finally {
      await ex.stop();
    }
  });

  it("never serves a secret's content: only presence and time (the files are stat'ed, not read)", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const planted = "PLANTED-SECRET-3c9a71";
    writeRootFile(root, "run/secrets/token", planted);
    chmodSync(join(root, "run/secrets/token"), 0o000);
    const ex = await exporterOn(root, { secrets: ["/run/secrets/token"] });
    try {
      const { text } = await ex.get();
      expect(value(text, 'runner_fleet_secret_present{file="/run/secrets/token"}')).toBe(1);
      expect(text).not.toContain(planted);
      expect(ex.log()).not.toContain(planted);
    } finally {
      await ex.stop();
    }
  });

  it("unit states from systemctl show; unknown (not a failed scrape) when systemctl cannot answer", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const sc = fakeSystemctl({ "vault-agent-runner-fleet": "active", "gitea-runner-forgejo": "failed" });
    const units = ["vault-agent-runner-fleet", "gitea-runner-forgejo"];
    const ex = await exporterOn(root, { units }, sc.path);
    try {
      let { text } = await ex.get();
      expect(value(text, 'runner_fleet_unit_active{unit="vault-agent-runner-fleet"}')).toBe(1);
      expect(value(text, 'runner_fleet_unit_active{unit="gitea-runner-forgejo"}')).toBe(0);
      expect(value(text, 'runner_fleet_unit_state{unit="gitea-runner-forgejo",state="failed"}')).toBe(1);
      sc.set({ "vault-agent-runner-fleet": "inactive" });
      ({ text } = await ex.get());
      expect(value(text, 'runner_fleet_unit_active{unit="vault-agent-runner-fleet"}')).toBe(0);
    } finally {
      await ex.stop();
    }
    const broken = await exporterOn(root, { units }, join(root, "no-such-systemctl"));
    try {
      const { status, text } = await broken.get();
      expect(status).toBe(200);
      expect(value(text, 'runner_fleet_unit_state{unit="vault-agent-runner-fleet",state="unknown"}')).toBe(1);
    } finally {
      await broken.stop();
    }
  });

  it("its text passes promtool check metrics", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    makeSystemRoot(root, { generations: 2, profile: 2, current: 2, booted: 1 });
    writeRootFile(root, "run/secrets/a", "x");
    const sc = fakeSystemctl({ a: "active" });
    const ex = await exporterOn(root, { secrets: ["/run/secrets/a"], units: ["a"], relays: { scaler: "http://127.0.0.1:9/metrics" } }, sc.path);
    try {
      const { text } = await ex.get();
      const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
      expect(r.error, "promtool missing: scripts/ensure-tools.mjs installs Debian's prometheus").toBeUndefined();
      expect(r.status, r.stdout + r.stderr).toBe(0);
    } finally {
      await ex.stop();
    }
  });
});

describe("exporter: relays", () => {
  let upstream: Server;
  let upstreamUrl = "";
  beforeAll(async () => {
    upstream = createServer((_, res) => res.end('fireactions_pool_current_runners_count{pool="default"} 2\n'));
    await new Promise<void>((ok) => upstream.listen(0, "127.0.0.1", ok));
    upstreamUrl = `http://127.0.0.1:${(upstream.address() as { port: number }).port}/metrics`;
  });
  afterAll(() => upstream?.close());

  it("relays a loopback endpoint at /metrics/<name>; 502 and one log line while it is down; 404 for others", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const deadPort = await freePort();
    const ex = await exporterOn(root, { relays: { fireactions: upstreamUrl, scaler: `http://127.0.0.1:${deadPort}/metrics` } });
    try {
      const fa = await ex.get("/metrics/fireactions");
      expect(fa).toEqual({ status: 200, text: 'fireactions_pool_current_runners_count{pool="default"} 2\n' });
      expect((await ex.get("/metrics/scaler")).status).toBe(502);
      expect((await ex.get("/metrics/scaler")).status).toBe(502);
      expect((await ex.get("/metrics/other")).status).toBe(404);
      const { text } = await ex.get();
      expect(value(text, 'runner_fleet_relay_up{source="fireactions"}')).toBe(1);
      expect(value(text, 'runner_fleet_relay_up{source="scaler"}')).toBe(0);
      expect(ex.log().split("\n").filter((l) => l.includes("relay scaler"))).toHaveLength(1);
    } finally {
      await ex.stop();
    }
  });
});

describe("exporter: bind", () => {
  it("an address that is not up yet: one log line per retry, no exit", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    writeFileSync(join(root, "c.json"), "{}");
    // 192.0.2.1 (TEST-NET-1) is on no interface here: bind fails with EADDRNOTAVAIL.
    const p: ChildProcess = spawn("python3", [join(__dirname, "..", "nix", "pkgs", "runner-fleet-exporter.py"), "--listen", "192.0.2.1:9101", "--config", join(root, "c.json"), "--root", root]);
    let err = "";
    p.stderr!.on("data", (d) => (err += d));
    await new Promise((r) => setTimeout(r, 1500));
    expect(p.exitCode).toBeNull();
    p.kill();
    expect(err.trim().split("\n")[0]).toMatch(/^runner-fleet-exporter: listen 192\.0\.2\.1:9101: .*; retrying in 1s$/);
  });
});

describe("Prometheus scrapes the exporter and node exporter", () => {
  it("every target is up and the series are queryable; a stopped exporter turns up to 0", async () => {
    const root = mkdtempSync(join(scratch, "root-"));
    makeSystemRoot(root, { generations: 2, profile: 2, current: 2, booted: 1 });
    const ex = await exporterOn(root, {});
    const nodePort = await freePort();
    const node = startNodeExporter("127.0.0.1", nodePort);
    const targets = [
      { targets: [ex.url.replace("http://", "")], labels: { host: "h1", exporter: "runner-fleet" } },
      { targets: [`127.0.0.1:${nodePort}`], labels: { host: "h1", exporter: "node" } },
    ];
    const prom = await startPrometheus(targets);
    try {
      await prom.until("up", (r) => r.length === 2 && r.every((s) => s.value === 1));
      const gen = await prom.until("runner_fleet_nixos_current_generation", (r) => r.length === 1);
      expect(gen[0]).toMatchObject({ metric: { host: "h1", exporter: "runner-fleet" }, value: 2 });
      const fs = await prom.until('node_filesystem_avail_bytes{host="h1"}', (r) => r.length > 0);
      expect(fs[0].metric.exporter).toBe("node");
      await ex.stop();
      await prom.until('up{exporter="runner-fleet"}', (r) => r.length === 1 && r[0].value === 0);
    } finally {
      node.kill();
      await prom.stop();
      await ex.stop();
    }
  }, 60_000);
});

describe("exporter: Vault from the host", () => {
  it("reachable on any HTTP answer (a sealed Vault's 503 included), with its status; 0 when nothing answers", async () => {
    let status = 200;
    const paths: string[] = [];
    const vault = createServer((req, res) => { paths.push(req.url!); res.statusCode = status; res.end("{}"); });
    await new Promise<void>((ok) => vault.listen(0, "127.0.0.1", ok));
    const root = mkdtempSync(join(scratch, "root-"));
    const ex = await exporterOn(root, { vault: { address: `http://127.0.0.1:${(vault.address() as { port: number }).port}/` } });
    const dead = await exporterOn(mkdtempSync(join(scratch, "root-")), { vault: { address: `http://127.0.0.1:${await freePort()}` } });
    try {
      let { text } = await ex.get();
      expect(value(text, "runner_fleet_vault_reachable")).toBe(1);
      expect(value(text, "runner_fleet_vault_health_status_code")).toBe(200);
      expect(paths[0]).toBe("/v1/sys/health?standbyok=true&perfstandbyok=true");
      status = 503;
      ({ text } = await ex.get());
      expect(value(text, "runner_fleet_vault_reachable")).toBe(1);
      expect(value(text, "runner_fleet_vault_health_status_code")).toBe(503);
      ({ text } = await dead.get());
      expect(value(text, "runner_fleet_vault_reachable")).toBe(0);
      expect(value(text, "runner_fleet_vault_health_status_code")).toBe(0);
    } finally {
      await ex.stop();
      await dead.stop();
      vault.close();
    }
  });
});
