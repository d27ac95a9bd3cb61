/**
 * The real engine, end to end (issue 12): the Pulumi CLI, its Node.js language host and the
 * command and vault providers built by `npm run engine`, OpenBao, and three SSH test hosts in
 * network namespaces. deploy-rs, colmena and nixos-anywhere are stand-ins (test/e2e/README.md).
 *
 * The tests run in order and share one stack: each step starts from the state the one
 * before left. Steps are the README's: login, stack init, config set, preview, up, a pool
 * edit, a host removed, destroy.
 */
import { randomBytes } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freshHosts, freshStack, HOSTS, MOUNT, RF, STACK, STATE,
  bao, baoJson, deployedHost, filesUnder, hostFile, hostsSh, ok, onHost, openbaoSh, plan, pulumi,
  pulumiAsync, sh, standinCalls, transcript, waitFor,
} from "./support";

const VAULT_ON_BRIDGE = "https://10.231.0.1:8200";
// runner-fleet.<stack>.<host> for both (#24 item 14); STACK has no capital nor `_` to escape.
const POLICY = (host: string) => `runner-fleet.${STACK}.${host}`;
const ROLE = (host: string) => `runner-fleet.${STACK}.${host}`;

// Canary secrets: their values must never show up outside Vault and the hosts' /run/secrets.
const tag = randomBytes(6).toString("hex");
const APP_KEY_CANARY = `E2E-CANARY-APPKEY-${tag}`;
// No trailing newline: `pulumi config set` drops it from a value read on stdin.
const APP_KEY = `-----BEGIN PRIVATE KEY-----\n${APP_KEY_CANARY}\n-----END PRIVATE KEY-----`;
const CACHE_KEY = `e2e-cache-1:E2E-CANARY-CACHEKEY-${tag}`;
const GITLAB_TOKEN = `glrt-E2E-CANARY-GITLAB-${tag}`;
const CACHE_KEY_2 = `e2e-cache-1:E2E-CANARY-CACHEKEY2-${tag}`;
/** Secret values read back from Vault (the generated Forgejo tokens), searched for too. */
const generated: string[] = [];
/** State snapshots and `pulumi stack export` outputs taken along the way. */
const exports: string[] = [];

let psSampler: ChildProcess | undefined;
/** Set once the first `up` has passed: every later step builds on it and is skipped without it. */
let deployed = false;
type Ctx = { skip: (note?: string) => void };
const needsUp = (ctx: Ctx) => { if (!deployed) ctx.skip("the first pulumi up did not pass"); };
const timings: Array<[string, number]> = [];

function up(extra: string[] = []) {
  const r = pulumi(["up", "--yes", "--stack", STACK, ...extra]);
  timings.push([`up ${extra.join(" ")}`.trim(), r.seconds]);
  snapshot();
  return r;
}

/** `pulumi stack export` and the state files as they are now. */
function snapshot() {
  exports.push(ok(pulumi(["stack", "export", "--stack", STACK])).stdout);
  for (const f of filesUnder(STATE)) exports.push(fs.readFileSync(f).toString("latin1"));
}

interface Step { op: string; urn: string; diffReasons?: string[] }
function previewSteps(extra: string[] = []): { steps: Step[]; run: ReturnType<typeof pulumi> } {
  const run = ok(pulumi(["preview", "--stack", STACK, "--json", ...extra]));
  const doc = JSON.parse(run.stdout) as { steps?: Step[] };
  return { steps: doc.steps ?? [], run };
}
const nameOf = (urn: string) => urn.split("::").pop()!;
const typeOf = (urn: string) => urn.split("::")[2].split("$").pop()!;
/** type::name of every step that changes something, sorted. */
function changes(steps: Step[]): string[] {
  return steps.filter((s) => s.op !== "same").map((s) => `${s.op} ${typeOf(s.urn)}::${nameOf(s.urn)}`).sort();
}

