/**
 * The scaler's bench rows (npm run bench; `--scaler-only` for these alone), against the
 * fireactions v0.4.0 and GitHub STAND-INS (test/stand-ins/) on loopback, with the scaler's
 * production interval (0.5 s):
 *
 * - reaction: from "the last idle runner took a job" (the GitHub stand-in's `assigned` event,
 *   after which the runner prints `Running job:`) to "a new VM was requested" (the scale call
 *   reaching fireactions, timed by a recording proxy in front of it). Floor, in the same run:
 *   the least any poller of the same signal at the same interval does, a loop that checks the
 *   pool's console logs for a new `Running job:` line and then calls scale.
 * - cost: the scaler's CPU (utime + stime from /proc) and peak RSS (VmHWM) over a window on a
 *   host with 10 pools at rest. Floor: the same interpreter with the same modules, calling
 *   GET /api/v1/pools once per interval and nothing else.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { table } from "./bench-lib";
import {
  apiPasswordFile, appKeyPair, freePort, poolEntry, renderConfig, sleep, startFireactions, startGitHub, waitFor,
  type FireactionsStandIn, type GitHubStandIn,
} from "../test/stand-ins/support";
import { startScaler } from "../test/support/scaler";

const INTERVAL = 0.5;
const APP_ID = 4242;
/** Targets: reaction within one pass of the floor; CPU and memory within these of the floor. */
const COST_MAX_RATIO = 1.5;

/** What the floor poller runs (python3 -c): same signal, same interval, nothing else. */
const FLOOR_POLLER = `
import base64, glob, os, sys, time, urllib.request
pool_dir, api, pool, interval = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
# The API's basic auth, as the scaler sends it (the password file read once).
auth = {"Authorization": "Basic " + base64.b64encode(b"runner-fleet:" + open(sys.argv[5], "rb").read().rstrip(b"\\n")).decode()}
seen = 0
while True:
    jobs = 0
    for p in glob.glob(os.path.join(pool_dir, "*.log")):
        with open(p, "rb") as f:
            jobs += f.read().count(b": Running job: ")
    for _ in range(jobs - seen):
        urllib.request.urlopen(urllib.request.Request(api + "/api/v1/pools/" + pool + "/scale", method="POST", data=b"", headers=auth), timeout=30).read()
    seen = jobs
    time.sleep(interval)
`;
/** The cost floor: same interpreter and modules as the scaler, one GET of the pools per pass. */
const FLOOR_IDLE = `
import argparse, json, os, re, signal, sys, threading, time, urllib.error, urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import base64
api, interval = sys.argv[1], float(sys.argv[2])
auth = {"Authorization": "Basic " + base64.b64encode(b"runner-fleet:" + open(sys.argv[3], "rb").read().rstrip(b"\\n")).decode()}
while True:
    json.loads(urllib.request.urlopen(urllib.request.Request(api + "/api/v1/pools", headers=auth), timeout=30).read())
    time.sleep(interval)
`;

interface Recorder {
  url: string;
  scales: number[];
  close(): void;
}

