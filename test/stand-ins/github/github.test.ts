// The GitHub REST STAND-IN (README.md here) on loopback: App authentication, the runner
// endpoints (list, get, delete, generate-jitconfig) with GitHub's documented answers, and the
// test-only job queue with lost-job detection.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createSign } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { appKeyPair, sleep, startGitHub, waitFor, type GitHubStandIn } from "../support";

let dir = "";
let gh: GitHubStandIn;
let keyPem = "";
const APP_ID = 4242;

const b64url = (s: string | Buffer) => Buffer.from(s).toString("base64url");
function appJwt(iss: number | string = APP_ID, key = keyPem): string {
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64url(JSON.stringify({ alg: "RS256", typ: "JWT" }))}.${b64url(JSON.stringify({ iat: now - 30, exp: now + 300, iss: String(iss) }))}`;
  return `${input}.${createSign("RSA-SHA256").update(input).sign(key).toString("base64url")}`;
}

async function call(method: string, path: string, token?: string, body?: unknown) {
  const r = await fetch(`${gh.url}${path}`, {
    method,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : undefined };
}

async function installationToken(org = "acme"): Promise<string> {
  const jwt = appJwt();
  const inst = await call("GET", `/orgs/${org}/installation`, jwt);
  expect(inst.status).toBe(200);
  const tok = await call("POST", `/app/installations/${inst.body.id}/access_tokens`, jwt);
  expect(tok.status).toBe(201);
  return tok.body.token;
}

async function jitRunner(token: string, name: string, labels = ["self-hosted", "small"]) {
  const r = await call("POST", "/orgs/acme/actions/runners/generate-jitconfig", token, { name, runner_group_id: 1, labels });
  expect(r.status).toBe(201);
  return r.body as { runner: { id: number; name: string }; encoded_jit_config: string };
}

const runnerCall = (what: string, jit: string, extra: object = {}) => call("POST", `/_standin/runner/${what}`, undefined, { jit_config: jit, ...extra });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "gh-standin-"));
  const keys = appKeyPair(dir);
  keyPem = readFileSync(keys.key, "utf8");
  gh = await startGitHub({ dir, appId: APP_ID, publicKeyFile: keys.pub, lostAfter: 1 });
});
afterAll(async () => {
  await gh?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("GitHub stand-in: App authentication", () => {
  it("refuses a missing JWT, a wrong iss and a signature by another key", async () => {
    expect((await call("GET", "/orgs/acme/installation")).status).toBe(401);
    expect((await call("GET", "/orgs/acme/installation", appJwt(1))).status).toBe(401);
    const other = readFileSync(appKeyPair(join(dir, "other")).key, "utf8");
    expect((await call("GET", "/orgs/acme/installation", appJwt(APP_ID, other))).status).toBe(401);
  });

  it("org endpoints take only an installation token of that org", async () => {
    expect((await call("GET", "/orgs/acme/actions/runners", appJwt())).status).toBe(401);
    const token = await installationToken("other-org");
    expect((await call("GET", "/orgs/acme/actions/runners", token)).status).toBe(401);
    expect((await call("GET", "/orgs/other-org/actions/runners", token)).status).toBe(200);
  });
});

describe("GitHub stand-in: runners", () => {
  it("lists, gets and filters by name a JIT-registered runner", async () => {
    const token = await installationToken();
    const { runner, encoded_jit_config } = await jitRunner(token, "small-list");
    expect(encoded_jit_config.length).toBeGreaterThan(10);
    const list = await call("GET", "/orgs/acme/actions/runners?name=small-list", token);
    expect(list.body.total_count).toBe(1);
    expect(list.body.runners[0]).toMatchObject({ id: runner.id, name: "small-list", status: "offline", busy: false });
    expect(list.body.runners[0].labels.map((l: any) => l.name)).toEqual(["self-hosted", "small"]);
    expect((await call("GET", `/orgs/acme/actions/runners/${runner.id}`, token)).body.name).toBe("small-list");
    expect((await call("GET", "/orgs/acme/actions/runners/999999", token)).status).toBe(404);
    expect((await call("POST", "/orgs/acme/actions/runners/generate-jitconfig", token, { name: "small-list", labels: ["x"] })).status).toBe(409);
  });

  it("deletes an idle runner (204) and refuses a busy one with GitHub's 422", async () => {
    const token = await installationToken();
    const idle = await jitRunner(token, "small-idle");
    expect((await runnerCall("connect", idle.encoded_jit_config)).status).toBe(200);
    expect((await call("DELETE", `/orgs/acme/actions/runners/${idle.runner.id}`, token)).status).toBe(204);
    expect((await call("DELETE", `/orgs/acme/actions/runners/${idle.runner.id}`, token)).status).toBe(404);
    // The deleted runner's next poll is refused: it is no longer registered.
    expect((await runnerCall("acquire", idle.encoded_jit_config)).status).toBe(404);

    const busy = await jitRunner(token, "small-busy", ["self-hosted", "busy-label"]);
    await gh.queueJob({ org: "acme", labels: ["busy-label"], name: "long", duration: 30 });
    const job = await runnerCall("acquire", busy.encoded_jit_config);
    expect(job.status).toBe(200);
    expect((await call("GET", `/orgs/acme/actions/runners/${busy.runner.id}`, token)).body).toMatchObject({ busy: true, status: "online" });
    const refused = await call("DELETE", `/orgs/acme/actions/runners/${busy.runner.id}`, token);
    expect(refused.status).toBe(422);
    expect(refused.body.message).toBe("Validation Failed");
    expect((await call("GET", `/orgs/acme/actions/runners/${busy.runner.id}`, token)).status).toBe(200);
  });
});

describe("GitHub stand-in: job queue", () => {
  it("gives a queued job to a runner with all its labels, completes it and drops the ephemeral runner", async () => {
    const token = await installationToken();
    const r = await jitRunner(token, "small-job", ["self-hosted", "q1"]);
    const other = await jitRunner(token, "small-other", ["self-hosted", "q2"]);
    const queued = await gh.queueJob({ org: "acme", labels: ["self-hosted", "q1"], name: "build", duration: 5 });
    expect((await runnerCall("acquire", other.encoded_jit_config)).status).toBe(204);
    const got = await runnerCall("acquire", r.encoded_jit_config);
    expect(got.body).toMatchObject({ id: queued.id, name: "build", duration: 5, status: "in_progress", runner: "small-job" });
    expect((await runnerCall("complete", r.encoded_jit_config, { result: "Succeeded" })).status).toBe(200);
    const job = (await gh.jobs()).find((j) => j.id === queued.id)!;
    expect(job).toMatchObject({ status: "completed", result: "Succeeded", runner: "small-job" });
    expect((await call("GET", `/orgs/acme/actions/runners/${r.runner.id}`, token)).status).toBe(404);
  });

  it("marks a job lost when its runner stops renewing it", async () => {
    const token = await installationToken();
    const r = await jitRunner(token, "small-lost", ["self-hosted", "q3"]);
    const queued = await gh.queueJob({ org: "acme", labels: ["q3"], name: "doomed", duration: 60 });
    await runnerCall("acquire", r.encoded_jit_config);
    await runnerCall("heartbeat", r.encoded_jit_config);
    await sleep(300);
    expect((await gh.jobs()).find((j) => j.id === queued.id)!.status).toBe("in_progress");
    const lost = await waitFor("the job to be lost", async () => (await gh.jobs()).find((j) => j.id === queued.id && j.status === "lost"), 5000);
    expect(lost.runner).toBe("small-lost");
    expect((await gh.events()).some((e) => e.kind === "lost" && e.job === queued.id)).toBe(true);
  });
});
