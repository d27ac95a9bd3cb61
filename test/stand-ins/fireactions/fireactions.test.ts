// The fireactions v0.4.0 STAND-IN (README.md here) on loopback, driven through its API with
// the config OUR renderer writes and the GitHub stand-in behind it: min_runners kept, scale
// bounded by max, pause/resume, reload in place (new pools start, removed pools keep running),
// ephemeral VMs with actions/runner's console lines, v0.4.0's metric names, and SIGTERM
// stopping every VM (a running job is lost, as with the real daemon); basic auth on /api
// exactly as v0.4.0 wires gin.BasicAuth (on whenever our renderer is given the API password).
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  apiPasswordFile, appKeyPair, basicAuth as basic, poolEntry, sleep, startGitHub, startStandInHost, waitFor, FIREACTIONS_STANDIN,
  type FireactionsStandIn, type GitHubStandIn,
} from "../support";

let dir = "";
let gh: GitHubStandIn;
let keys: { key: string; pub: string };
const APP_ID = 77;
const running: FireactionsStandIn[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "fa-standin-"));
  keys = appKeyPair(dir);
  gh = await startGitHub({ dir, appId: APP_ID, publicKeyFile: keys.pub, lostAfter: 1.5 });
});
afterAll(async () => {
  for (const fa of running) await fa.stop();
  await gh?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function start(name: string, pools: unknown[]) {
  const h = await startStandInHost({ dir: join(dir, name), pools, appId: APP_ID, keyFile: keys.key, githubApi: gh.url });
  running.push(h.fa);
  return h;
}

const pool = async (fa: FireactionsStandIn, name: string) => (await fa.pools()).find((p) => p.name === name);
const listening = (fa: FireactionsStandIn, p: string) =>
  Object.values(fa.consoles(p)).filter((t) => t.includes(": Listening for Jobs")).length;

describe("fireactions stand-in", () => {
  it("refuses a config v0.4.0 refuses, with one line and exit 1", () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, JSON.stringify({ bind_address: "nope", log_level: "loud", github: {}, pools: [] }));
    const r = spawnSync("python3", [FIREACTIONS_STANDIN, "--config", bad], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/bind_address.*github.*pools.*log_level/);
  });

  it("keeps min_runners VMs, serves list/get, bounds scale by max and counts it", async () => {
    const { fa } = await start("scale", [poolEntry("small", { min: 1, max: 2, labels: ["self-hosted", "scale-l"] })]);
    await waitFor("one listening runner", () => listening(fa, "small") === 1 || undefined);
    await sleep(1500);
    expect((await pool(fa, "small")).cur_runners).toBe(1); // only min, never more on its own
    expect(await pool(fa, "small")).toMatchObject({ max_runners: 2, min_runners: 1, status: { state: "Active", message: "Pool is active" } });
    expect((await fetch(`${fa.api}/api/v1/pools/nope`, { headers: fa.auth })).status).toBe(404);
    expect((await fa.post("/api/v1/pools/nope/scale")).status).toBe(500);

    for (let i = 0; i < 3; i++) expect((await fa.post("/api/v1/pools/small/scale")).body.message).toBe("Pool scaled successfully");
    expect((await pool(fa, "small")).cur_runners).toBe(2); // the third request hit max: a no-op, still 200
    const metrics = await (await fetch(fa.metrics)).text();
    expect(metrics).toMatch(/^fireactions_pool_scale_requests\{pool="small"\} 3$/m);
    expect(metrics).toMatch(/^fireactions_pool_max_runners_count\{pool="small"\} 2$/m);
    expect(metrics).toMatch(/^fireactions_pool_min_runners_count\{pool="small"\} 1$/m);
    expect(metrics).toMatch(/^fireactions_pool_status\{pool="small"\} 1$/m);
    expect(metrics).toMatch(/^fireactions_pool_total 1$/m);
    expect(metrics).toMatch(/^fireactions_server_up 1$/m);
    expect(metrics).toMatch(/^fireactions_pool_current_runners_count\{pool="small"\} \d$/m);
    expect(metrics).toMatch(/^fireactions_pool_scale_successes\{pool="small"\} 2$/m);
  });

  it("runs one job per VM with actions/runner's console lines, then tops up; pause stops the top-up", async () => {
    const { fa } = await start("jobs", [poolEntry("jobs", { min: 1, max: 1, labels: ["self-hosted", "jobs-l"] })]);
    await waitFor("a listening runner", () => listening(fa, "jobs") === 1 || undefined);
    const job = await gh.queueJob({ org: "acme", labels: ["jobs-l"], name: "unit-tests", duration: 1 });
    const done = await waitFor("the job", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "completed"));
    const text = fa.consoles("jobs")[done.runner!];
    expect(text).toMatch(/^√ Connected to GitHub$/m);
    expect(text).toMatch(/^Current runner version: '2\.336\.0'$/m);
    expect(text).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: Listening for Jobs$/m);
    expect(text).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: Running job: unit-tests$/m);
    expect(text).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: Job unit-tests completed with result: Succeeded$/m);
    // Ephemeral: that VM exited, and the pool loop started a new one.
    await waitFor("a second runner", () => listening(fa, "jobs") === 2 || undefined);

    expect((await fa.post("/api/v1/pools/jobs/pause")).body.message).toBe("Pool paused successfully");
    expect((await pool(fa, "jobs")).status.state).toBe("Paused");
    expect(await (await fetch(fa.metrics)).text()).toMatch(/^fireactions_pool_status\{pool="jobs"\} 0$/m);
    const second = await gh.queueJob({ org: "acme", labels: ["jobs-l"], name: "second", duration: 0.5 });
    await waitFor("the second job", async () => (await gh.jobs()).find((j) => j.id === second.id && j.status === "completed"));
    await sleep(2500);
    expect((await pool(fa, "jobs")).cur_runners).toBe(0); // paused: nothing replaced it
    expect((await fa.post("/api/v1/pools/jobs/resume")).body.message).toBe("Pool resumed successfully");
    await waitFor("a runner after resume", async () => ((await pool(fa, "jobs")).cur_runners === 1) || undefined);
  });

  it("reload: existing pools take the new config in place, new pools start, removed pools keep running", async () => {
    const a = poolEntry("rl-a", { min: 1, max: 1, labels: ["self-hosted", "rl-a"] });
    const b = poolEntry("rl-b", { min: 1, max: 1, labels: ["self-hosted", "rl-b"] });
    const { fa, rerender } = await start("reload", [a, b]);
    await waitFor("both pools listening", () => (listening(fa, "rl-a") === 1 && listening(fa, "rl-b") === 1) || undefined);
    const job = await gh.queueJob({ org: "acme", labels: ["rl-a"], name: "survivor", duration: 4 });
    await waitFor("the job to start", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "in_progress"));

    rerender([{ ...a, maxRunners: 3 }, poolEntry("rl-c", { min: 1, max: 1, labels: ["self-hosted", "rl-c"] })]);
    expect((await fa.post("/api/v1/reload")).body.message).toBe("Pools reloaded successfully");
    expect((await pool(fa, "rl-a")).max_runners).toBe(3);
    await waitFor("the new pool's runner", () => listening(fa, "rl-c") === 1 || undefined);
    expect((await fa.pools()).map((p) => p.name).sort()).toEqual(["rl-a", "rl-b", "rl-c"]); // rl-b is not stopped
    expect((await pool(fa, "rl-b")).cur_runners).toBe(1);
    // v0.4.0 sets the max/min gauges only when a pool is created.
    expect(await (await fetch(fa.metrics)).text()).toMatch(/^fireactions_pool_max_runners_count\{pool="rl-a"\} 1$/m);
    const done = await waitFor("the job to finish", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status !== "in_progress"), 15_000);
    expect(done.status).toBe("completed");
  });

  it("a reload of an unreadable config answers 500 and changes nothing", async () => {
    const { fa } = await start("badreload", [poolEntry("br", { labels: ["self-hosted", "br"] })]);
    writeFileSync(join(dir, "badreload", "config.yaml"), "{not json");
    const r = await fa.post("/api/v1/reload");
    expect(r.status).toBe(500);
    expect(r.body.error).toMatch(/^loading config: /);
    expect((await fa.pools()).map((p) => p.name)).toEqual(["br"]);
  });

  it("SIGTERM stops every VM; a running job is lost", async () => {
    const { fa } = await start("shutdown", [poolEntry("sd", { min: 2, max: 2, labels: ["self-hosted", "sd"] })]);
    await waitFor("two listening runners", () => listening(fa, "sd") === 2 || undefined);
    const job = await gh.queueJob({ org: "acme", labels: ["sd"], name: "killed", duration: 60 });
    await waitFor("the job to start", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "in_progress"));
    const vms = () => spawnSync("pgrep", ["-f", "runner_vm.py .*--name sd-"], { encoding: "utf8" }).stdout.split("\n").filter(Boolean);
    expect(vms()).toHaveLength(2);
    await fa.stop("SIGTERM");
    expect(vms()).toEqual([]);
    expect(fa.log()).toMatch(/Forcefully stopped Firecracker VM sd-[0-9a-f]{24}/);
    expect(fa.log().match(/Forcefully stopped/g)).toHaveLength(2);
    const lost = await waitFor("the job to be lost", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "lost"));
    expect(lost.runner).toMatch(/^sd-/);
    expect(fa.consoles("sd")[lost.runner!]).not.toMatch(/completed with result/);
  });
});

