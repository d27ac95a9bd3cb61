/**
 * Host-key pinning (issue 14 items 7 and 9) against a real OpenSSH server on loopback: the
 * options the deploy builds (pinnedSshLines), the ssh wrapper nixos-anywhere runs through, and
 * colmena's ssh_config, each with the right key (connects) and a wrong one (refused), over IPv4
 * and IPv6. The clients get the options the upstream tools add themselves:
 *  - nixos-anywhere: `-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no` first
 *    (src/nixos-anywhere.sh sshArgs), which would accept any key without the wrapper;
 *  - colmena: `-o StrictHostKeyChecking=accept-new -o BatchMode=yes -T ... -F <SSH_CONFIG_FILE>`
 *    (src/nix/host/ssh.rs ssh_options).
 * Only the port and the client identity are added by a test shim (`ssh`/`ssh-keyscan` first on
 * PATH): production connects to port 22 with the operator's agent.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostKeyScanCommand, pinnedSshLines, pinnedSshWrapperLines, switchCommand } from "../components/deploy-commands";

const SSHD = ["/usr/sbin/sshd", "/usr/bin/sshd"].find((p) => fs.existsSync(p));
const HAVE_SSH = !!SSHD && spawnSync("ssh", ["-V"]).status === 0;
const USER = os.userInfo().username;
/** Loopback has ::1 (some containers run without IPv6). */
const V6 = spawnSync("sh", ["-c", "ip -6 addr show dev lo 2>/dev/null | grep -q '::1/128'"]).status === 0;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

function keygen(file: string): string {
  const r = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", file]);
  if (r.status !== 0) throw new Error(`ssh-keygen: ${r.stderr}`);
  return fs.readFileSync(`${file}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
}

async function waitForPort(port: number, host: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host }, () => { s.destroy(); resolve(true); });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`sshd did not listen on ${host}:${port}`);
}

/**
 * A real sshd on loopback for the tests: host key `host_ed25519` and client key `client` made in
 * `dir`, the client's key authorized, publickey only; `extra` adds config lines.
 */
async function startSshd(dir: string, extra: string[] = []): Promise<{ sshd: ChildProcess; port: number; hostKey: string }> {
  const hostKey = keygen(path.join(dir, "host_ed25519"));
  keygen(path.join(dir, "client"));
  fs.copyFileSync(path.join(dir, "client.pub"), path.join(dir, "authorized_keys"));
  const port = await freePort();
  if (process.getuid?.() === 0) fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  fs.writeFileSync(path.join(dir, "sshd_config"), [
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${path.join(dir, "host_ed25519")}`,
    `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
    `PidFile ${path.join(dir, "sshd.pid")}`,
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin prohibit-password",
    "UsePAM no",
    "StrictModes no",
    ...extra,
    "",
  ].join("\n"));
  const sshd = spawn(SSHD!, ["-D", "-e", "-f", path.join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
  await waitForPort(port, "127.0.0.1");
  return { sshd, port, hostKey };
}

/** An executable `#!/bin/sh` script, first on the tests' PATH. */
const writeShim = (file: string, body: string) => fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });

/** The real `command` on PATH, for a shim to exec. */
const realCommand = (name: string) => spawnSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).stdout.trim();

