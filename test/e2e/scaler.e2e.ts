/**
 * On-demand scaling on a test host (issue 20), with its own stack (Pulumi.scaler.yaml): the
 * real engine deploys one existing fireactions machine; the deploy's activation installs
 * runner-fleet-scaler and starts its unit (host/systemctl runs it under host/unit-supervise with
 * nix/'s Restart=on-failure settings). fireactions itself is the v0.4.0 STAND-IN
 * (test/stand-ins/fireactions, its VMs ephemeral runners) on the host, reading the config the
 * host rendered, with the GitHub STAND-IN for jobs. On the host, the scaler shows: at rest
 * the pool holds minRunners; a burst raises it to min(max, busy + min) within BURST_SECONDS and
 * it falls back to min with no stop call; maxRunners holds under a larger burst; a killed
 * scaler is restarted by its unit and catches up; a paused pool stays put.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshHosts, freshStack, RF, hostApi, hostFile, ok, onHost, pulumi, sh, waitFor } from "./support";
import { metricValue } from "../support/scaler";

const STACK = "scaler";
const HOST = "e2e-sc-1";
const ADDR = "10.231.0.21";
const GH_PORT = 18321;
const GH = `http://${ADDR}:${GH_PORT}`;
/** The stated bound on the host: a burst reaches min(max, busy + min) within this many seconds. */
const BURST_SECONDS = 10;
const REPO = path.resolve(__dirname, "../..");
const STANDINS = path.join(REPO, "test", "stand-ins");
let deployed = false;
type Ctx = { skip: (note?: string) => void };
const needsUp = (ctx: Ctx) => { if (!deployed) ctx.skip("pulumi up did not pass"); };

/** GET on the host's loopback (fireactions' API and the scaler's metrics listen there). */
function hostGet(url: string): string {
  return ok(onHost(HOST, `python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' ${url}`)).stdout;
}
/** fireactions' API asks for basic auth (the host's per-boot password). */
const apiGet = (url: string) => ok(hostApi(HOST, "GET", url)).stdout;
const hostPost = (url: string) => ok(hostApi(HOST, "POST", url)).stdout;
const pool = () => JSON.parse(apiGet("http://127.0.0.1:8080/api/v1/pools/burst")).pool;
const size = () => pool().cur_runners as number;
const metric = (name: string) => metricValue(hostGet("http://127.0.0.1:9102/metrics"), name, "burst");
const mainPid = () => hostFile(HOST, "/run/runner-fleet-e2e/runner-fleet-scaler.main.pid")?.trim();

async function queue(n: number, duration: number): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${GH}/_standin/jobs`, { method: "POST", body: JSON.stringify({ org: "e2e-org", labels: ["burst"], name: `job-${i}`, duration }) });
    expect(r.status).toBe(201);
    ids.push(((await r.json()) as { id: number }).id);
  }
  return ids;
}
async function allDone(ids: number[]): Promise<boolean> {
  const jobs = ((await (await fetch(`${GH}/_standin/jobs`)).json()) as { jobs: { id: number; status: string }[] }).jobs;
  return jobs.filter((j) => ids.includes(j.id)).every((j) => j.status === "completed");
}
async function until(what: string, probe: () => Promise<boolean> | boolean, seconds: number): Promise<void> {
  const end = Date.now() + seconds * 1000;
  while (!(await probe())) {
    if (Date.now() > end) throw new Error(`timed out after ${seconds}s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

beforeAll(() => {
  freshHosts({ [HOST]: ADDR });
  freshStack(STACK);
  // A real RSA key: the fireactions stand-in signs the App's JWTs with it, as fireactions does.
  const key = path.join(RF, "scaler-app-key.pem");
  ok(sh("openssl", ["genrsa", "-out", key, "2048"], { cwd: REPO }));
  ok(sh("openssl", ["rsa", "-in", key, "-pubout", "-out", path.join(RF, "scaler-app-pub.pem")], { cwd: REPO }));
  ok(pulumi(["config", "set", "--secret", "runner-fleet:githubAppPrivateKey", "--stack", STACK], { input: fs.readFileSync(key, "utf8").trim() }));
  // The GitHub stand-in on the host's address, and the fireactions daemon: host/systemctl runs
  // the fireactions stand-in where /etc/runner-fleet/e2e-fireactions names it (the real daemon
  // needs KVM).
  ok(onHost(HOST, [
    `setsid -f python3 ${STANDINS}/github/github_standin.py --listen ${ADDR}:${GH_PORT} --app-id 4242 --app-public-key ${RF}/scaler-app-pub.pem --lost-after 5 </dev/null >>/var/log/github-standin.log 2>&1`,
    `printf 'standin=%s\ngithub_api=%s\n' ${STANDINS}/fireactions/fireactions_standin.py ${GH} > /etc/runner-fleet/e2e-fireactions`,
  ].join("\n")));
}, 300_000);

