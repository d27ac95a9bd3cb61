// #19 end to end: the real engine deploys the e2e hosts, which run the fireactions v0.4.0
// STAND-IN (test/stand-ins/fireactions) against the GitHub REST STAND-IN on the bridge. Jobs of
// a set length are queued; a job whose runner VM dies mid-job is "lost" (the GitHub stand-in
// sees its renewals stop): that is a killed job. Counts jobs killed per operation, with main's
// behaviour (a fireactions restart, what runner-fleet-apply-pools did) as the "before".
// Operations: a pool edit, a switch that changes the fireactions unit, a reboot wave (the new
// kernel differs from /run/booted-system), another pool's removal from a host, a host's
// removal; a drain that times out fails the wave with its one line and restarts nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { freshHosts, freshStack, env, hostApi, ok, onHost, pulumi, RF, sh, E2E } from "./support";
import { startGitHub, waitFor, FIREACTIONS_STANDIN, type GitHubStandIn, type Job } from "../stand-ins/support";

/** Its own stack (Pulumi.drain.yaml, KV mount ci-drain): nothing of fleet.e2e.ts's `e2e` stack is shared. */
const STACK = "drain";
const HOSTS = { "e2e-fa-1": "10.231.0.11", "e2e-fa-2": "10.231.0.12", "e2e-cache-1": "10.231.0.13" };
const APP_ID = 4242;
const LABELS = ["self-hosted", "fireactions", "linux"];
let gh: GitHubStandIn;
let appKey = "";
let deployed = false;
const killed: Record<string, { before?: number; after?: number }> = {};

const up = () => pulumi(["up", "--yes", "--stack", STACK]);
const jobsDone = (ids: number[]) => waitFor("the jobs to end", async () => {
  const js = (await gh.jobs()).filter((j) => ids.includes(j.id));
  return js.every((j) => j.status === "completed" || j.status === "lost") ? js : undefined;
}, 180_000);
const daemonPid = (host: string) => onHost(host, "cat /run/fireactions-daemon.pid 2>/dev/null").stdout.trim();
/** Stands for a new fireactions package: the stand-in unit's text (test/e2e/stand-ins/lib.sh). */
const UNIT_KNOB = path.join(RF, "fireactions-unit");
const now = () => Date.now() / 1000;
/** When host/systemctl stopped the host's fireactions daemon (and every VM with it), after `since`. */
const stopsAfter = (host: string, since: number) =>
  onHost(host, "cat /var/log/fireactions-stops.log 2>/dev/null").stdout.split("\n").filter(Boolean).map(Number).filter((t) => t > since);
const lost = (job: Job) => waitFor(`${job.name} to be lost`, async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "lost"), 60_000);
/** A daemon other than `pid` serves on `host` (after a restart or reboot). */
const newDaemon = (host: string, pid: string) => waitFor(`${host}'s new fireactions daemon`, () => { const p = daemonPid(host); return p && p !== pid ? p : undefined; }, 90_000);

/** The runner names of `host` (their console logs in the pool directories). */
function runnersOf(host: string): Set<string> {
  const out = onHost(host, "ls /var/lib/fireactions/pools/*/*.log 2>/dev/null").stdout;
  return new Set(out.split("\n").filter(Boolean).map((f) => path.basename(f, ".log")));
}
/**
 * The runners of `host`'s daemon stopped at `t` still registered with GitHub then (online since
 * the stop before, neither deregistered nor gone with their one job): a runner stopped while
 * registered could have taken a job just then. (Runners of a daemon an earlier "before" test
 * killed stay registered in the stand-in: they are not this stop's.)
 */
