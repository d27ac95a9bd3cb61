// The real scaler (nix/pkgs/runner-fleet-scaler.py) against the fireactions v0.4.0 STAND-IN and
// its runner VMs (test/stand-ins/), on loopback, with the config our renderer writes. Jobs come
// from the GitHub stand-in's queue; the scaler itself never calls GitHub. It shows: a pool at
// rest stays at min; a burst of jobs raises it to min(max, busy + min) within BURST_SECONDS;
// once the jobs finish it falls back to min with no stop call; maxRunners holds under a larger
// burst; a paused pool stays put; a killed scaler, started again, catches up; a broken
// pools.json or a dead API gives one log line each and the scaler keeps running, picking up a
// live edit of maxRunners.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  apiPasswordFile, appKeyPair, freePort, poolEntry, renderConfig, sleep, startFireactions, startGitHub, waitFor,
  type FireactionsStandIn, type GitHubStandIn,
} from "./stand-ins/support";
import { SCALER, startScaler, type ScalerProc } from "./support/scaler";

/** The stated bound: a burst reaches min(max, busy + min) within this many seconds. */
const BURST_SECONDS = 5;
const APP_ID = 91;

let dir = "";
let gh: GitHubStandIn;
let fa: FireactionsStandIn;
let scaler: ScalerProc;
let keys: { key: string; pub: string };
let bind = "";
let metricsAddr = "";
let poolsFile = "";
let scalerArgs: Parameters<typeof startScaler>[0];
const root = () => join(dir, "root");

const burst = poolEntry("burst", { min: 2, max: 5, labels: ["self-hosted", "burst"] });
const held = poolEntry("held", { min: 1, max: 3, labels: ["self-hosted", "held"] });