afterAll(() => {
  if (process.env.RF_E2E_KEEP !== "1") {
    if (deployed) pulumi(["destroy", "--yes", "--stack", STACK]);
    sh("bash", [path.join(__dirname, "openbao.sh"), "stop"]);
    sh("bash", [path.join(__dirname, "hosts.sh"), "down"]); // ends every process in the host's namespace
    for (const entry of ["bao", "project", "state", "pulumi-home", "stand-ins.log", "sudoers", "id_ed25519.pub", "scaler-app-key.pem", "scaler-app-pub.pem"]) {
      fs.rmSync(path.join(RF, entry), { recursive: true, force: true });
    }
    try { fs.rmdirSync(RF); } catch { /* not empty: not ours alone */ }
  }
}, 300_000);

describe("on-demand scaling on a test host", () => {
  it("pulumi up deploys the host, and its activation starts the scaler unit", async () => {
    ok(pulumi(["up", "--yes", "--stack", STACK]));
    deployed = true;
    const unit = JSON.parse(hostFile(HOST, "/etc/runner-fleet-e2e/units/runner-fleet-scaler.json") ?? "null");
    expect(unit).toMatchObject({ Restart: "on-failure", RestartSec: 5, StartLimitBurst: 5, StartLimitIntervalSec: 300 });
    expect(unit.ExecStart).toContain("/run/current-system/sw/bin/runner-fleet-scaler");
    await waitFor("the scaler's main pid", () => mainPid(), 30);
    await waitFor("the scaler's log", () => /watching \/etc\/runner-fleet\/pools\.json/.test(hostFile(HOST, "/var/log/runner-fleet-scaler.log") ?? ""), 30);
    // The host rendered fireactions' config from its pools.json and the App key vault-agent wrote.
    await waitFor("fireactions' config", () => hostFile(HOST, "/run/fireactions/config.yaml"), 90);
  });

  it("with fireactions running, the pool rests at minRunners", async (ctx) => {
    needsUp(ctx);
    await until("the pool at 2 with the scaler's view", () => {
      try {
        return size() === 2 && metric("desired") === 2 && metric("idle") === 2;
      } catch {
        return false;
      }
    }, 60);
    await new Promise((r) => setTimeout(r, 2000));
    expect(size()).toBe(2);
    expect(metric("scale_ups_total")).toBe(0);
  });

  it(`a burst of 3 jobs raises it to min(max, busy + min) = 5 within ${BURST_SECONDS} s; done, it falls back to 2 with no stop call`, async (ctx) => {
    needsUp(ctx);
    const t0 = Date.now();
    const jobs = await queue(3, 8);
    await until("5 VMs", () => size() === 5, BURST_SECONDS);
    process.stdout.write(`scaler e2e: a burst of 3 reached 5 VMs in ${((Date.now() - t0) / 1000).toFixed(2)} s\n`);
    await until("the scaler's view: 3 busy, 2 idle", () => metric("busy") === 3 && metric("idle") === 2 && metric("desired") === 5, 10);
    await until("the jobs done", () => allDone(jobs), 60);
    await until("back at 2", () => size() === 2, 20);
    expect(hostFile(HOST, "/var/log/fireactions-daemon.log") ?? "").not.toMatch(/Forcefully stopped/);
    expect(pool().status.state).toBe("Active");
  });

  it("maxRunners (5) holds under a burst of 9", async (ctx) => {
    needsUp(ctx);
    const jobs = await queue(9, 4);
    let largest = 0;
    const end = Date.now() + 90_000;
    while (!(await allDone(jobs))) {
      largest = Math.max(largest, size());
      if (Date.now() > end) throw new Error("the 9 jobs did not finish in 90 s");
    }
    expect(largest).toBe(5);
    expect(Number(/fireactions_pool_scale_successes\{pool="burst"\} (\d+)/.exec(hostGet("http://127.0.0.1:8081/metrics"))?.[1])).toBeGreaterThan(0);
    await until("back at 2", () => size() === 2, 20);
  });

  it("a killed scaler is restarted by its unit and catches up", async (ctx) => {
    needsUp(ctx);
    const before = mainPid()!;
    ok(onHost(HOST, `kill -9 ${before}`));
    const jobs = await queue(3, 15);
    await waitFor("a new main pid", () => { const p = mainPid(); return p && p !== before ? p : undefined; }, 30);
    await until("5 VMs after the restart", () => size() === 5, 5 + BURST_SECONDS);
    expect(hostFile(HOST, "/var/log/runner-fleet-scaler.log")).toMatch(/Main process exited, signal=9\n.*Scheduled restart job/);
    await until("the jobs done", () => allDone(jobs), 60);
    await until("back at 2", () => size() === 2, 20);
  });

  it("a paused pool stays put", async (ctx) => {
    needsUp(ctx);
    hostPost("http://127.0.0.1:8080/api/v1/pools/burst/pause");
    const ups = metric("scale_ups_total")!;
    const jobs = await queue(4, 3);
    const end = Date.now() + 6000;
    let largest = 0;
    while (Date.now() < end) largest = Math.max(largest, size());
    expect(largest).toBeLessThanOrEqual(2);
    expect(metric("paused")).toBe(1);
    expect(metric("scale_ups_total")).toBe(ups);
    hostPost("http://127.0.0.1:8080/api/v1/pools/burst/resume");
    await until("the jobs done after resume", () => allDone(jobs), 60);
    expect(metric("scale_ups_total")!).toBeGreaterThan(ups);
  });
});