async function registeredAt(host: string, t: number): Promise<string[]> {
  const names = runnersOf(host);
  const since = Math.max(0, ...stopsAfter(host, 0).filter((s) => s < t));
  const events = (await gh.events()).filter((e) => e.time > since && e.time < t && e.runner && names.has(e.runner));
  const online = new Set(events.filter((e) => e.kind === "online").map((e) => e.runner!));
  for (const e of events) if (e.kind === "deregistered" || e.kind === "removed") online.delete(e.runner!);
  return [...online].sort();
}
/** What the host's switch printed, from the stack's state (the switch step's stdout). */
function switchOutput(host: string): string {
  const doc = JSON.parse(ok(pulumi(["stack", "export", "--stack", STACK])).stdout);
  const res = doc.deployment.resources.find((r: any) => r.urn.endsWith(`::${host}-switch`));
  return String(res?.outputs?.stdout ?? "");
}
/** A job running on `host`: queue until one lands there (the others finish on their own). */
async function runningJobOn(host: string, name: string, duration: number, labels = LABELS): Promise<Job> {
  for (let i = 0; i < 6; i++) {
    const j = await gh.queueJob({ org: "e2e-org", labels, name: `${name}-${i}`, duration });
    const started = await waitFor(`${name} to start`, async () => (await gh.jobs()).find((x) => x.id === j.id && x.status === "in_progress"), 120_000);
    if (hostOf(started) === host) return started;
  }
  throw new Error(`no job of ${name} landed on ${host}`);
}

/** Queue a job and wait until a runner runs it. */
async function runningJob(name: string, duration: number): Promise<Job> {
  const j = await gh.queueJob({ org: "e2e-org", labels: LABELS, name, duration });
  return waitFor(`${name} to start`, async () => (await gh.jobs()).find((x) => x.id === j.id && x.status === "in_progress"), 120_000);
}

beforeAll(async () => {
  freshHosts(HOSTS);
  const dir = path.join(RF, "drain");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const keyFile = path.join(dir, "app-key.pem");
  expect(spawnSync("openssl", ["genrsa", "-out", keyFile, "2048"]).status).toBe(0);
  appKey = fs.readFileSync(keyFile, "utf8").trimEnd();
  gh = await startGitHub({ dir, appId: APP_ID, lostAfter: 3, listen: "10.231.0.1:0" });
  // The hosts run the fireactions stand-in (test/e2e/host/systemctl) and reach GitHub here.
  for (const host of Object.keys(HOSTS)) {
    ok(onHost(host, `printf 'standin=%s\\ngithub_api=%s\\n' '${FIREACTIONS_STANDIN}' '${gh.url}' > /etc/runner-fleet/e2e-fireactions`));
  }
  fs.rmSync(UNIT_KNOB, { force: true });
  freshStack(STACK);
  ok(pulumi(["config", "set", "--secret", "runner-fleet:githubAppPrivateKey", "--stack", STACK], { input: appKey }));
  ok(pulumi(["config", "set", "--secret", "runner-fleet:cacheSigningKey", "--stack", STACK], { input: "e2e-cache-1:drain-e2e" }));
}, 300_000);

afterAll(async () => {
  await gh?.stop();
  if (process.stdout && Object.keys(killed).length) {
    const rows = Object.entries(killed).map(([op, k]) => `  ${op}: before ${k.before ?? "-"}, after ${k.after ?? "-"}`).join("\n");
    process.stdout.write(`\njobs killed per operation:\n${rows}\n`);
    fs.writeFileSync(path.join(RF, "drain-killed.json"), JSON.stringify(killed, null, 2));
  }
  if (process.env.RF_E2E_KEEP !== "1") {
    spawnSync("bash", [path.join(E2E, "openbao.sh"), "stop"]);
    spawnSync("bash", [path.join(E2E, "hosts.sh"), "down"]);
    for (const entry of ["project", "state", "pulumi-home", "drain", "bao", "sudoers", "id_ed25519.pub", "fireactions-unit"]) fs.rmSync(path.join(RF, entry), { recursive: true, force: true });
  }
}, 120_000);

