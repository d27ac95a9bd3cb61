/**
 * A `pulumi up` killed mid-rollout (#24 item 16), with the real engine, OpenBao and the three
 * SSH test hosts: the CLI gets SIGKILL while a host's switch runs (the deploy-rs stand-in takes
 * RF_E2E_DEPLOY_SLEEP seconds). The backend keeps the stack locked; the README's recovery is
 * `pulumi cancel`, `pulumi up` (which runs the interrupted switch again), then
 * `pulumi refresh --clear-pending-creates` for the switch's pending create; nothing is lost: Vault's policies, roles, secret_ids and generated tokens, and the hosts' logins.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freshHosts, freshStack, E2E, HOSTS, MOUNT, PROJECT, RF, STACK,
  bao, deployedHost, env, ok, onHost, pulumi, standinCalls, waitFor,
} from "./support";

const VAULT_ON_BRIDGE = "https://10.231.0.1:8200";
/** What a failed run says: its diagnostics, not the outputs printed after them. */
const why = (output: string) => output.slice(Math.max(0, output.indexOf("Diagnostics:")), output.indexOf("Diagnostics:") + 4000);
const ROLE = (host: string) => `runner-fleet.${STACK}.${host}`;

/** Everything in Vault a host depends on, to compare before and after the recovery. */
function vaultState() {
  const read = (args: string[]) => {
    const r = bao(args);
    return r.status === 0 ? JSON.parse(r.stdout) : undefined;
  };
  return Object.fromEntries(Object.keys(HOSTS).map((host) => [host, {
    policy: read(["policy", "read", "-format=json", ROLE(host)])?.data?.policy,
    roleId: read(["read", "-format=json", `auth/approle/role/${ROLE(host)}/role-id`])?.data?.role_id,
    secretIds: read(["list", "-format=json", `auth/approle/role/${ROLE(host)}/secret-id`]),
    forgejo: read(["kv", "get", "-format=json", `-mount=${MOUNT}`, `hosts/${host}/forgejo-runner`])?.data?.data,
  }]));
}

/** The host logs in with its AppRole, as vault-agent does. */
function logsIn(host: string): boolean {
  return onHost(host, [
    "set -e", `export VAULT_ADDR=${VAULT_ON_BRIDGE}`,
    "vault write -field=token auth/approle/login role_id=@/etc/runner-fleet/vault/role-id secret_id=@/var/lib/runner-fleet/vault/secret-id >/dev/null",
  ].join("\n")).status === 0;
}

beforeAll(() => {
  freshHosts(HOSTS);
  freshStack(STACK);
  ok(pulumi(["config", "set", "--secret", "runner-fleet:githubAppPrivateKey", "--stack", STACK], { input: "-----BEGIN PRIVATE KEY-----\nrecovery\n-----END PRIVATE KEY-----" }));
  ok(pulumi(["config", "set", "--secret", "runner-fleet:cacheSigningKey", "--stack", STACK], { input: "e2e-cache-1:recovery-e2e" }));
  // The e2e stack's e2e-fa-1 also runs gitlab-runner (#25), whose token the stack must hold.
  ok(pulumi(["config", "set", "--secret", "runner-fleet:gitlabRunnerToken", "--stack", STACK], { input: "glrt-recovery-e2e" }));
}, 300_000);

afterAll(() => {
  if (process.env.RF_E2E_KEEP !== "1") {
    spawnSyncQuiet("bash", [path.join(E2E, "openbao.sh"), "stop"]);
    spawnSyncQuiet("bash", [path.join(E2E, "hosts.sh"), "down"]);
    for (const entry of ["project", "state", "pulumi-home", "bao", "sudoers"]) fs.rmSync(path.join(RF, entry), { recursive: true, force: true });
  }
}, 120_000);

function spawnSyncQuiet(cmd: string, args: string[]) {
  spawnSync(cmd, args, { stdio: "ignore" });
}

describe("a pulumi up killed during a switch (#24 item 16)", () => {
  let before: ReturnType<typeof vaultState>;

  it("up deploys the fleet", () => {
    const r = pulumi(["up", "--yes", "--stack", STACK], { timeoutMs: 900_000 });
    expect(r.status, why(r.output)).toBe(0);
    before = vaultState();
    for (const host of Object.keys(HOSTS)) {
      expect(before[host].roleId, host).toBeTruthy();
      expect(logsIn(host), host).toBe(true);
    }
  }, 900_000);

  it("SIGKILL of the CLI during a switch leaves the stack locked; cancel, then up converges and loses nothing", async () => {
    expect(before).toBeDefined();
    // A tag edit changes one host's inventory entry: its switch runs again, slowly.
    ok(pulumi(["config", "set", "--path", "runner-fleet:hosts.e2e-cache-1.tags[1]", "recovered", "--stack", STACK]));
    const calls = standinCalls().length;
    const cli = spawn("pulumi", ["up", "--yes", "--non-interactive", "--stack", STACK], {
      cwd: PROJECT, env: env({ RF_E2E_DEPLOY_SLEEP: "60" }), stdio: "ignore",
    });
    await waitFor("the switch of e2e-cache-1 to start", () => standinCalls().slice(calls).some((c) => c.tool === "deploy" && deployedHost(c) === "e2e-cache-1") || undefined, 300);
    const exited = new Promise((resolve) => cli.on("exit", resolve));
    cli.kill("SIGKILL");
    await exited;

    const locked = pulumi(["up", "--yes", "--stack", STACK]);
    expect(locked.status).not.toBe(0);
    expect(locked.output).toMatch(/the stack is currently locked by 1 lock\(s\)/);

    ok(pulumi(["cancel", "--yes", "--stack", STACK]));
    const again = pulumi(["up", "--yes", "--stack", STACK], { timeoutMs: 900_000 });
    expect(again.status, why(again.output)).toBe(0);
    // A switch re-runs by replacement (its triggers changed), so the interrupted one is a
    // pending create; up runs the switch again, and the warning names it.
    expect(again.output).toMatch(/pending operations from previous deployment/);
    expect(again.output).toMatch(/e2e-cache-1-switch, interrupted while creating/);
    expect(standinCalls().slice(calls).filter((c) => c.tool === "deploy" && deployedHost(c) === "e2e-cache-1").length).toBeGreaterThanOrEqual(2);
    // A pending create stays until a refresh clears it (the README's last step).
    ok(pulumi(["refresh", "--clear-pending-creates", "--yes", "--stack", STACK]));

    // Converged: the next preview has nothing to do and no pending operation left.
    const quiet = pulumi(["preview", "--expect-no-changes", "--stack", STACK]);
    expect(quiet.status, quiet.output.slice(-3000)).toBe(0);
    expect(quiet.output).not.toMatch(/pending operations/);
    // Nothing lost.
    expect(vaultState()).toEqual(before);
    for (const host of Object.keys(HOSTS)) expect(logsIn(host), host).toBe(true);
  }, 1_200_000);
});