describe.skipIf(!HAVE_SSH)("pinned SSH host keys against a real sshd", () => {
  let dir = "";
  let sshd: ChildProcess | undefined;
  let port = 0;
  let serverKey = "";
  let otherKey = "";
  const v6 = V6;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-sshd-"));
    otherKey = keygen(path.join(dir, "other_ed25519"));
    ({ sshd, port, hostKey: serverKey } = await startSshd(dir, v6 ? ["ListenAddress ::1"] : []));
    // The shims: the port and the client key, ahead of everything else (what production gets
    // from port 22 and the agent).
    fs.mkdirSync(path.join(dir, "shim"));
    writeShim(path.join(dir, "shim", "ssh"), `exec ${realCommand("ssh")} -p ${port} -i ${path.join(dir, "client")} -o IdentitiesOnly=yes "$@"`);
    writeShim(path.join(dir, "shim", "ssh-keyscan"), `exec ${realCommand("ssh-keyscan")} -p ${port} "$@"`);
  });

  afterAll(() => {
    sshd?.kill();
  });

  /** Runs `body` after the deploy's pinning lines for host `alpha` at `address`, key `key`. */
  function run(address: string, key: string, body: string[]) {
    const script = [
      "set -eu",
      "work=$(mktemp -d)",
      'trap \'rm -rf "$work"\' EXIT',
      ...pinnedSshLines("alpha", address),
      ...body,
    ].join("\n");
    const r = spawnSync("/bin/sh", ["-c", script], {
      encoding: "utf8", timeout: 60_000,
      env: { ...process.env, RF_HOST_KEY: key, PATH: `${path.join(dir, "shim")}:${process.env.PATH}`, HOME: dir },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  const login = `${USER}@alpha`;
  const anywhereSsh = `ssh -o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no ${login} echo connected`;

  it("the deploy's own ssh: connects to the host by name with the pinned key, refuses another key", () => {
    const ok = run("127.0.0.1", serverKey, [`ssh $ssh_opts ${login} echo connected`]);
    expect(ok.stderr).not.toMatch(/verification failed/);
    expect(ok.stdout.trim()).toBe("connected");
    const bad = run("127.0.0.1", otherKey, [`ssh $ssh_opts ${login} echo connected`]);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
  });

  it("nixos-anywhere's options alone accept any key; through the wrapper the pinned key wins", () => {
    // Without the wrapper: the wrong key is accepted (what the install did before).
    const bare = run("127.0.0.1", otherKey, [anywhereSsh.replace("ssh ", "ssh -o HostName=127.0.0.1 ")]);
    expect(bare.stdout.trim()).toBe("connected");
    const wrapped = (key: string) => run("127.0.0.1", key, [...pinnedSshWrapperLines("alpha"), `PATH="$work/bin:$PATH" ${anywhereSsh}`]);
    expect(wrapped(serverKey).stdout.trim()).toBe("connected");
    const bad = wrapped(otherKey);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toBe("");
  });

  it("colmena's options with the ssh_config the switch writes: pinned key connects, another is refused", () => {
    const colmenaSsh = (target: string) => [
      // What switchCommand writes for colmena (the same printf), then colmena's own options.
      `printf '%s\\n' 'Host alpha 127.0.0.1' '  HostName 127.0.0.1' '  HostKeyAlias alpha' "  UserKnownHostsFile $work/known_hosts" '  GlobalKnownHostsFile /dev/null' '  StrictHostKeyChecking yes' > "$work/ssh_config"`,
      `ssh -o StrictHostKeyChecking=accept-new -o BatchMode=yes -T -F "$work/ssh_config" ${USER}@${target} echo connected`,
    ];
    for (const target of ["alpha", "127.0.0.1"]) {
      expect(run("127.0.0.1", serverKey, colmenaSsh(target)).stdout.trim(), target).toBe("connected");
      const bad = run("127.0.0.1", otherKey, colmenaSsh(target));
      expect(bad.code, target).not.toBe(0);
      expect(bad.stdout, target).toBe("");
    }
  });

  it.skipIf(!V6)("an IPv6 address travels in HostName: the tools only ever see the host's name", () => {
    const ok = run("::1", serverKey, [`ssh $ssh_opts ${login} echo connected`]);
    expect(ok.stdout.trim()).toBe("connected");
    expect(run("::1", otherKey, [`ssh $ssh_opts ${login} echo connected`]).code).not.toBe(0);
  });

  // Nix's own ssh store (what deploy-rs and nixos-anywhere hand `ssh://user@<name>` to), with the
  // options in NIX_SSHOPTS as both tools pass them. Root only: the far side opens /nix/store itself.
  const NIX = spawnSync("nix", ["--version"]).status === 0 && process.getuid?.() === 0;
  it.skipIf(!NIX || !V6)("Nix reaches an IPv6 host through ssh://user@<name> with the pinned options, and refuses another key", () => {
    const ping = (key: string) => run("::1", key, [
      // The shim's port and identity, then the deploy's options, as deploy-rs sets NIX_SSHOPTS.
      `NIX_SSHOPTS="-p ${port} -i ${path.join(dir, "client")} -o IdentitiesOnly=yes $ssh_opts" timeout 30 nix --extra-experimental-features nix-command store ping --store ssh://root@alpha`,
    ]);
    const ok = ping(serverKey);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout + ok.stderr).toContain("ssh://root@alpha");
    expect(ping(otherKey).code).not.toBe(0);
  });

  it("the first-use scan prints the server's ed25519 key as `type base64`", () => {
    const r = spawnSync("/bin/sh", ["-c", hostKeyScanCommand("alpha", "127.0.0.1", 1)], {
      encoding: "utf8", timeout: 60_000, env: { ...process.env, PATH: `${path.join(dir, "shim")}:${process.env.PATH}` },
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(serverKey);
  });
});

/**
 * The switch's own ssh calls around the tool share one connection (components/deploy-commands.ts
 * MUX_LINE), and the tool's do not: deploy-rs' magic rollback must prove a new connection. Real
 * sshd with a ForceCommand standing for the host (it answers the profile reads with the system
 * the fake nix evaluated), the real switchCommand script, ssh through a port/identity shim.
 */
describe.skipIf(!HAVE_SSH)("the switch's ssh calls against a real sshd", () => {
  let dir = "";
  let sshd: ChildProcess | undefined;
  let sshdLog = "";
  let hostKey = "";
  const SYSTEM = "/nix/store/0000000000000000000000000000000a-nixos-system-alpha";

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-mux-"));
    writeShim(path.join(dir, "host.sh"), [
      `echo "$SSH_ORIGINAL_COMMAND" >> ${path.join(dir, "commands.log")}`,
      'case "$SSH_ORIGINAL_COMMAND" in',
      `  "readlink -f /run/current-system"|"readlink -f /nix/var/nix/profiles/system") echo ${SYSTEM} ;;`,
      "  *booted-system*) exit 1 ;;",
      "esac",
    ].join("\n"));
    let port: number;
    ({ sshd, port, hostKey } = await startSshd(dir, [`ForceCommand ${path.join(dir, "host.sh")}`]));
    sshd.stderr!.on("data", (d) => (sshdLog += d.toString()));
    fs.mkdirSync(path.join(dir, "bin"));
    const shim = (name: string, body: string) => writeShim(path.join(dir, "bin", name), body);
    shim("ssh", `exec ${realCommand("ssh")} -p ${port} -i ${path.join(dir, "client")} -o IdentitiesOnly=yes "$@"`);
    shim("nix", `echo "${SYSTEM} /k /i /m"`);
    // deploy-rs connects with the --ssh-opts it is given, as the real one does.
    shim("deploy", `while [ $# -gt 0 ]; do [ "$1" = --ssh-opts ] && opts=$2; shift; done; exec ssh $opts ${USER}@alpha deploy-activate`);
  });

  afterAll(() => {
    sshd?.kill();
  });

  it("the reboot check, both profile reads and the restart share one connection; deploy-rs gets its own; none is left open", async () => {
    const script = switchCommand({
      tool: "deploy-rs", host: "alpha", address: "127.0.0.1", flake: "./nix", sshUser: USER, arch: "x86_64", remoteBuild: "never",
      boot: false, confirmTimeout: 30, activationTimeout: 240, switchTimeoutMinutes: 5, logDir: path.join(dir, "logs"),
    });
    const r = spawnSync("/bin/sh", ["-c", script], {
      input: "{}\n", encoding: "utf8", timeout: 60_000,
      env: { ...process.env, RF_HOST_KEY: hostKey, TMPDIR: dir, HOME: dir, PATH: `${path.join(dir, "bin")}:${process.env.PATH}` },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, "commands.log"), "utf8").trim().split("\n")).toEqual([
      "for l in kernel initrd kernel-modules; do readlink -f /run/booted-system/$l || echo -; done",
      "deploy-activate",
      "readlink -f /run/current-system",
      "readlink -f /nix/var/nix/profiles/system",
      "sudo -n /run/current-system/sw/bin/runner-fleet-restart-changed --timeout-minutes 60",
    ]);
    await new Promise((ok) => setTimeout(ok, 300));
    // One login for our four calls, one for deploy-rs (five before the calls shared one).
    expect(sshdLog.match(/Accepted publickey/g)?.length).toBe(2);
    expect(spawnSync("pgrep", ["-f", `ControlPath=${dir}`]).status, "an ssh master outlived the switch").toBe(1);
  });
});
