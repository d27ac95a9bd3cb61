// runner-fleet-drain (nix/pkgs/runner-fleet-drain.py) for real, against the fireactions v0.4.0
// and GitHub stand-ins (test/stand-ins): pause, deregister idle runners before anything stops
// them, wait for busy ones, the timeout line, the opt-in to proceed, resume, and --reload for
// pool edits (removed pools paused and drained, nothing restarted). The step each drain runs
// here is what deploys run after it: a fireactions restart (SIGTERM to the stand-in).
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import {
  apiPasswordFile, appKeyPair, poolEntry, startGitHub, startStandInHost, waitFor, FIREACTIONS_STANDIN,
  type FireactionsStandIn, type GitHubStandIn,
} from "./stand-ins/support";

const DRAIN = resolve(__dirname, "..", "nix", "pkgs", "runner-fleet-drain.py");
const RENDERER = resolve(__dirname, "..", "nix", "pkgs", "render-fireactions-config.py");
const APP_ID = 91;
let dir = "";
let gh: GitHubStandIn;
let keys: { key: string; pub: string };
const running: FireactionsStandIn[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "drain-test-"));
  keys = appKeyPair(dir);
  gh = await startGitHub({ dir, appId: APP_ID, publicKeyFile: keys.pub, lostAfter: 1.5 });
  writeFileSync(join(dir, "host.json"), JSON.stringify({ name: "fa-test-1" }));
});
afterAll(async () => {
  for (const fa of running) await fa.stop();
  for (const f of restarted) if (existsSync(f)) spawnSync("kill", ["-TERM", readFileSync(f, "utf8").trim()]);
  await gh?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function host(name: string, pools: unknown[]) {
  const h = await startStandInHost({ dir: join(dir, name), pools, appId: APP_ID, keyFile: keys.key, githubApi: gh.url });
  running.push(h.fa);
  return h;
}

function drain(config: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((ok) => {
    const p = spawn("python3", [DRAIN, "--config", config, "--host-json", join(dir, "host.json"), "--github-api", gh.url, "--poll-seconds", "0.3",
      "--lock", join(dir, "scale.lock"), ...args],
      { stdio: ["ignore", "inherit", "pipe"] });
    let stderr = "";
    p.stderr!.on("data", (d) => (stderr += d));
    p.on("exit", (code) => ok({ code: code ?? -1, stderr }));
  });
}

const restarted: string[] = [];
/** A step that records when it ran and then restarts fireactions (stop: SIGTERM; start again). */
function restartStep(sub: string, fa: FireactionsStandIn, config: string): string[] {
  const marker = join(sub, "step-ran");
  const pidFile = join(sub, "restarted.pid");
  restarted.push(pidFile);
  const start = `setsid python3 ${FIREACTIONS_STANDIN} --config ${config} --root ${join(sub, "root")} --github-api ${gh.url} </dev/null >/dev/null 2>&1 & echo $! > ${pidFile}`;
  return ["--", "sh", "-c", `date +%s.%N > ${marker}; kill -TERM ${fa.proc.pid}; while kill -0 ${fa.proc.pid} 2>/dev/null; do sleep 0.1; done; ${start}`];
}
const stepTime = (sub: string) => (existsSync(join(sub, "step-ran")) ? Number(readFileSync(join(sub, "step-ran"), "utf8")) : undefined);
const listening = (fa: FireactionsStandIn, pool: string) => Object.values(fa.consoles(pool)).filter((t) => t.includes("Listening for Jobs")).length;
const jobsOn = async (prefix: string) => (await gh.jobs()).filter((j) => j.runner?.startsWith(prefix));

describe("runner-fleet-drain", () => {
  it("without a drain, a restart kills the running job (main's behaviour)", async () => {
    const { fa } = await host("before", [poolEntry("bf", { min: 1, max: 1, labels: ["self-hosted", "bf"] })]);
    await waitFor("a runner", () => listening(fa, "bf") === 1 || undefined);
    const job = await gh.queueJob({ org: "acme", labels: ["bf"], name: "victim", duration: 30 });
    await waitFor("the job to start", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "in_progress"));
    await fa.stop();
    expect((await waitFor("the job's end", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status !== "in_progress"))).status).toBe("lost");
  });

  it("deregisters idle runners before the step stops them, waits for the busy one, then restarts", async () => {
    const { fa, config, sub } = await host("waits", [poolEntry("wt", { min: 3, max: 3, labels: ["self-hosted", "wt"] })]);
    await waitFor("three runners", () => listening(fa, "wt") === 3 || undefined);
    const job = await gh.queueJob({ org: "acme", labels: ["wt"], name: "long-build", duration: 4 });
    await waitFor("the job to start", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "in_progress"));
    const r = await drain(config, ["--timeout-minutes", "1", ...restartStep(sub, fa, config)]);
    expect(r.code, r.stderr).toBe(0);
    const ran = stepTime(sub)!;
    const done = (await gh.jobs()).find((j) => j.id === job.id)!;
    expect(done.status).toBe("completed");
    expect((done as any).finished_at).toBeLessThan(ran);
    const events = await gh.events();
    const dereg = events.filter((e) => e.kind === "deregistered" && e.runner?.startsWith("wt-"));
    expect(dereg).toHaveLength(2); // the two idle ones; the busy one went with its job
    for (const e of dereg) expect(e.time).toBeLessThan(ran);
    expect(events.filter((e) => e.kind === "lost" && e.runner?.startsWith("wt-"))).toEqual([]);
    expect(r.stderr).toMatch(/paused wt/);
    expect(r.stderr).toMatch(/waiting for 1 running job/);
    expect(r.stderr).toMatch(/resumed wt/); // against the restarted daemon
  });

  it("on timeout prints the one line, exits 3, and runs no step; the job goes on", async () => {
    const { fa, config, sub } = await host("timeout", [poolEntry("to", { min: 1, max: 1, labels: ["self-hosted", "to"] })]);
    await waitFor("a runner", () => listening(fa, "to") === 1 || undefined);
    const job = await gh.queueJob({ org: "acme", labels: ["to"], name: "slow", duration: 8 });
    await waitFor("the job to start", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "in_progress"));
    const r = await drain(config, ["--timeout-minutes", "0.02", ...restartStep(sub, fa, config)]);
    expect(r.code).toBe(3);
    expect(r.stderr.trim().split("\n").at(-1)).toBe("fa-test-1: 1 jobs still running after 0.02 minutes; nothing was restarted");
    expect(stepTime(sub)).toBeUndefined();
    expect(fa.proc.exitCode).toBeNull();
    // Nothing happened, so the host goes on serving: its pool is resumed.
    expect(r.stderr).toMatch(/resumed to/);
    expect((await fa.pools())[0].status.state).toBe("Active");
    const done = await waitFor("the job to finish", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status !== "in_progress"), 20_000);
    expect(done.status).toBe("completed");
  });

  it("--proceed-on-timeout runs the step anyway (the job is then killed, as asked)", async () => {
    const { fa, config, sub } = await host("proceed", [poolEntry("pr", { min: 1, max: 1, labels: ["self-hosted", "pr"] })]);
    await waitFor("a runner", () => listening(fa, "pr") === 1 || undefined);
    const job = await gh.queueJob({ org: "acme", labels: ["pr"], name: "sacrificed", duration: 30 });
    await waitFor("the job to start", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "in_progress"));
    const r = await drain(config, ["--timeout-minutes", "0.01", "--proceed-on-timeout", ...restartStep(sub, fa, config)]);
    expect(stepTime(sub)).toBeDefined();
    expect(r.stderr).toMatch(/fa-test-1: 1 jobs still running after 0.01 minutes; proceeding anyway/);
    expect(r.code, r.stderr).toBe(0);
    expect((await waitFor("the job's end", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status !== "in_progress"))).status).toBe("lost");
  });

  it("resumes the pools after a step that leaves fireactions running", async () => {
    const { fa, config } = await host("resume", [poolEntry("rs", { min: 1, max: 1, labels: ["self-hosted", "rs"] })]);
    await waitFor("a runner", () => listening(fa, "rs") === 1 || undefined);
    const r = await drain(config, ["--", "true"]);
    expect(r.code, r.stderr).toBe(0);
    expect((await fa.pools())[0].status.state).toBe("Active");
    // The idle runner was deregistered, so its VM exited and the resumed pool started a new one.
    await waitFor("a fresh runner", () => listening(fa, "rs") === 2 || undefined);
  });

  it("an unreachable fireactions is one clear line, exit 1", async () => {
    const { fa, config } = await host("down", [poolEntry("dn", { labels: ["self-hosted", "dn"] })]);
    await fa.stop();
    const r = await drain(config, ["--", "true"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^runner-fleet-drain: fa-test-1: GET http:\/\/127\.0\.0\.1:\d+\/api\/v1\/pools: .*; nothing was restarted$/m);
  });

  it("sends the rendered config's basic-auth account: fireactions' API asks for it, and the drain works", async () => {
    const { fa, config } = await host("auth", [poolEntry("au", { min: 1, max: 1, labels: ["self-hosted", "au"] })]);
    expect(JSON.parse(readFileSync(config, "utf8")).basic_auth_enabled).toBe(true);
    await waitFor("a runner", () => listening(fa, "au") === 1 || undefined);
    expect((await fa.post("/api/v1/pools/au/pause", false)).status).toBe(401);
    const r = await drain(config, ["--no-resume", "--", "true"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/paused au/);
    expect((await fa.pools())[0].status.state).toBe("Paused");
  });

  it("a password fireactions does not take (401) is one clear line, exit 1, no step, no retries", async () => {
    const { fa, config, sub } = await host("badauth", [poolEntry("ba", { labels: ["self-hosted", "ba"] })]);
    const c = JSON.parse(readFileSync(config, "utf8"));
    const stale = join(sub, "stale.yaml");
    writeFileSync(stale, JSON.stringify({ ...c, basic_auth_users: { "runner-fleet": "not-the-password-0123456789" } }));
    const started = Date.now();
    const r = await drain(stale, ["--", "sh", "-c", `touch ${join(sub, "step-ran")}`]);
    expect(r.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr.trim()).toMatch(/^runner-fleet-drain: fa-test-1: fireactions GET \/pools: 401, the API refused the config's basic-auth password .*; nothing was restarted$/);
    expect(existsSync(join(sub, "step-ran"))).toBe(false);
    expect((await fa.pools())[0].status.state).toBe("Active");
  });

  it("--reload: edits apply in place, new pools start, a removed pool is paused and drained, no job dies", async () => {
    const a = poolEntry("ra", { min: 1, max: 1, labels: ["self-hosted", "ra"] });
    const b = poolEntry("rb", { min: 2, max: 2, labels: ["self-hosted", "rb"] });
    const h = await host("reload", [a, b]);
    await waitFor("runners", () => (listening(h.fa, "ra") === 1 && listening(h.fa, "rb") === 2) || undefined);
    const jobA = await gh.queueJob({ org: "acme", labels: ["ra"], name: "on-a", duration: 4 });
    const jobB = await gh.queueJob({ org: "acme", labels: ["rb"], name: "on-b", duration: 4 });
    await waitFor("both jobs running", async () => (await gh.jobs()).filter((j) => [jobA.id, jobB.id].includes(j.id) && j.status === "in_progress").length === 2 || undefined);

    // The renderer is the step: the drain reads the old config first (the removed pool's org).
    writeFileSync(join(h.sub, "pools-next.json"), JSON.stringify([{ ...a, maxRunners: 2 }, poolEntry("rc", { min: 1, max: 1, labels: ["self-hosted", "rc"] })]));
    const render = ["--", "python3", RENDERER, "--pools", join(h.sub, "pools-next.json"), "--app-id-file", join(h.sub, "github-app-id"),
      "--app-key-file", keys.key, "--out", h.config, "--bind-address", h.bind, "--metrics-address", h.metrics,
      "--api-password-file", apiPasswordFile(h.sub)];
    const r = await drain(h.config, ["--reload", ...render]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/draining removed rb/);
    const pools = Object.fromEntries((await h.fa.pools()).map((p: any) => [p.name, p]));
    expect(pools.ra.max_runners).toBe(2);
    expect(pools.rb.status.state).toBe("Paused");
    await waitFor("the new pool's runner", () => listening(h.fa, "rc") === 1 || undefined);
    const events = await gh.events();
    expect(events.filter((e) => e.kind === "deregistered" && e.runner?.startsWith("rb-"))).toHaveLength(1); // rb's idle runner
    for (const id of [jobA.id, jobB.id]) {
      const j = await waitFor("the job to end", async () => (await gh.jobs()).find((x) => x.id === id && x.status !== "in_progress"), 20_000);
      expect(j.status).toBe("completed");
    }
    // rb is paused: its runners are not replaced, so it empties.
    await waitFor("rb to empty", async () => (Object.fromEntries((await h.fa.pools()).map((p: any) => [p.name, p])).rb.cur_runners === 0) || undefined);
    expect(h.fa.proc.exitCode).toBeNull(); // never restarted
    expect((await jobsOn("rb-")).filter((j) => j.status === "lost")).toEqual([]);
  });
});