describe("fireactions stand-in: basic auth (v0.4.0 server/server.go l.104-107, gin v1.10.1 auth.go)", () => {
  const REALM = 'Basic realm="Authorization Required"';

  it("refuses scale, pause, resume, reload and every GET under /api without the rendered credentials: 401, gin's realm, no body", async () => {
    const { fa, config, sub } = await start("auth", [poolEntry("au", { min: 1, max: 2, labels: ["self-hosted", "au"] })]);
    const rendered = JSON.parse(readFileSync(config, "utf8"));
    const password = readFileSync(apiPasswordFile(sub), "utf8").trim();
    expect(rendered.basic_auth_enabled).toBe(true);
    expect(rendered.basic_auth_users).toEqual({ "runner-fleet": password });
    await waitFor("the pool's runner", async () => ((await pool(fa, "au"))?.cur_runners === 1) || undefined);
    const wrong: Record<string, string>[] = [{}, { Authorization: basic("runner-fleet", password + "x") }, { Authorization: basic("admin", password) },
      { Authorization: basic("runner-fleet", password).replace("Basic", "basic") }];
    for (const headers of wrong) {
      for (const path of ["/api/v1/pools/au/scale", "/api/v1/pools/au/pause", "/api/v1/pools/au/resume", "/api/v1/reload"]) {
        const r = await fetch(`${fa.api}${path}`, { method: "POST", headers });
        expect([path, r.status, r.headers.get("www-authenticate"), await r.text()]).toEqual([path, 401, REALM, ""]);
      }
      for (const path of ["/api/v1/pools", "/api/v1/pools/au", "/api/v1/pools/au/microvms", "/api/v1/pools/nope"]) {
        expect([path, (await fetch(`${fa.api}${path}`, { headers })).status]).toEqual([path, 401]);
      }
    }
    // Nothing happened: still one VM, still active, no scale request counted.
    expect(await pool(fa, "au")).toMatchObject({ cur_runners: 1, status: { state: "Active" } });
    expect(await (await fetch(fa.metrics)).text()).not.toMatch(/fireactions_pool_scale_requests/);
    // Outside the /api group nothing asks: /healthz, /version, the metrics listener, unknown paths (gin's 404).
    expect((await fetch(`${fa.api}/healthz`)).status).toBe(200);
    expect((await fetch(`${fa.api}/version`)).status).toBe(200);
    expect((await fetch(`${fa.api}/api/v2/nothing`)).status).toBe(404);
    // With them: served as before.
    expect((await fa.post("/api/v1/pools/au/scale")).body.message).toBe("Pool scaled successfully");
    expect((await fa.post("/api/v1/pools/au/scale", false)).status).toBe(401);
  });

  it("reload keeps the accounts fireactions started with: a new password in the file changes nothing", async () => {
    const { fa, config } = await start("auth-reload", [poolEntry("ar", { labels: ["self-hosted", "ar"] })]);
    const before = readFileSync(config, "utf8");
    const c = JSON.parse(before);
    writeFileSync(config, JSON.stringify({ ...c, basic_auth_users: { "runner-fleet": "another-password-0123456789" } }));
    expect((await fa.post("/api/v1/reload")).status).toBe(200);
    expect((await fetch(`${fa.api}/api/v1/pools`, { headers: { Authorization: basic("runner-fleet", "another-password-0123456789") } })).status).toBe(401);
    expect((await fetch(`${fa.api}/api/v1/pools`, { headers: fa.auth })).status).toBe(200);
    writeFileSync(config, JSON.stringify({ ...c, basic_auth_enabled: false }));
    expect((await fa.post("/api/v1/reload")).status).toBe(200);
    expect((await fetch(`${fa.api}/api/v1/pools`)).status).toBe(401); // still on
  });

  it("basic_auth_enabled without users passes v0.4.0's validation (its required_if never fires) and gin panics at start", () => {
    const base = { bind_address: "127.0.0.1:1", metrics: { enabled: false }, github: { app_id: 1, app_private_key: "k" }, pools: [poolEntry("x")], log_level: "info" };
    for (const [cfg, msg] of [
      [{ ...base, basic_auth_enabled: true }, "panic: Empty list of authorized credentials"],
      [{ ...base, basic_auth_enabled: true, basic_auth_users: {} }, "panic: Empty list of authorized credentials"],
      [{ ...base, basic_auth_enabled: true, basic_auth_users: { "": "pw" } }, "panic: User can not be empty"],
    ] as const) {
      const file = join(dir, "panic.yaml");
      writeFileSync(file, JSON.stringify(cfg));
      const r = spawnSync("python3", [FIREACTIONS_STANDIN, "--config", file], { encoding: "utf8", timeout: 10_000 });
      expect([r.status, r.stderr.trim()]).toEqual([2, msg]);
    }
  });
});
