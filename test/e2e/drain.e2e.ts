// #19 end to end: the real engine deploys the e2e hosts, which run the fireactions v0.4.0
// STAND-IN (test/stand-ins/fireactions) against the GitHub REST STAND-IN on the bridge. Jobs of
// a set length are queued; a job whose runner VM dies mid-job is "lost" (the GitHub stand-in
// sees its renewals stop): that is a killed job. Counts jobs killed per operation, with main's
// behaviour (a fireactions restart, what runner-fleet-apply-pools did) as the "before".
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { env, hostsSh, makeProject, ok, onHost, openbaoSh, pulumi, RF, sh, STATE, E2E } from "./support";
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

/** Queue a job and wait until a runner of `host` runs it. */
async function runningJob(host: string, name: string, duration: number): Promise<Job> {
  const j = await gh.queueJob({ org: "e2e-org", labels: LABELS, name, duration });
  return waitFor(`${name} to start on ${host}`, async () => (await gh.jobs()).find((x) => x.id === j.id && x.status === "in_progress"), 120_000);
}

beforeAll(async () => {
  expect(process.getuid?.()).toBe(0);
  openbaoSh(["stop"]);
  hostsSh(["up", ...Object.entries(HOSTS).map(([h, a]) => `${h}=${a}`)]);
  openbaoSh(["start"]);
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
  fs.rmSync(STATE, { recursive: true, force: true });
  fs.rmSync(path.join(RF, "pulumi-home"), { recursive: true, force: true });
  fs.mkdirSync(STATE, { recursive: true });
  makeProject([STACK]);
  ok(pulumi(["login", `file://${STATE}`]));
  ok(pulumi(["stack", "init", STACK]));
  ok(pulumi(["config", "set", "--secret", "runner-fleet:githubAppPrivateKey", "--stack", STACK], { input: appKey }));
  ok(pulumi(["config", "set", "--secret", "runner-fleet:cacheSigningKey", "--stack", STACK], { input: "e2e-cache-1:drain-e2e" }));
  ok(pulumi(["config", "set", "--path", "runner-fleet:ssh.authorizedKeys[0]", fs.readFileSync(path.join(RF, "id_ed25519.pub"), "utf8").trim(), "--stack", STACK]));
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
    for (const entry of ["project", "state", "pulumi-home", "drain", "bao", "sudoers", "id_ed25519.pub"]) fs.rmSync(path.join(RF, entry), { recursive: true, force: true });
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
    const job = await runningJob("e2e-fa-1", "before-pool-edit", 60);
    // What runner-fleet-apply-pools ran on main.
    ok(onHost(hostOf(job), "systemctl restart fireactions.service"));
    await waitFor("the job to be lost", async () => (await gh.jobs()).find((j) => j.id === job.id && j.status === "lost"), 60_000);
    killed["pool edit"] = { before: 1 };
    // Wait until the restarted daemon serves again.
    await waitFor("fireactions back", () => daemonPid(hostOf(job)) || undefined, 90_000);
  }, 300_000);

  it("after: a pool edit (pulumi up) reloads fireactions; the running job completes, nothing restarts", async () => {
    const pids = { "e2e-fa-1": daemonPid("e2e-fa-1"), "e2e-fa-2": daemonPid("e2e-fa-2") };
    const jobs = [await runningJob("any", "during-pool-edit-1", 45), await runningJob("any", "during-pool-edit-2", 45)];
    ok(pulumi(["config", "set", "--path", "runner-fleet:pools.small.maxRunners", "3", "--stack", STACK]));
    const r = up();
    expect(r.status, r.output.slice(-3000)).toBe(0);
    const done = await jobsDone(jobs.map((j) => j.id));
    killed["pool edit"].after = done.filter((j) => j.status === "lost").length;
    expect(killed["pool edit"].after).toBe(0);
    expect({ "e2e-fa-1": daemonPid("e2e-fa-1"), "e2e-fa-2": daemonPid("e2e-fa-2") }).toEqual(pids);
    expect(onHost("e2e-fa-1", "cat /var/log/fireactions.log").stdout).toMatch(/runner-fleet-drain: reloaded fireactions/);
  }, 600_000);

  it("removing a host waits for its running job, then deletes it", async () => {
    const job = await runningJob("e2e-fa-2", "during-removal", 30);
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
    const pools = JSON.parse(onHost(host, "curl -s http://127.0.0.1:8080/api/v1/pools || python3 -c 'import urllib.request;print(urllib.request.urlopen(\"http://127.0.0.1:8080/api/v1/pools\").read().decode())'").stdout).pools;
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