async function startFa() {
  const config = renderConfig({ dir, pools: [burst, held], appId: APP_ID, keyFile: keys.key, bind, metrics: metricsAddr });
  fa = await startFireactions({ config, root: root(), githubApi: gh.url, api: bind, metrics: metricsAddr });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "scaler-standin-"));
  keys = appKeyPair(dir);
  gh = await startGitHub({ dir, appId: APP_ID, publicKeyFile: keys.pub, lostAfter: 3 });
  bind = `127.0.0.1:${await freePort()}`;
  metricsAddr = `127.0.0.1:${await freePort()}`;
  await startFa();
  poolsFile = join(dir, "pools.json"); // renderConfig wrote the same pools.json the host has
  scalerArgs = { pools: poolsFile, poolsDir: join(root(), "var/lib/fireactions/pools"), api: `http://${bind}`, metricsAddress: `127.0.0.1:${await freePort()}`,
    passwordFile: apiPasswordFile(dir) };
  scaler = await startScaler(scalerArgs);
}, 60_000);
afterAll(async () => {
  await scaler?.stop();
  await fa?.stop();
  await gh?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const pool = async (name: string) => (await fa.pools()).find((p) => p.name === name);
const size = async (name: string) => (await pool(name)).cur_runners as number;
const queue = (label: string, n: number, duration: number) =>
  Promise.all(Array.from({ length: n }, (_, i) => gh.queueJob({ org: "acme", labels: [label], name: `${label}-${i}`, duration })));
const allDone = async (ids: number[]) => (await gh.jobs()).filter((j) => ids.includes(j.id)).every((j) => j.status === "completed");

/** Samples a pool's size every 50 ms until `until` holds; returns the largest size seen. */
async function watchMax(name: string, until: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  let max = 0;
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    max = Math.max(max, await size(name));
    if (await until()) return max;
    await sleep(50);
  }
  throw new Error(`timed out after ${timeoutMs} ms (largest size ${max})`);
}

describe("the scaler against the fireactions stand-in", () => {
  it("keeps a pool at rest at min, adding nothing", async () => {
    await waitFor("burst at min", async () => ((await size("burst")) === 2 && (await scaler.metric("desired", "burst")) === 2) || undefined);
    await sleep(1500);
    expect(await size("burst")).toBe(2);
    expect(await scaler.metric("scale_ups_total", "burst")).toBe(0);
    expect(await scaler.metric("idle", "burst")).toBe(2);
  }, 30_000);

  it(`raises a pool to min(max, busy + min) within ${BURST_SECONDS} s of a burst, then falls back to min with no stop call`, async () => {
    const t0 = Date.now();
    const jobs = await queue("burst", 3, 6);
    await waitFor("burst at 5", async () => ((await size("burst")) === 5) || undefined, BURST_SECONDS * 1000);
    const seconds = (Date.now() - t0) / 1000;
    // The scaler's own view, from its next pass: 3 busy, 2 idle (min) on top.
    await waitFor("the scaler to see 5 with 3 busy", async () => ((await scaler.metric("current", "burst")) === 5 && (await scaler.metric("busy", "burst")) === 3) || undefined);
    console.log(`scaler: a burst of 3 jobs (min 2, max 5) reached 5 VMs in ${seconds.toFixed(2)} s`);
    expect(await scaler.metric("idle", "burst")).toBe(2);
    expect(await scaler.metric("desired", "burst")).toBe(5);
    expect(await scaler.metric("scale_ups_total", "burst")).toBe(3);

    await waitFor("the jobs to finish", () => allDone(jobs.map((j) => j.id)), 20_000);
    await waitFor("burst back at min", async () => ((await size("burst")) === 2) || undefined, 10_000);
    // Nothing was stopped: the VMs left when their job ended (the stand-in logs every StopVMM).
    expect(fa.log()).not.toMatch(/Forcefully stopped/);
    expect((await pool("burst")).status.state).toBe("Active");
  }, 60_000);

  it("never passes maxRunners under a burst larger than it", async () => {
    const jobs = await queue("burst", 9, 3);
    const largest = await watchMax("burst", () => allDone(jobs.map((j) => j.id)), 60_000);
    expect(largest).toBe(5);
    await waitFor("burst back at min", async () => ((await size("burst")) === 2) || undefined, 10_000);
  }, 90_000);

  it("leaves a paused pool alone, and scales it again once resumed", async () => {
    await waitFor("held at min", async () => ((await size("held")) === 1) || undefined);
    expect((await fa.post("/api/v1/pools/held/pause")).status).toBe(200);
    const before = await scaler.metric("scale_ups_total", "held");
    const jobs = await queue("held", 3, 3);
    await waitFor("the paused flag", async () => ((await scaler.metric("paused", "held")) === 1) || undefined);
    const largest = await watchMax("held", async () => false, 3000).catch((e) => Number(/largest size (\d+)/.exec(String(e))![1]));
    expect(largest).toBeLessThanOrEqual(1); // the one idle runner took a job; nothing was added
    expect(await scaler.metric("scale_ups_total", "held")).toBe(before);
    expect(await scaler.metric("desired", "held")).toBeGreaterThan(await size("held")); // it wanted more, and waited
    expect((await fa.post("/api/v1/pools/held/resume")).status).toBe(200);
    await waitFor("the held jobs to finish", () => allDone(jobs.map((j) => j.id)), 30_000);
    expect(await scaler.metric("scale_ups_total", "held")).toBeGreaterThan(before!);
  }, 60_000);

  it("a killed scaler, started again, catches up", async () => {
    await waitFor("burst at min", async () => ((await size("burst")) === 2) || undefined, 10_000);
    await scaler.stop("SIGKILL");
    const jobs = await queue("burst", 3, 8);
    await sleep(2000);
    expect(await size("burst")).toBe(2); // fireactions alone keeps min VMs: the third job waits
    const t0 = Date.now();
    scaler = await startScaler(scalerArgs);
    await waitFor("burst at 5", async () => ((await size("burst")) === 5) || undefined, BURST_SECONDS * 1000);
    console.log(`scaler: restarted, reached 5 VMs in ${((Date.now() - t0) / 1000).toFixed(2)} s`);
    await waitFor("the jobs to finish", () => allDone(jobs.map((j) => j.id)), 30_000);
  }, 60_000);

  it("authenticates: the rendered config turns basic auth on, and the scaler's calls pass it", async () => {
    expect((await fetch(`http://${bind}/api/v1/pools`)).status).toBe(401);
    expect(await scaler.metric("runner_fleet_scaler_up")).toBe(1);
    expect(scaler.log()).not.toMatch(/401|refused/);
  });

  it("a wrong password is one line and no crash loop; a missing password file is one line and exit 1", async () => {
    const wrong = join(dir, "wrong-password");
    writeFileSync(wrong, "not-the-password-0123456789\n");
    const other = await startScaler({ ...scalerArgs, metricsAddress: `127.0.0.1:${await freePort()}`, passwordFile: wrong });
    try {
      await waitFor("the refusal", () => /refused the password/.test(other.log()) || undefined);
      await sleep(3000);
      expect(other.proc.exitCode).toBeNull();
      expect(other.log().match(/refused the password/g)).toHaveLength(1);
      expect(other.log()).toMatch(/^runner-fleet-scaler: fireactions API at http:\/\/127\.0\.0\.1:\d+ refused the password \(GET \/api\/v1\/pools: HTTP 401, basic auth as 'runner-fleet' refused\); retrying with backoff$/m);
      expect(other.log()).not.toMatch(/Traceback/);
      expect(await other.metric("runner_fleet_scaler_up")).toBe(0);
    } finally {
      await other.stop();
    }
    const missing = join(dir, "no-password");
    const r = spawnSync("python3", [SCALER, "--pools", poolsFile, "--api", `http://${bind}`, "--api-password-file", missing], { encoding: "utf8" });
    expect([r.status, r.stderr]).toEqual([1, `runner-fleet-scaler: ${missing}: No such file or directory\n`]);
  }, 30_000);

  it("a broken pools.json and a dead API give one line each; it keeps running and takes a live edit", async () => {
    writeFileSync(poolsFile, "[{");
    await waitFor("the pools.json line", () => /pools\.json: pools\.json: not valid JSON/.test(scaler.log()) || undefined);
    writeFileSync(poolsFile, JSON.stringify([{ ...burst, maxRunners: 3 }, held]));
    await waitFor("the new limits", async () => ((await scaler.metric("max_runners", "burst")) === 3) || undefined);
    expect(scaler.log().match(/not valid JSON/g)).toHaveLength(1);
    const jobs = await queue("burst", 5, 2);
    expect(await watchMax("burst", () => allDone(jobs.map((j) => j.id)), 40_000)).toBe(3);

    await fa.stop();
    await sleep(3000);
    expect(scaler.proc.exitCode).toBeNull();
    expect(scaler.log().match(/unreachable/g)).toHaveLength(1);
    expect(await scaler.metric("runner_fleet_scaler_up")).toBe(0);
    await startFa();
    await waitFor("the API again", async () => ((await scaler.metric("runner_fleet_scaler_up")) === 1) || undefined, 10_000);
    expect(scaler.log()).toMatch(/reachable$/m);
  }, 90_000);
});