function stateResources(): Array<{ urn: string; type: string }> {
  const doc = JSON.parse(ok(pulumi(["stack", "export", "--stack", STACK])).stdout);
  return doc.deployment.resources ?? [];
}

function policies(): string[] {
  return baoJson<string[]>(["policy", "list"]).filter((p) => p.startsWith(`runner-fleet.${STACK}.`)).sort();
}
function roles(): string[] {
  const r = bao(["list", "-format=json", "auth/approle/role"]);
  return r.status === 0 ? (JSON.parse(r.stdout) as string[]).sort() : [];
}
function kvData(name: string): Record<string, string> | undefined {
  const r = bao(["kv", "get", "-format=json", `-mount=${MOUNT}`, name]);
  return r.status === 0 ? JSON.parse(r.stdout).data.data : undefined;
}

/** Logs in on the host with its AppRole (as vault-agent does) and reads a KV path with that token. */
function readAsHost(host: string, kvName: string): { status: number; output: string } {
  const script = [
    "set -e",
    "export VAULT_ADDR=" + VAULT_ON_BRIDGE,
    "token=$(vault write -field=token auth/approle/login role_id=@/etc/runner-fleet/vault/role-id secret_id=@/var/lib/runner-fleet/vault/secret-id)",
    `VAULT_TOKEN=$token vault kv get -mount=${MOUNT} -format=json ${kvName} >/dev/null`,
  ].join("\n");
  const r = onHost(host, script);
  return { status: r.status, output: r.output };
}

const appHosts = ["e2e-fa-1", "e2e-fa-2"];
/** KV names each host reads (vault-paths.ts). */
const ownSecrets: Record<string, string[]> = {
  "e2e-fa-1": ["shared/github-app/e2e-org", "hosts/e2e-fa-1/gitlab-runner"],
  "e2e-fa-2": ["shared/github-app/e2e-org", "hosts/e2e-fa-2/forgejo-runner"],
  "e2e-cache-1": ["hosts/e2e-cache-1/forgejo-runner", "hosts/e2e-cache-1/cache"],
};
const foreignSecret: Record<string, string> = {
  "e2e-fa-1": "hosts/e2e-cache-1/cache",
  "e2e-fa-2": "hosts/e2e-cache-1/forgejo-runner",
  "e2e-cache-1": "hosts/e2e-fa-2/forgejo-runner",
};

beforeAll(() => {
  freshHosts(HOSTS);
  freshStack(STACK);
  // Every process's command line, sampled all run long (the canary test searches it).
  // The hosts share the machine's process table, so this covers their process lists too.
  psSampler = spawn("sh", ["-c", `while :; do ps -eww -o args=; sleep 0.2; done | awk '!seen[$0]++ { print; fflush() }' > ${RF}/ps.log`], { stdio: "ignore", detached: true });

  // The README's real-use steps go on (freshStack logged in to a file:// backend and made the stack).
  ok(pulumi(["config", "set", "--secret", "runner-fleet:githubAppPrivateKey", "--stack", STACK], { input: APP_KEY }));
  ok(pulumi(["config", "set", "--secret", "runner-fleet:cacheSigningKey", "--stack", STACK], { input: CACHE_KEY }));
  ok(pulumi(["config", "set", "--secret", "runner-fleet:gitlabRunnerToken", "--stack", STACK], { input: GITLAB_TOKEN }));
}, 300_000);

afterAll(() => {
  // The sampler's own process group: sh, its loop and awk.
  if (psSampler?.pid) process.kill(-psSampler.pid);
  const report = timings.map(([what, s]) => `  ${what}: ${s.toFixed(1)} s`).join("\n");
  if (report) process.stdout.write(`\npulumi timings:\n${report}\n`);
  if (process.env.RF_E2E_KEEP !== "1") {
    sh("bash", [path.join(__dirname, "openbao.sh"), "stop"]);
    sh("bash", [path.join(__dirname, "hosts.sh"), "down"]);
    // What this suite made there (RF_E2E_DIR may name a directory that holds other things too).
    for (const entry of ["bao", "project", "state", "pulumi-home", "plan", "plan-edit", "ps.log", "stand-ins.log", "sudoers", "id_ed25519.pub"]) {
      fs.rmSync(path.join(RF, entry), { recursive: true, force: true });
    }
    try { fs.rmdirSync(RF); } catch { /* not empty: not ours alone */ }
  }
}, 120_000);

