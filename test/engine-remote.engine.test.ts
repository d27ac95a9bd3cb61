/**
 * The engine's command plugin, command:remote:Command, under the real Pulumi CLI against a real
 * sshd on loopback: it runs create/update/delete over SSH with the agent's key, passes stdin and
 * AcceptEnv'd environment, pins the host key when given one, and names the endpoint when it
 * cannot connect.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { engineEnv, missingEngineBinaries } from "../engine/env";
import { ROOT } from "./support/fixtures";

const missing = missingEngineBinaries();
if (missing.length) console.warn(`skipped: the Pulumi engine is not built (no ${missing.join(", ")}); run npm run engine`);

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const command = require("@pulumi/command");
const cfg = new pulumi.Config();
const connection = { host: "127.0.0.1", port: cfg.requireNumber("port"), user: "root", dialErrorLimit: 1,
  ...(cfg.get("hostKey") ? { hostKey: cfg.get("hostKey") } : {}) };
const file = cfg.require("file");
const cmd = new command.remote.Command("write", {
  connection,
  create: "cat > " + file + " && printf 'created %s' \\"$RF_GREETING\\"",
  update: "cat > " + file + " && printf 'updated from %s' \\"$PULUMI_COMMAND_STDOUT\\"",
  delete: "rm -f " + file,
  stdin: cfg.require("content"),
  environment: { RF_GREETING: "hello" },
});
exports.stdout = cmd.stdout;
`;

describe.skipIf(missing.length > 0)("command:remote:Command over SSH", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let sshd: ChildProcess;
  let agent: { sock: string; pid: string };
  let port: number;
  let hostKey: string;
  let target: string;
  const pulumi = (...args: string[]) => {
    const stack = args[0] === "stack" && args[1] === "init" ? [] : ["--stack", "test"];
    const r = spawnSync("pulumi", [...args, "--non-interactive", ...stack], { cwd: dir, env, encoding: "utf8", timeout: 180_000 });
    return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
  };
  const config = (k: string, v: string) => expect(pulumi("config", "set", "--plaintext", `remote:${k}`, v).code).toBe(0);

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-remote-"));
    const keys = path.join(dir, "keys");
    fs.mkdirSync(keys);
    for (const k of ["host", "client"]) spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(keys, k)]);
    fs.copyFileSync(path.join(keys, "client.pub"), path.join(keys, "authorized_keys"));
    hostKey = fs.readFileSync(path.join(keys, "host.pub"), "utf8").trim();
    port = await freePort();
    fs.writeFileSync(path.join(keys, "sshd_config"), [
      `Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${path.join(keys, "host")}`,
      `AuthorizedKeysFile ${path.join(keys, "authorized_keys")}`, "PermitRootLogin prohibit-password",
      "StrictModes no", "PasswordAuthentication no", "AcceptEnv RF_*", "UsePAM no", `PidFile ${path.join(keys, "sshd.pid")}`,
    ].join("\n"));
    fs.mkdirSync("/run/sshd", { recursive: true });
    sshd = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", path.join(keys, "sshd_config")], { stdio: "ignore" });
    for (let i = 0; i < 50 && !(await new Promise((r) => net.connect(port, "127.0.0.1").once("connect", function (this: net.Socket) { this.destroy(); r(true); }).once("error", () => r(false)))); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    // The throwaway key lives only in an agent, as the deploy key does in real use.
    const out = spawnSync("ssh-agent", ["-s"], { encoding: "utf8" }).stdout;
    agent = { sock: /SSH_AUTH_SOCK=([^;]+);/.exec(out)![1], pid: /SSH_AGENT_PID=(\d+);/.exec(out)![1] };
    expect(spawnSync("ssh-add", ["-q", path.join(keys, "client")], { env: { ...process.env, SSH_AUTH_SOCK: agent.sock } }).status).toBe(0);

    fs.writeFileSync(path.join(dir, "Pulumi.yaml"), "name: remote\nruntime:\n  name: nodejs\n  options:\n    typescript: false\n");
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "remote", main: "index.js" }));
    fs.writeFileSync(path.join(dir, "index.js"), PROGRAM);
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
    env = { ...engineEnv({ backendDir: path.join(dir, ".state"), pulumiHome: path.join(dir, ".home") }), SSH_AUTH_SOCK: agent.sock };
    expect(pulumi("stack", "init", "test").code).toBe(0);
    target = path.join(dir, "written-over-ssh");
    config("port", String(port));
    config("file", target);
    config("content", "first");
  }, 60_000);

  afterAll(() => {
    sshd?.kill();
    if (agent) spawnSync("kill", [agent.pid]);
  });

  it("creates over SSH with the agent's key, stdin and AcceptEnv'd environment", () => {
    const r = pulumi("up", "--yes");
    expect(r.code, r.out).toBe(0);
    expect(fs.readFileSync(target, "utf8")).toBe("first");
    const outputs = JSON.parse(spawnSync("pulumi", ["stack", "output", "--json", "--show-secrets", "--stack", "test"], { cwd: dir, env, encoding: "utf8" }).stdout);
    expect(outputs.stdout).toBe("created hello");
    // Default logging: the command's output lines reach the engine's display (stdout stays a
    // secret output all the same, as the connection is one).
    expect(r.out).toMatch(/command:remote:Command write (creating|created) \([\d.]+s\) created hello/);
  }, 180_000);

  it("an input change runs update; the previous stdout arrives only if sshd accepts PULUMI_COMMAND_*", () => {
    config("content", "second");
    const r = pulumi("up", "--yes");
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/~ 1 updated/);
    expect(fs.readFileSync(target, "utf8")).toBe("second");
    // This sshd accepts RF_* only: the optimistic setenv of the previous stdout is refused with a
    // warning, and the command still runs (upstream remote/commandOutputs.go).
    expect(r.out).toContain("Unable to set 'PULUMI_COMMAND_STDOUT'");
    const outputs = JSON.parse(spawnSync("pulumi", ["stack", "output", "--json", "--show-secrets", "--stack", "test"], { cwd: dir, env, encoding: "utf8" }).stdout);
    expect(outputs.stdout).toBe("updated from ");
  }, 180_000);

  it("refuses a host whose key is not the pinned one, and accepts the right one", () => {
    const other = path.join(dir, "other");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other]);
    config("hostKey", fs.readFileSync(`${other}.pub`, "utf8").trim());
    config("content", "third");
    const wrong = pulumi("up", "--yes");
    expect(wrong.code).not.toBe(0);
    expect(wrong.out).toMatch(/host key mismatch/);
    expect(fs.readFileSync(target, "utf8")).toBe("second");
    config("hostKey", hostKey);
    const right = pulumi("up", "--yes");
    expect(right.code, right.out).toBe(0);
    expect(fs.readFileSync(target, "utf8")).toBe("third");
  }, 180_000);

  it("names the endpoint when nothing listens, after dialErrorLimit attempts", async () => {
    config("port", String(await freePort()));
    config("content", "fourth");
    const r = pulumi("up", "--yes");
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/after 1 failed attempts: dial tcp 127\.0\.0\.1:\d+: connect: connection refused/);
    config("port", String(port));
  }, 180_000);

  it("destroy runs the delete command on the host", () => {
    const r = pulumi("destroy", "--yes");
    expect(r.code, r.out).toBe(0);
    expect(fs.existsSync(target)).toBe(false);
  }, 180_000);
});
