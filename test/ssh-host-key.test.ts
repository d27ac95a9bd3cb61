// RSA host keys against Debian's real sshd on loopback. pulumi-command pins HostKeyAlgorithms to
// the pinned key's type (remote/connection.go: `hostKeyAlgorithms = []string{publicKey.Type()}`),
// which for RSA is `ssh-rsa`, SHA-1 signatures. OpenSSH 8.8 and later do not offer it: here the
// OpenSSH client pinned the same way is refused at key exchange, while the same key with an
// rsa-sha2 algorithm is accepted. So config refuses an ssh-rsa `hostKey` with a clear message
// (#24 item 5). Needs root, openssh-server and openssh-client.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../components/config";
import { baseConfig, modelFrom } from "./support/fixtures";

let dir = "";
let port = 0;
let sshd: ChildProcess | undefined;
let rsaPub = "";

const freePort = () => new Promise<number>((resolve) => {
  const s = net.createServer().listen(0, "127.0.0.1", () => { const { port: p } = s.address() as net.AddressInfo; s.close(() => resolve(p)); });
});

/** Key exchange only: BatchMode with no identity stops right after the host key is checked. */
function handshake(algorithm: string): { status: number | null; out: string } {
  const known = path.join(dir, "known_hosts");
  fs.writeFileSync(known, `[127.0.0.1]:${port} ${rsaPub}\n`);
  const r = spawnSync("ssh", ["-F", "/dev/null", "-p", String(port), "-o", "BatchMode=yes", "-o", `HostKeyAlgorithms=${algorithm}`,
    "-o", `UserKnownHostsFile=${known}`, "-o", "StrictHostKeyChecking=yes", "-o", "PubkeyAuthentication=no",
    "-o", "ConnectTimeout=10", "nobody@127.0.0.1", "true"], { encoding: "utf8", timeout: 20_000, env: { PATH: process.env.PATH, HOME: dir } });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-rsa-"));
  expect(spawnSync("ssh-keygen", ["-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", path.join(dir, "host")]).status).toBe(0);
  rsaPub = fs.readFileSync(path.join(dir, "host.pub"), "utf8").trim().split(" ").slice(0, 2).join(" ");
  port = await freePort();
  fs.writeFileSync(path.join(dir, "sshd_config"), [
    `Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${path.join(dir, "host")}`, "PasswordAuthentication no", "UsePAM no",
    `PidFile ${path.join(dir, "sshd.pid")}`,
  ].join("\n"));
  fs.mkdirSync("/run/sshd", { recursive: true });
  sshd = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", path.join(dir, "sshd_config")], { stdio: "ignore" });
  for (let i = 0; i < 50; i++) {
    const up = await new Promise((r) => net.connect(port, "127.0.0.1").once("connect", function (this: net.Socket) { this.destroy(); r(true); }).once("error", () => r(false)));
    if (up) break;
    await new Promise((r) => setTimeout(r, 100));
  }
}, 30_000);

afterAll(() => {
  sshd?.kill();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("ssh-rsa host keys (#24 item 5)", () => {
  it("Debian's sshd refuses a client that pins ssh-rsa, as pulumi-command does, and accepts rsa-sha2-512 for the same key", () => {
    const pinned = handshake("ssh-rsa");
    expect(pinned.status).not.toBe(0);
    expect(pinned.out).toMatch(/no matching host key type found\. Their offer: rsa-sha2-512,rsa-sha2-256/);
    // The key itself is fine: with SHA-2 signatures the host key checks out and only login fails.
    const sha2 = handshake("rsa-sha2-512");
    expect(sha2.out).not.toMatch(/no matching host key type|Host key verification failed/);
    expect(sha2.out).toMatch(/nobody@127\.0\.0\.1: Permission denied/);
  });

  it("config refuses an ssh-rsa hostKey with the reason, and accepts ed25519 and ECDSA keys", () => {
    const cfg = (hostKey: string) => {
      const c = baseConfig();
      c.hosts.onprem = { provider: "existing", address: "192.0.2.30", arch: "x86_64", vcpus: 8, memoryMib: 16384, roles: ["cache"], hostKey };
      return c;
    };
    let problems: string[] = [];
    try { modelFrom(cfg(rsaPub)); } catch (err) { problems = (err as ConfigError).problems; }
    expect(problems).toEqual([expect.stringMatching(/^runner-fleet:hosts\.onprem\.hostKey: an ssh-rsa host key cannot be pinned: .*OpenSSH 8\.8 and later refuse.*ssh_host_ed25519_key\.pub/)]);
    for (const t of ["ed25519", "ecdsa"]) {
      const file = path.join(dir, `k-${t}`);
      spawnSync("ssh-keygen", ["-q", "-t", t, "-N", "", "-f", file]);
      expect(() => modelFrom(cfg(fs.readFileSync(`${file}.pub`, "utf8").trim()))).not.toThrow();
    }
  });
});