/** A proxy in front of the fireactions API that records when each scale call arrives. */
async function recordingProxy(target: string): Promise<Recorder> {
  const scales: number[] = [];
  const server = http.createServer((req, res) => {
    if (req.method === "POST" && /\/scale$/.test(req.url ?? "")) scales.push(Date.now() / 1000);
    const up = http.request(target + req.url, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.writeHead(502).end());
    req.pipe(up);
  });
  const port = await freePort();
  await new Promise<void>((ok) => server.listen(port, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${port}`, scales, close: () => server.close() };
}

function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}
function peakRssMib(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "-");

interface Rig {
  gh: GitHubStandIn;
  fa: FireactionsStandIn;
  proxy: Recorder;
  root: string;
  pools: string;
  /** The API password file (the renderer turned basic auth on with it). */
  password: string;
  stop(): Promise<void>;
}

async function rig(dir: string, pools: unknown[], keys: { key: string; pub: string }, gh: GitHubStandIn): Promise<Rig> {
  const bind = `127.0.0.1:${await freePort()}`;
  const metrics = `127.0.0.1:${await freePort()}`;
  const root = path.join(dir, "root");
  const config = renderConfig({ dir, pools, appId: APP_ID, keyFile: keys.key, bind, metrics });
  const fa = await startFireactions({ config, root, githubApi: gh.url, api: bind, metrics });
  const proxy = await recordingProxy(`http://${bind}`);
  return { gh, fa, proxy, root, pools: path.join(dir, "pools.json"), password: apiPasswordFile(dir), async stop() { proxy.close(); await fa.stop(); } };
}

const listening = (fa: FireactionsStandIn, pool: string) => Object.values(fa.consoles(pool)).filter((t) => t.includes(": Listening for Jobs") && !t.includes(": Running job: ")).length;

/** Samples of "last idle runner took a job" -> "scale call arrived", in seconds. */
async function reaction(r: Rig, pool: string, label: string, samples: number): Promise<number[]> {
  const out: number[] = [];
  await waitFor("one idle runner", () => listening(r.fa, pool) === 1 || undefined, 20_000);
  for (let i = 0; i < samples; i++) {
    const before = r.proxy.scales.length;
    const job = await r.gh.queueJob({ org: "acme", labels: [label], name: `lat-${i}`, duration: 120 });
    await waitFor("the scale call", () => r.proxy.scales.length > before || undefined, 20_000);
    const assigned = (await r.gh.events()).find((e) => e.kind === "assigned" && e.job === job.id);
    if (!assigned) throw new Error("no assigned event");
    out.push(r.proxy.scales[before] - assigned.time);
    // The new VM must be listening (and the pool settled) before the next sample.
    await waitFor("the new idle runner", () => listening(r.fa, pool) === 1 || undefined, 20_000);
    await sleep(300 + Math.random() * 500); // spread the samples over the interval's phase
  }
  return out;
}

async function stopChild(p: ChildProcess) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise<void>((ok) => {
    p.once("exit", () => ok());
    p.kill("SIGTERM");
  });
}

/** CPU seconds per wall second and peak RSS of a process over `seconds`. */
async function cost(pid: number, seconds: number): Promise<{ cpu: number; rss: number }> {
  await sleep(2000); // past start-up
  const c0 = cpuSeconds(pid);
  const t0 = Date.now();
  await sleep(seconds * 1000);
  return { cpu: (cpuSeconds(pid) - c0) / ((Date.now() - t0) / 1000), rss: peakRssMib(pid) };
}

export async function benchScaler(opts: { work: string; samples?: number; costSeconds?: number; log?: (s: string) => void }): Promise<{ lines: string[]; failures: number }> {
  const log = opts.log ?? (() => {});
  const dir = fs.mkdtempSync(path.join(opts.work, "scaler-"));
  const keys = appKeyPair(dir);
  const gh = await startGitHub({ dir, appId: APP_ID, publicKeyFile: keys.pub, lostAfter: 30 });
  const samples = opts.samples ?? 8;
  const costSeconds = opts.costSeconds ?? 60;
  try {
    // ---- reaction: the scaler, then the floor poller, each on a pool of its own
    log("scaler bench: reaction ... ");
    const a = await rig(path.join(dir, "react"), [poolEntry("react", { min: 1, max: samples + 2, labels: ["self-hosted", "react"] })], keys, gh);
    const scaler = await startScaler({ pools: a.pools, poolsDir: path.join(a.root, "var/lib/fireactions/pools"), api: a.proxy.url, metricsAddress: `127.0.0.1:${await freePort()}`, interval: INTERVAL, passwordFile: a.password });
    const ours = await reaction(a, "react", "react", samples);
    await scaler.stop();
    await a.stop();
    const b = await rig(path.join(dir, "floor"), [poolEntry("floor", { min: 1, max: samples + 2, labels: ["self-hosted", "floor"] })], keys, gh);
    const poller = spawn("python3", ["-c", FLOOR_POLLER, path.join(b.root, "var/lib/fireactions/pools", "floor"), b.proxy.url, "floor", String(INTERVAL), b.password], { stdio: "ignore" });
    const floor = await reaction(b, "floor", "floor", samples);
    await stopChild(poller);
    await b.stop();
    log(`${fmt(median(ours))} s (floor ${fmt(median(floor))} s)\n`);

    // ---- cost: 10 pools at rest
    log(`scaler bench: CPU and memory with 10 pools over ${costSeconds} s ... `);
    const ten = Array.from({ length: 10 }, (_, i) => poolEntry(`p${i}`, { min: 1, max: 3, labels: ["self-hosted", `p${i}`] }));
    const c = await rig(path.join(dir, "cost"), ten, keys, gh);
    await waitFor("10 pools at min", async () => ((await c.fa.pools()).every((p) => p.cur_runners === 1)) || undefined, 30_000);
    // Both over the same window: CPU time comes in 10 ms ticks, so the window is long.
    const s2 = await startScaler({ pools: c.pools, poolsDir: path.join(c.root, "var/lib/fireactions/pools"), api: c.proxy.url, metricsAddress: `127.0.0.1:${await freePort()}`, interval: INTERVAL, passwordFile: c.password });
    const idle = spawn("python3", ["-c", FLOOR_IDLE, c.proxy.url, String(INTERVAL), c.password], { stdio: "ignore" });
    const [scalerCost, floorCost] = await Promise.all([cost(s2.proc.pid!, costSeconds), cost(idle.pid!, costSeconds)]);
    await s2.stop();
    await stopChild(idle);
    await c.stop();
    log("done\n");

    const reactOk = median(ours) <= median(floor) + INTERVAL;
    const cpuOk = scalerCost.cpu <= COST_MAX_RATIO * floorCost.cpu;
    const rssOk = scalerCost.rss <= COST_MAX_RATIO * floorCost.rss;
    const verdict = (ok: boolean) => (ok ? "PASS" : "FAIL");
    const lines = [
      "",
      `Scaler (interval ${INTERVAL} s; the fireactions and GitHub stand-ins on loopback; floors in the same run)`,
      table([
        ["row", "scaler", "floor", "x", "target", "result"],
        [`reaction s, median of ${samples} (max)`, `${fmt(median(ours))} (${fmt(Math.max(...ours))})`, `${fmt(median(floor))} (${fmt(Math.max(...floor))})`,
          fmt(median(ours) / median(floor)), `<= floor + ${INTERVAL}`, verdict(reactOk)],
        ["CPU % of a core, 10 pools", fmt(scalerCost.cpu * 100, 2), fmt(floorCost.cpu * 100, 2), fmt(scalerCost.cpu / floorCost.cpu), `<= ${COST_MAX_RATIO}x`, verdict(cpuOk)],
        ["peak RSS MiB, 10 pools", fmt(scalerCost.rss, 1), fmt(floorCost.rss, 1), fmt(scalerCost.rss / floorCost.rss), `<= ${COST_MAX_RATIO}x`, verdict(rssOk)],
      ]),
      "  reaction: the GitHub stand-in's `assigned` event of the job that took the pool's last idle runner -> its scale call reaching fireactions",
      "  floor (reaction): a loop re-reading the pool's console logs every interval and calling scale on a new `Running job:` line",
      "  floor (cost): python3 with the scaler's modules, one GET /api/v1/pools per interval",
    ];
    return { lines, failures: [reactOk, cpuOk, rssOk].filter((ok) => !ok).length };
  } finally {
    await gh.stop();
  }
}