describe("no change to the fleet kills a running job (real engine, fireactions stand-in)", () => {
  it("up deploys; every fireactions host runs its pools' runners against GitHub", async () => {
    const r = up();
    expect(r.status, r.output.slice(-3000)).toBe(0);
    for (const host of ["e2e-fa-1", "e2e-fa-2"]) {
      await waitFor(`${host}'s fireactions daemon`, () => daemonPid(host) || undefined, 90_000);
    }
    await waitFor("runners online", async () => (await gh.events()).filter((e) => e.kind === "online").length >= 3 || undefined, 90_000);
    deployed = true;
  }, 600_000);

  it("before (main's behaviour): restarting fireactions for a pool edit kills the running job", async () => {
    expect(deployed).toBe(true);
    const job = await runningJob("before-pool-edit", 60);
    // What runner-fleet-apply-pools ran on main.
    ok(onHost(hostOf(job), "systemctl restart fireactions.service"));
    await waitFor("the job to be lost", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "lost"), 60_000);
    killed["pool edit"] = { before: 1 };
    // Wait until the restarted daemon serves again.
    await waitFor("fireactions back", () => daemonPid(hostOf(job)) || undefined, 90_000);
  }, 300_000);

  it("after: a pool edit (pulumi up) reloads fireactions; the running job completes, nothing restarts", async () => {
    const pids = { "e2e-fa-1": daemonPid("e2e-fa-1"), "e2e-fa-2": daemonPid("e2e-fa-2") };
    const jobs = [await runningJob("during-pool-edit-1", 45), await runningJob("during-pool-edit-2", 45)];
    ok(pulumi(["config", "set", "--path", "runner-fleet:pools.small.maxRunners", "3", "--stack", STACK]));
    const r = up();
    expect(r.status, r.output.slice(-3000)).toBe(0);
    const done = await jobsDone(jobs.map((j) => j.id));
    killed["pool edit"] = { ...killed["pool edit"], after: done.filter((j) => j.status === "lost").length };
    expect(killed["pool edit"].after).toBe(0);
    expect({ "e2e-fa-1": daemonPid("e2e-fa-1"), "e2e-fa-2": daemonPid("e2e-fa-2") }).toEqual(pids);
    expect(onHost("e2e-fa-1", "cat /var/log/fireactions.log").stdout).toMatch(/runner-fleet-drain: reloaded fireactions/);
  }, 600_000);

  it("before (main's behaviour): the restart activation gives a changed fireactions unit kills the running job", async () => {
    const job = await runningJob("before-unit-switch", 60);
    const host = hostOf(job);
    const pid = daemonPid(host);
    // What switch-to-configuration does to a changed unit without restartIfChanged = false.
    ok(onHost(host, "systemctl restart fireactions.service"));
    await lost(job);
    killed["unit-changing switch"] = { before: 1 };
    await newDaemon(host, pid);
  }, 300_000);

  it("after: a switch that changes the fireactions unit drains (idle runners deregistered first), then restarts it", async () => {
    const job = await runningJob("during-unit-switch", 25);
    const host = hostOf(job);
    const pid = daemonPid(host);
    const t0 = now();
    fs.writeFileSync(UNIT_KNOB, "v2\n");
    ok(pulumi(["config", "set", "--path", `runner-fleet:hosts.${host}.tags[1]`, "unit-v2", "--stack", STACK]));
    const r = up();
    expect(r.status, r.output.slice(-3000)).toBe(0);
    const [done] = await jobsDone([job.id]);
    killed["unit-changing switch"] = { ...killed["unit-changing switch"], after: done.status === "lost" ? 1 : 0 };
    expect(done.status).toBe("completed");
    await newDaemon(host, pid);
    const [stop] = stopsAfter(host, t0);
    expect(stop, "fireactions was restarted").toBeDefined();
    expect((done as any).finished_at).toBeLessThan(stop);
    expect(switchOutput(host)).toMatch(/runner-fleet-restart-changed: fireactions\.service changed: draining, then restarting it/);
    // An idle runner is deregistered before it is stopped: none was still registered at the stop.
    const dereg = (await gh.events()).filter((e) => e.kind === "deregistered" && e.time > t0 && runnersOf(host).has(e.runner!));
    expect(dereg.length).toBeGreaterThan(0);
    for (const e of dereg) expect(e.time).toBeLessThan(stop);
    expect(await registeredAt(host, stop)).toEqual([]);
  }, 600_000);

  it("before (no drain): a reboot kills the running job", async () => {
    const job = await runningJob("before-reboot", 60);
    const host = hostOf(job);
    const pid = daemonPid(host);
    ok(onHost(host, "systemctl reboot"));
    await lost(job);
    killed["reboot wave"] = { before: 1 };
    await newDaemon(host, pid);
  }, 300_000);

  it("after: a switch whose kernel differs from /run/booted-system activates with boot, drains, reboots and waits; the job completes", async () => {
    const job = await runningJob("during-reboot", 25);
    const host = hostOf(job);
    const pid = daemonPid(host);
    // The running boot's kernel is another one than the new system's (initrd and modules the same).
    const old = "/nix/store/11111111111111111111111111111111-nixos-system-old";
    ok(onHost(host, [
      `mkdir -p ${old} /nix/store/11111111111111111111111111111111-old-kernel`,
      "touch /nix/store/11111111111111111111111111111111-old-kernel/bzImage",
      `ln -sfn /nix/store/11111111111111111111111111111111-old-kernel/bzImage ${old}/kernel`,
      // lib.sh STANDIN_KERNEL_LINKS: what every stand-in system links, the new one included.
      `ln -sfn /nix/store/00000000000000000000000000000000-stand-in-initrd/initrd ${old}/initrd`,
      `ln -sfn /nix/store/00000000000000000000000000000000-stand-in-modules ${old}/kernel-modules`,
      `ln -sfn ${old} /run/booted-system`,
    ].join(" && ")));
    const t0 = now();
    ok(pulumi(["config", "set", "--path", `runner-fleet:hosts.${host}.tags[1]`, "reboot", "--stack", STACK]));
    const r = up();
    expect(r.status, r.output.slice(-3000)).toBe(0);
    const [done] = await jobsDone([job.id]);
    killed["reboot wave"] = { ...killed["reboot wave"], after: done.status === "lost" ? 1 : 0 };
    expect(done.status).toBe("completed");
    const out = switchOutput(host);
    expect(out).toContain(`${host}: reboots: its kernel differ from /run/booted-system`);
    const booted = onHost(host, "readlink -f /run/booted-system").stdout.trim();
    expect(out).toContain(`${host}: rebooted into ${booted}`);
    expect(booted).not.toBe(old);
    expect(onHost(host, "readlink -f /nix/var/nix/profiles/system").stdout.trim()).toBe(booted);
    const [stop] = stopsAfter(host, t0);
    expect((done as any).finished_at).toBeLessThan(stop);
    expect(await registeredAt(host, stop)).toEqual([]);
    expect(onHost(host, "cat /var/log/activation.log").stdout).toMatch(new RegExp(`boot: ${booted} is the next boot's system`));
    await newDaemon(host, pid);
  }, 600_000);

  it("a drain that times out fails the wave with its one line and restarts nothing; the job completes", async () => {
    // The new timeout reaches every host's switch command first (none restarts anything).
    ok(pulumi(["config", "set", "--path", "runner-fleet:deploy.drainTimeoutMinutes", "1", "--stack", STACK]));
    const first = up();
    expect(first.status, first.output.slice(-3000)).toBe(0);
    const job = await runningJob("outlasts-the-drain", 150);
    const host = hostOf(job);
    const pid = daemonPid(host);
    const t0 = now();
    fs.writeFileSync(UNIT_KNOB, "v3\n");
    ok(pulumi(["config", "set", "--path", `runner-fleet:hosts.${host}.tags[1]`, "unit-v3", "--stack", STACK]));
    const r = up();
    expect(r.status).not.toBe(0);
    expect(r.output).toContain(`${host}: 1 jobs still running after 1 minutes; nothing was restarted`);
    expect(daemonPid(host)).toBe(pid);
    expect(stopsAfter(host, t0)).toEqual([]);
    const [done] = await jobsDone([job.id]);
    expect(done.status).toBe("completed");
    killed["drain timeout"] = { after: done.status === "lost" ? 1 : 0 };
    // Once the job is done the same up goes through (it drains, then restarts fireactions).
    const again = up();
    expect(again.status, again.output.slice(-3000)).toBe(0);
    await newDaemon(host, pid);
  }, 900_000);

  it("before (main's behaviour): removing a pool from a host restarts fireactions, killing both pools' jobs", async () => {
    const small = await runningJobOn("e2e-fa-1", "before-pool-removal-small", 60);
    const medium = await runningJobOn("e2e-fa-1", "before-pool-removal-medium", 60, ["self-hosted", "medium"]);
    const pid = daemonPid("e2e-fa-1");
    ok(onHost("e2e-fa-1", "systemctl restart fireactions.service"));
    await lost(small);
    await lost(medium);
    killed["pool removal (other pool's job)"] = { before: 1 };
    killed["pool removal (removed pool's job)"] = { before: 1 };
    await newDaemon("e2e-fa-1", pid);
  }, 600_000);

  it("after: removing medium from e2e-fa-1 pauses and drains it; small's job and medium's running job both complete", async () => {
    const small = await runningJobOn("e2e-fa-1", "during-pool-removal-small", 30);
    const medium = await runningJobOn("e2e-fa-1", "during-pool-removal-medium", 30, ["self-hosted", "medium"]);
    const pid = daemonPid("e2e-fa-1");
    const t0 = now();
    ok(pulumi(["config", "rm", "--path", "runner-fleet:hosts.e2e-fa-1.pools[1]", "--stack", STACK]));
    const r = up();
    expect(r.status, r.output.slice(-3000)).toBe(0);
    const done = await jobsDone([small.id, medium.id]);
    const byId = Object.fromEntries(done.map((j) => [j.id, j.status]));
    killed["pool removal (other pool's job)"] = { ...killed["pool removal (other pool's job)"], after: byId[small.id] === "lost" ? 1 : 0 };
    killed["pool removal (removed pool's job)"] = { ...killed["pool removal (removed pool's job)"], after: byId[medium.id] === "lost" ? 1 : 0 };
    expect(byId).toEqual({ [small.id]: "completed", [medium.id]: "completed" });
    expect(daemonPid("e2e-fa-1")).toBe(pid);
    expect(stopsAfter("e2e-fa-1", t0)).toEqual([]);
    const pools = Object.fromEntries(JSON.parse(ok(hostApi("e2e-fa-1", "GET", "http://127.0.0.1:8080/api/v1/pools")).stdout).pools.map((p: any) => [p.name, p]));
    expect(pools.small.status.state).toBe("Active");
    expect(Object.keys(pools)).toEqual(expect.arrayContaining(["small"]));
    if (pools.medium) expect(pools.medium.status.state).toBe("Paused");
    expect(onHost("e2e-fa-1", "cat /var/log/fireactions.log").stdout).toMatch(/runner-fleet-drain: reloaded fireactions: small; draining removed medium/);
  }, 600_000);

  it("removing a host waits for its running job, then deletes it", async () => {
    const job = await runningJob("during-removal", 30);
    const host = hostOf(job);
    ok(pulumi(["config", "rm", "--path", `runner-fleet:hosts.${host}`, "--stack", STACK]));
    const r = up();
    const upEnded = Date.now() / 1000;
    expect(r.status, r.output.slice(-3000)).toBe(0);
    const [done] = await jobsDone([job.id]);
    killed["host removal"] = { after: done.status === "lost" ? 1 : 0 };
    expect(done.status).toBe("completed");
    // The removal waited for it: the job ended before the up that removed its host did.
    expect((done as any).finished_at).toBeLessThan(upEnded);
    // And the host is drained and left paused: nothing new starts there.
    const pools = JSON.parse(ok(hostApi(host, "GET", "http://127.0.0.1:8080/api/v1/pools")).stdout).pools;
    expect(pools.every((p: any) => p.status.state === "Paused")).toBe(true);
  }, 600_000);

  it("a deploy-rs that rolls back and exits 0 fails the wave with both paths", () => {
    // A new inventory entry for e2e-cache-1, so its switch runs again.
    ok(pulumi(["config", "set", "--path", "runner-fleet:hosts.e2e-cache-1.tags[1]", "rolled", "--stack", STACK]));
    const r = sh("pulumi", ["up", "--yes", "--stack", STACK, "--non-interactive"], { env: env({ RF_E2E_DEPLOY_ROLLS_BACK: "1" }) });
    expect(r.status).not.toBe(0);
    expect(r.output).toMatch(/e2e-cache-1: \/run\/current-system is \/nix\/store\/[0-9a-f]{32}-nixos-system-e2e-cache-1, not the system it was given \(\/nix\/store\/[0-9a-f]{32}-nixos-system-e2e-cache-1\): the deploy did not take/);
  }, 600_000);
});

/** Which host runs a job's runner: the host whose pool directory has its console log. */
function hostOf(job: Job): string {
  for (const host of ["e2e-fa-1", "e2e-fa-2"]) {
    if (onHost(host, `ls /var/lib/fireactions/pools/*/${job.runner}.log 2>/dev/null`).stdout.trim()) return host;
  }
  throw new Error(`no host runs ${job.runner}`);
}