describe("a fleet of existing machines, with the real engine", () => {
  let plannedResources: string[] = [];

  it("a fresh preview lists the plan's resources as creates and exits 0", () => {
    const planned = plan(path.join(RF, "plan"));
    plannedResources = planned.resources.filter((r) => !r.type.startsWith("pulumi:providers:")).map((r) => `create ${r.type}::${r.name}`).sort();
    const { steps } = previewSteps();
    const creates = changes(steps).filter((c) => !c.includes("pulumi:providers:") && !c.includes("pulumi:pulumi:Stack"));
    expect(creates).toEqual(plannedResources);
    expect(creates).toContain("create command:remote:Command::e2e-fa-1-seed");
    expect(creates).toContain("create vault:index/policy:Policy::e2e-cache-1-policy");
  });

  it("pulumi up --yes creates everything", () => {
    const r = ok(up());
    expect(r.output).toMatch(/Resources:\s*\n\s*\+ \d+ created/);
    const inState = stateResources().map((r) => `create ${typeOf(r.urn)}::${nameOf(r.urn)}`)
      .filter((c) => !c.includes("pulumi:providers:") && !c.includes("pulumi:pulumi:Stack")).sort();
    expect(inState).toEqual(plannedResources);
    deployed = true;
  });

  it("OpenBao holds the KV v2 secrets at the documented paths, one policy and one AppRole per host", (ctx) => {
    needsUp(ctx);
    for (const host of ["e2e-fa-2", "e2e-cache-1"]) {
      const token = kvData(`hosts/${host}/forgejo-runner`)?.token;
      if (token) generated.push(token);
      expect(token).toMatch(/^[0-9a-f]{40}$/);
    }
    expect(kvData("shared/github-app/e2e-org")).toEqual({ app_id: "4242", private_key: APP_KEY });
    expect(kvData("hosts/e2e-cache-1/cache")).toEqual({ signing_key: CACHE_KEY });
    expect(kvData("hosts/e2e-fa-1/gitlab-runner")).toEqual({ token: GITLAB_TOKEN });
    const mount = baoJson<Record<string, { type: string; options: Record<string, string> }>>(["secrets", "list"])[`${MOUNT}/`];
    expect(mount.type).toBe("kv");
    expect(mount.options.version).toBe("2");
    expect(policies()).toEqual(Object.keys(HOSTS).map(POLICY).sort());
    expect(roles()).toEqual(Object.keys(HOSTS).map(ROLE).sort());
    const policy = ok(bao(["policy", "read", POLICY("e2e-fa-2")])).stdout;
    expect(policy).toContain(`path "${MOUNT}/data/hosts/e2e-fa-2/forgejo-runner"`);
    expect(policy).not.toContain("e2e-cache-1");
    expect(policy).not.toContain("gitlab-runner");
    expect(ok(bao(["policy", "read", POLICY("e2e-fa-1")])).stdout).toContain(`path "${MOUNT}/data/hosts/e2e-fa-1/gitlab-runner"`);
  });

  describe.each(Object.keys(HOSTS))("on host %s", (host) => {
    it("runner-fleet-seed wrote its files", (ctx) => {
      needsUp(ctx);
      const facts = JSON.parse(hostFile(host, "/etc/runner-fleet/host.json") ?? "null");
      expect(facts).toMatchObject({ name: host, stack: STACK, provider: "existing", vault: { address: VAULT_ON_BRIDGE, mount: MOUNT } });
      const roleId = baoJson<{ data: { role_id: string } }>(["read"], [`auth/approle/role/${ROLE(host)}/role-id`]).data.role_id;
      expect(hostFile(host, "/etc/runner-fleet/vault/role-id")).toBe(roleId);
      const modes = ok(onHost(host, "stat -c '%n %a %U' /etc/runner-fleet/host.json /etc/runner-fleet/pools.json /etc/runner-fleet/vault/role-id")).stdout;
      expect(modes).toBe("/etc/runner-fleet/host.json 644 root\n/etc/runner-fleet/pools.json 644 root\n/etc/runner-fleet/vault/role-id 600 root\n");
    });

    it("sudo gives the deploy user exactly nix/'s rules and nothing else", (ctx) => {
      needsUp(ctx);
      // sudo -l wraps long lines: compare with runs of whitespace as one space.
      const listed = ok(onHost(host, "su deploy -c 'sudo -n -l'")).stdout.replace(/\s+/g, " ");
      const rendered = fs.readFileSync(path.join(RF, "sudoers"), "utf8").split("NOPASSWD: ").slice(1).map((c) => c.replace(/,\s*$/, "").trim());
      for (const command of rendered) expect(listed).toContain(command);
      const other = onHost(host, "su deploy -c 'sudo -n /bin/true'");
      expect(other.status).not.toBe(0);
      expect(other.output).toMatch(/password is required|not allowed/);
    });

    it("the wrapped secret_id was unwrapped", (ctx) => {
      needsUp(ctx);
      const r = ok(onHost(host, "stat -c '%a %s' /var/lib/runner-fleet/vault/secret-id; test ! -e /etc/runner-fleet/vault/wrapped-secret-id && echo spent"));
      expect(r.stdout).toMatch(/^600 [1-9]\d*\nspent\n$/);
    });

    it("its token reads its own secrets and is denied another host's", (ctx) => {
      needsUp(ctx);
      for (const name of ownSecrets[host]) {
        const own = readAsHost(host, name);
        expect(own.status, own.output).toBe(0);
      }
      const other = readAsHost(host, foreignSecret[host]);
      expect(other.status).not.toBe(0);
      expect(other.output).toMatch(/permission denied/i);
    });

    it("vault-agent rendered the secret files its roles need", async (ctx) => {
      needsUp(ctx);
      const expected: Record<string, string> = {};
      if (appHosts.includes(host)) Object.assign(expected, { "/run/secrets/github-app-id": "4242", "/run/secrets/github-app-key.pem": APP_KEY });
      if (host === "e2e-cache-1") expected["/run/secrets/cache-signing-key"] = CACHE_KEY;
      // The gitlab-runner role's token file, in the env format nixpkgs' module sources (README).
      if (host === "e2e-fa-1") expected["/run/secrets/gitlab-runner-token"] = `CI_SERVER_TOKEN=${GITLAB_TOKEN}\n`;
      if (host !== "e2e-fa-1") expected["/run/secrets/forgejo-runner-token"] = `TOKEN=${kvData(`hosts/${host}/forgejo-runner`)!.token}\n`;
      for (const [file, content] of Object.entries(expected)) {
        await waitFor(`${file} on ${host}`, () => hostFile(host, file) === content, 60);
      }
      const listing = ok(onHost(host, "ls /run/secrets")).stdout.split("\n").filter(Boolean).map((f) => `/run/secrets/${f}`).sort();
      expect(listing).toEqual(Object.keys(expected).sort());
    });

    it("published its SSH host key to Vault, where its policy lets it write (when its bootstrap does)", (ctx) => {
      needsUp(ctx);
      const bootstrap = hostFile(host, "/run/current-system/sw/bin/runner-fleet-bootstrap") ?? "";
      if (!bootstrap.includes("ssh-host-key")) ctx.skip("this nix/modules/bootstrap.nix does not publish the host key");
      const published = kvData(`hosts/${host}/ssh-host-key`)?.public_key;
      const own = hostFile(host, "/etc/ssh/ssh_host_ed25519_key.pub")!.split(" ").slice(0, 2).join(" ");
      expect(published).toBe(own);
    });

    it("its pools.json equals the plan's", (ctx) => {
      needsUp(ctx);
      expect(hostFile(host, "/etc/runner-fleet/pools.json")).toBe(fs.readFileSync(path.join(RF, "plan", "hosts", host, "pools.json"), "utf8"));
    });
  });

  it("the fireactions config is rendered from pools.json and the App secrets", async (ctx) => {
    needsUp(ctx);
    for (const host of appHosts) {
      const config = await waitFor(`fireactions config on ${host}`, () => hostFile(host, "/run/fireactions/config.yaml"), 60);
      const pools = JSON.parse(hostFile(host, "/etc/runner-fleet/pools.json")!) as Array<{ name: string }>;
      for (const p of pools) expect(config).toContain(`"${p.name}"`);
    }
  });

  it("a second pulumi up changes nothing", (ctx) => {
    needsUp(ctx);
    ok(pulumi(["preview", "--stack", STACK, "--expect-no-changes"]));
    const before = standinCalls().length;
    ok(up(["--expect-no-changes"]));
    expect(standinCalls().length).toBe(before);
  });

  describe("a pool edit: pulumi config set --path 'runner-fleet:pools.medium.maxRunners' 3", () => {
    const mtimes: Record<string, string> = {};
    it("preview --diff updates exactly the pools push of the hosts running that pool", (ctx) => {
      needsUp(ctx);
      for (const host of Object.keys(HOSTS)) mtimes[host] = ok(onHost(host, "stat -c %Y.%i /etc/runner-fleet/pools.json")).stdout;
      ok(pulumi(["config", "set", "--path", "runner-fleet:pools.medium.maxRunners", "3", "--stack", STACK]));
      const text = ok(pulumi(["preview", "--diff", "--stack", STACK]));
      expect(text.output).toContain("e2e-fa-1-pools");
      const { steps } = previewSteps(["--diff"]);
      // pools.json is the push's stdin and its trigger the machine: an update, never a
      // replace next to a host's name (#24 item 17).
      expect(changes(steps)).toEqual(["update command:remote:Command::e2e-fa-1-pools"]);
    });

    it("up puts the new pools.json on those hosts only", (ctx) => {
      needsUp(ctx);
      ok(up());
      plan(path.join(RF, "plan-edit"));
      const pushed = JSON.parse(hostFile("e2e-fa-1", "/etc/runner-fleet/pools.json")!) as Array<{ name: string; maxRunners: number }>;
      expect(pushed.find((p) => p.name === "medium")?.maxRunners).toBe(3);
      for (const host of Object.keys(HOSTS)) {
        expect(hostFile(host, "/etc/runner-fleet/pools.json")).toBe(fs.readFileSync(path.join(RF, "plan-edit", "hosts", host, "pools.json"), "utf8"));
        const now = ok(onHost(host, "stat -c %Y.%i /etc/runner-fleet/pools.json")).stdout;
        if (host === "e2e-fa-1") expect(now).not.toBe(mtimes[host]);
        else expect(now, `${host}'s pools.json was rewritten`).toBe(mtimes[host]);
      }
    });
  });

  describe("faults", () => {
    it("sshd of one host stops during up: the error names it, the next wave does not start, the next up completes", async (ctx) => {
      needsUp(ctx);
      // A tag edit changes every host's inventory entry, so every host switches again, in waves
      // e2e-cache-1, e2e-fa-1, e2e-fa-2 (batchSize 1).
      for (const host of Object.keys(HOSTS)) ok(pulumi(["config", "set", "--path", `runner-fleet:hosts.${host}.tags[1]`, "rollout", "--stack", STACK]));
      const start = Date.now() / 1000;
      const run = pulumiAsync(["up", "--yes", "--stack", STACK]);
      await waitFor("the first wave's deploy", () => standinCalls().some((c) => c.time >= start && deployedHost(c) === "e2e-cache-1"), 300);
      hostsSh(["stop-sshd", "e2e-fa-1"]);
      const failed = await run.done;
      snapshot();
      expect(failed.status).not.toBe(0);
      expect(failed.output).toMatch(/deploy of e2e-fa-1 failed/);
      process.stdout.write(`sshd down, pulumi said: ${failed.output.split("\n").find((l) => /deploy of e2e-fa-1 failed/.test(l))?.trim()}\n`);
      const deployed = standinCalls().filter((c) => c.time >= start).map(deployedHost);
      expect(deployed).toContain("e2e-cache-1");
      expect(deployed, "wave 3 must not start after wave 2 failed").not.toContain("e2e-fa-2");

      hostsSh(["start-sshd", "e2e-fa-1"]);
      const again = Date.now() / 1000;
      ok(up());
      const redeployed = standinCalls().filter((c) => c.time >= again).map(deployedHost).sort();
      expect(redeployed).toEqual(["e2e-fa-1", "e2e-fa-2"]);
      ok(pulumi(["preview", "--stack", STACK, "--expect-no-changes"]));
      for (const host of Object.keys(HOSTS)) {
        expect(JSON.parse(hostFile(host, "/etc/runner-fleet/host.json")!).tags).toEqual(["e2e", "rollout"]);
        expect(readAsHost(host, ownSecrets[host][0]).status).toBe(0);
      }
    });

    it("OpenBao goes down during up: the error is clear, and a rerun converges", async (ctx) => {
      needsUp(ctx);
      ok(pulumi(["config", "set", "--secret", "runner-fleet:cacheSigningKey", "--stack", STACK], { input: CACHE_KEY_2 }));
      const run = pulumiAsync(["up", "--yes", "--stack", STACK]);
      await waitFor("the update to start", () => /Updating \(/.test(run.output()), 120);
      openbaoSh(["stop"]);
      const failed = await run.done;
      snapshot();
      expect(failed.status).not.toBe(0);
      expect(failed.output).toMatch(/10\.231\.0\.1:8200|connection refused|sealed/i);
      process.stdout.write(`OpenBao down, pulumi said: ${failed.output.split("\n").find((l) => /error: .*(8200|refused|sealed)/i.test(l))?.trim()}\n`);
      openbaoSh(["restart"]);
      ok(up());
      expect(kvData("hosts/e2e-cache-1/cache")).toEqual({ signing_key: CACHE_KEY_2 });
      ok(pulumi(["preview", "--stack", STACK, "--expect-no-changes"]));
    });
  });

  it("deploy.tool colmena: every host switches again with colmena, in its waves, and nothing else changes", (ctx) => {
    needsUp(ctx);
    ok(pulumi(["config", "set", "--path", "runner-fleet:deploy.tool", "colmena", "--stack", STACK]));
    const { steps } = previewSteps();
    expect(changes(steps)).toEqual(Object.keys(HOSTS).sort().map((h) => `update command:local:Command::${h}-switch`));
    const start = Date.now() / 1000;
    ok(up());
    const calls = standinCalls().filter((c) => c.time >= start);
    expect(calls.map((c) => c.tool)).toEqual(["colmena", "colmena", "colmena"]);
    // Waves of one, in the order of the plan: e2e-cache-1, e2e-fa-1, e2e-fa-2.
    expect(calls.map((c) => c.argv.slice(0, 4).join(" "))).toEqual(["e2e-cache-1", "e2e-fa-1", "e2e-fa-2"].map((h) => `apply switch --on ${h}`));
    ok(pulumi(["preview", "--stack", STACK, "--expect-no-changes"]));
  });

  it("removing one host deletes only its resources, its Vault policy and role included", (ctx) => {
    needsUp(ctx);
    const removed = "e2e-fa-2";
    ok(pulumi(["config", "rm", "--path", `runner-fleet:hosts.${removed}`, "--stack", STACK]));
    const { steps } = previewSteps();
    const changed = changes(steps);
    expect(changed.length).toBeGreaterThan(0);
    for (const c of changed) expect(c, "only deletes of the removed host's resources").toMatch(new RegExp(`^delete [^ ]+::${removed}(-|$)`));
    expect(changed).toEqual(expect.arrayContaining([
      `delete vault:index/policy:Policy::${removed}-policy`,
      `delete vault:appRole/authBackendRole:AuthBackendRole::${removed}-approle`,
      `delete command:remote:Command::${removed}-pools`,
    ]));
    ok(up());
    expect(policies()).toEqual(["e2e-cache-1", "e2e-fa-1"].map(POLICY));
    expect(roles()).toEqual(["e2e-cache-1", "e2e-fa-1"].map(ROLE));
    expect(kvData(`hosts/${removed}/forgejo-runner`)).toBeUndefined();
    expect(kvData("hosts/e2e-cache-1/forgejo-runner")).toBeDefined();
  });

  it("pulumi destroy leaves OpenBao with none of our policies, roles or secrets", (ctx) => {
    needsUp(ctx);
    const r = ok(pulumi(["destroy", "--yes", "--stack", STACK]));
    timings.push(["destroy", r.seconds]);
    expect(policies()).toEqual([]);
    expect(Object.keys(baoJson<Record<string, unknown>>(["secrets", "list"]))).not.toContain(`${MOUNT}/`);
    expect(Object.keys(baoJson<Record<string, unknown>>(["auth", "list"]))).not.toContain("approle/");
    expect(stateResources().filter((r) => !r.type.startsWith("pulumi:"))).toEqual([]);
  });

  it("canary secrets never appear in stack exports, state, engine output, process lists or host logs", (ctx) => {
    needsUp(ctx);
    const canaries = [APP_KEY_CANARY, CACHE_KEY, CACHE_KEY_2, GITLAB_TOKEN, ...generated];
    expect(generated.length).toBe(2);
    const places: Array<[string, string]> = [
      ...exports.map((e, i) => [`stack export / state snapshot #${i}`, e] as [string, string]),
      ...filesUnder(STATE).map((f) => [f, fs.readFileSync(f).toString("latin1")] as [string, string]),
      ...transcript.map((t, i) => [`command output #${i}: ${t.split("\n")[0]}`, t] as [string, string]),
      [`${RF}/ps.log (process list)`, fs.existsSync(path.join(RF, "ps.log")) ? fs.readFileSync(path.join(RF, "ps.log"), "utf8") : ""],
      [`${RF}/stand-ins.log`, fs.existsSync(path.join(RF, "stand-ins.log")) ? fs.readFileSync(path.join(RF, "stand-ins.log"), "utf8") : ""],
      ...Object.keys(HOSTS).flatMap((h) => filesUnder(path.join(RF, "hosts", h, "var.upper", "log")).map((f) => [f, fs.readFileSync(f, "latin1")] as [string, string])),
    ];
    expect(places.length).toBeGreaterThan(10);
    // The searches saw what they should: the engine at work, the hosts' agents and logins.
    const psLog = places.find(([w]) => w.includes("ps.log"))![1];
    expect(psLog).toContain("pulumi-resource-command");
    expect(psLog).toContain("vault agent -config /etc/vault-agent/runner-fleet.json");
    expect(places.some(([w, t]) => w.endsWith("sshd.log") && t.includes("Accepted publickey for deploy"))).toBe(true);
    const leaks = places.flatMap(([where, text]) => canaries.filter((c) => text.includes(c)).map((c) => `${where}: ${c.slice(0, 12)}...`));
    expect(leaks).toEqual([]);
  });
});
