// runner-fleet-scaler and runner-fleet-drain must not fight (#19): a scale call the scaler has in
// flight as a drain starts would add a VM after the pause, one that registers and takes a job
// while the step (a restart, a reboot) is about to stop it. The shared lock file settles it: the
// drain takes it exclusively before its pause and keeps it until it exits, the scaler scales only
// under a shared hold it never waits for. Both programs run for real; fireactions here is a
// small fake of the v0.4.0 routes both use (GET pools, pool, microvms; POST scale, pause,
// resume) whose scale call takes SCALE_MS, as a VM boot does, and records when each call ran.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn } from "node:child_process";
import * as http from "node:http";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { AddressInfo } from "node:net";
import { appKeyPair, freePort, startGitHub, waitFor, type GitHubStandIn } from "./stand-ins/support";
import { startScaler, type ScalerProc } from "./support/scaler";

const DRAIN = resolve(__dirname, "..", "nix", "pkgs", "runner-fleet-drain.py");
const SCALE_MS = 1500;
let dir = "";
let gh: GitHubStandIn;
let keys: { key: string; pub: string };
let scaler: ScalerProc | undefined;
let server: http.Server;

/** What the fake fireactions saw: scale calls (start, end) and pause/resume times, epoch seconds. */
const seen = { scales: [] as { start: number; end?: number }[], pauses: [] as number[], resumes: [] as number[] };
const pool = { name: "p", max_runners: 6, min_runners: 0, cur_runners: 0, status: { state: "Active", message: "Pool is active" } };
const vms: string[] = [];
const now = () => Date.now() / 1000;

function fakeFireactions(): Promise<string> {
  server = http.createServer((req, res) => {
    const send = (code: number, body: unknown) => { res.writeHead(code, { "Content-Type": "application/json" }); res.end(JSON.stringify(body)); };
    const url = req.url ?? "";
    if (req.method === "GET" && url === "/api/v1/pools") return send(200, { pools: [pool] });
    if (req.method === "GET" && url === "/api/v1/pools/p") return send(200, { pool });
    if (req.method === "GET" && url === "/api/v1/pools/p/microvms") return send(200, { micro_vms: vms.map((VMID) => ({ VMID })) });
    if (req.method === "POST" && url === "/api/v1/pools/p/scale") {
      // v0.4.0: the call returns once the VM has started (server/pool.go scaleUp).
      const call: { start: number; end?: number } = { start: now() };
      seen.scales.push(call);
      setTimeout(() => {
        vms.push(`p-${vms.length + 1}`);
        pool.cur_runners = vms.length;
        call.end = now();
        send(200, { message: "Pool scaled successfully" });
      }, SCALE_MS);
      return;
    }
    if (req.method === "POST" && url === "/api/v1/pools/p/pause") {
      pool.status = { state: "Paused", message: "Pool is paused" };
      seen.pauses.push(now());
      return send(200, { message: "Pool paused successfully" });
    }
    if (req.method === "POST" && url === "/api/v1/pools/p/resume") {
      pool.status = { state: "Active", message: "Pool is active" };
      seen.resumes.push(now());
      return send(200, { message: "Pool resumed successfully" });
    }
    send(404, { error: "Not Found" });
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(`127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

function drain(config: string, lock: string, step: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((ok) => {
    const p = spawn("python3", [DRAIN, "--config", config, "--host-json", join(dir, "host.json"), "--github-api", gh.url,
      "--lock", lock, "--poll-seconds", "0.2", "--timeout-minutes", "1", "--", ...step], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    p.stderr!.on("data", (d) => (stderr += d));
    p.on("exit", (code) => ok({ code: code ?? -1, stderr }));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "drain-scaler-"));
  keys = appKeyPair(dir);
  gh = await startGitHub({ dir, appId: 91, publicKeyFile: keys.pub });
  writeFileSync(join(dir, "host.json"), JSON.stringify({ name: "fa-lock-1" }));
});
afterAll(async () => {
  await scaler?.stop();
  server?.close();
  await gh?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the scaler and the drain do not fight", () => {
  it("no scale call runs between the drain's pause and the end of its step; the scaler goes on after it", async () => {
    const bind = await fakeFireactions();
    const config = join(dir, "config.yaml");
    writeFileSync(config, JSON.stringify({
      bind_address: bind,
      github: { app_id: 91, app_private_key: readFileSync(keys.key, "utf8") },
      pools: [{ name: "p", runner: { organization: "acme" } }],
    }));
    const pools = join(dir, "pools.json");
    writeFileSync(pools, JSON.stringify([{ name: "p", minRunners: 4, maxRunners: 6 }]));
    mkdirSync(join(dir, "pools", "p"), { recursive: true });
    const lock = join(dir, "run", "scale.lock");
    mkdirSync(join(dir, "run"));
    writeFileSync(lock, ""); // tmpfiles makes it at boot
    scaler = await startScaler({ pools, poolsDir: join(dir, "pools"), api: `http://${bind}`, metricsAddress: `127.0.0.1:${await freePort()}`, interval: 0.1, lock });

    // The drain starts while a scale call is in flight.
    await waitFor("a scale call in flight", () => seen.scales.some((c) => c.end === undefined) || undefined);
    const stepStart = join(dir, "step-start");
    const stepEnd = join(dir, "step-end");
    // The step also makes p-1 busy (its console says so), so the scaler wants one more VM
    // once the pool is resumed: a paused pool is never scaled.
    const busy = `printf '%s: Listening for Jobs\\n%s: Running job: build\\n' "$(date -u '+%F %TZ')" "$(date -u '+%F %TZ')" > ${join(dir, "pools", "p", "p-1.log")}`;
    const r = await drain(config, lock, ["sh", "-c", `date +%s.%N > ${stepStart}; ${busy}; sleep 2; date +%s.%N > ${stepEnd}`]);
    expect(r.code, r.stderr).toBe(0);
    const [pausedAt] = seen.pauses;
    const ended = Number(readFileSync(stepEnd, "utf8"));
    expect(pausedAt).toBeDefined();
    expect(Number(readFileSync(stepStart, "utf8"))).toBeGreaterThan(pausedAt);

    // Every scale call ended before the pause or started after the step (and the resume).
    const during = seen.scales.filter((c) => (c.end ?? Infinity) > pausedAt && c.start < ended);
    expect(during, JSON.stringify({ pausedAt, ended, scales: seen.scales })).toEqual([]);
    // The VM the in-flight call started was up before the pause: the drain saw it.
    expect(seen.scales[0].end).toBeLessThan(pausedAt);

    // Once the drain has exited (lock released, pool resumed), scaling goes on.
    const after = seen.scales.length;
    await waitFor("a scale call after the drain", () => seen.scales.length > after || undefined, 10_000);
    expect(seen.scales[after].start).toBeGreaterThan(seen.resumes[0]);
    expect(existsSync(lock)).toBe(true);
  });
});
