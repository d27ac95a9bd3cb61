// <host>-push-to-<cache> (components/cache-push.ts): the script against real OpenSSH servers
// on loopback whose sessions use their own Nix stores (sshd SetEnv NIX_REMOTE / NIX_CONF_DIR),
// with real Nix 2.8 on both ends: a real closure reaches the cache's store over SSH with the
// pinned host key; another key is refused; every failure is one line and exit 0 (best effort).
// Then the measurement: a wave of three hosts gets its closure with deploy-rs' copy (nix copy
// --substitute-on-destination), without and with the push, counting the bytes the deploy
// machine sends. Harmonia is not available here: the cache host's store is served over HTTP as
// a signed file:// binary cache made from it (a stand-in for Harmonia, which serves a store).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pushCommand, PUSH_LOG_COLUMNS, PUSH_LOG_LINES } from "../components/cache-push";
import { nixPublicKeyOf } from "../components/fleet-cache";
import { baseConfig, existingHost, PLANTED_SECRETS, planJson } from "./support/fixtures";
import { freePort } from "./support/free-port";

const SSHD = ["/usr/sbin/sshd", "/usr/bin/sshd"].find((p) => fs.existsSync(p));
const ROOT_USER = process.getuid?.() === 0;

let dir = "";
const sshds: ChildProcess[] = [];
const servers: ChildProcess[] = [];

function keygen(file: string): string {
  const r = spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", file]);
  if (r.status !== 0) throw new Error(`ssh-keygen: ${r.stderr}`);
  return fs.readFileSync(`${file}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
}

async function waitFor(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

interface TestHost { name: string; port: number; key: string; store: string; conf: string }

/** An sshd on loopback whose sessions use the Nix store under `<dir>/<name>` and that host's nix.conf. */
async function startHost(name: string): Promise<TestHost> {
  const hostDir = path.join(dir, name);
  fs.mkdirSync(path.join(hostDir, "etc"), { recursive: true });
  const key = keygen(path.join(hostDir, "host_ed25519"));
  const port = await freePort();
  const store = path.join(hostDir, "root");
  const conf = path.join(hostDir, "etc");
  fs.writeFileSync(path.join(conf, "nix.conf"), "build-users-group =\nsubstituters =\n");
  fs.writeFileSync(path.join(hostDir, "sshd_config"), [
    `Port ${port}`, "ListenAddress 127.0.0.1",
    `HostKey ${path.join(hostDir, "host_ed25519")}`,
    `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
    `PidFile ${path.join(hostDir, "sshd.pid")}`,
    "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
    "UsePAM no", "StrictModes no",
    // The host's own store and config for every session (nix-store --serve reads them).
    `SetEnv NIX_REMOTE=local?root=${store} NIX_CONF_DIR=${conf} HOME=${hostDir} NIX_CONFIG=`,
    "",
  ].join("\n"));
  const sshd = spawn(SSHD!, ["-D", "-e", "-f", path.join(hostDir, "sshd_config")], { stdio: "ignore" });
  sshds.push(sshd);
  await waitFor(() => spawnSync("bash", ["-c", `exec 3<>/dev/tcp/127.0.0.1/${port}`]).status === 0, `sshd ${name}`);
  return { name, port, key, store, conf };
}

/**
 * The deploy machine's PATH: `ssh` adds the test host's port (by its HostKeyAlias, which the
 * pinned options set) and the client key, and counts the bytes it sends into $RF_BYTES_FILE;
 * `nix build` of a system prints the test closure (nixpkgs is not here), any other nix is real.
 */
function writeShims(hosts: TestHost[], toplevel: string): string {
  const shim = path.join(dir, "shim");
  fs.mkdirSync(shim, { recursive: true });
  const realSsh = spawnSync("sh", ["-c", "command -v ssh"], { encoding: "utf8" }).stdout.trim();
  const realNix = spawnSync("sh", ["-c", "command -v nix"], { encoding: "utf8" }).stdout.trim();
  const ports = Object.fromEntries(hosts.map((h) => [h.name, h.port]));
  fs.writeFileSync(path.join(shim, "ssh"), `#!/usr/bin/env python3
import os, re, subprocess, sys, threading
ports = ${JSON.stringify(ports)}
alias = next((m.group(1) for a in sys.argv[1:] for m in [re.match(r"HostKeyAlias=(.*)", a)] if m), None)
args = [${JSON.stringify(realSsh)}, "-i", ${JSON.stringify(path.join(dir, "client"))}, "-o", "IdentitiesOnly=yes"]
if alias in ports: args += ["-p", str(ports[alias])]
child = subprocess.Popen(args + sys.argv[1:], stdin=subprocess.PIPE)
# Nix kills its ssh when it is done (no exit handler runs): count as the bytes go.
out = os.environ.get("RF_BYTES_FILE")
log = open(out, "a", buffering=1) if out else None
def pump():
    while True:
        chunk = os.read(0, 65536)
        if not chunk: break
        if log: log.write(f"{alias} {len(chunk)}\\n")
        try:
            child.stdin.write(chunk); child.stdin.flush()
        except BrokenPipeError:
            break
    try: child.stdin.close()
    except BrokenPipeError: pass
t = threading.Thread(target=pump, daemon=True); t.start()
sys.exit(child.wait())
`, { mode: 0o755 });
  fs.writeFileSync(path.join(shim, "nix"), `#!/bin/sh
case "$1 $2" in "build --no-link") echo ${toplevel}; exit 0;; esac
exec ${realNix} "$@"
`, { mode: 0o755 });
  return shim;
}

let cache: TestHost;
let hosts: TestHost[] = [];
let shim = "";
let toplevel = "";
let srcStore = "";
const nixConf = "build-users-group =\nsandbox-paths = /bin /lib /lib64 /usr\nexperimental-features = nix-command\nsubstituters =";

function deployEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${shim}:${process.env.PATH}`, HOME: dir, NIX_REMOTE: srcStore, NIX_CONFIG: nixConf, ...extra };
}

function runPush(args: Partial<Parameters<typeof pushCommand>[0]>, key: string, extra: NodeJS.ProcessEnv = {}) {
  const script = pushCommand({
    host: "web-1", arch: os.arch() === "arm64" ? "aarch64" : "x86_64", cache: cache.name, cacheAddress: "127.0.0.1", flake: "./nix",
    sshUser: os.userInfo().username, remoteBuild: "never", timeoutMinutes: 2, ...args,
  });
  const r = spawnSync("/bin/sh", ["-c", script], { input: '{"version":1}\n', encoding: "utf8", timeout: 120_000, env: deployEnv({ RF_HOST_KEY: key, ...extra }) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, script };
}

const inStore = (store: string, p: string) => fs.existsSync(path.join(store, p));

describe.skipIf(!SSHD || !ROOT_USER)("pushing a closure to a cache host over SSH (real sshd and Nix 2.8)", () => {
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-push-"));
    keygen(path.join(dir, "client"));
    fs.copyFileSync(path.join(dir, "client.pub"), path.join(dir, "authorized_keys"));
    fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
    srcStore = `local?root=${path.join(dir, "deploy-machine")}`;
    // A closure with some bulk: three input-addressed paths, 256 KiB shared and a small top.
    fs.writeFileSync(path.join(dir, "system.nix"), `
      let mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };
        big = mk "rf-shared" "i=0; while [ $i -lt 4096 ]; do echo line-$i-0123456789abcdef0123456789abcdef0123456789; i=$((i+1)); done > $out";
        lib = mk "rf-lib" "echo \${big} > $out";
      in mk "rf-system" "echo \${lib} > $out"`);
    const b = spawnSync("nix-build", [path.join(dir, "system.nix"), "--no-out-link"], { encoding: "utf8", env: { ...process.env, HOME: dir, NIX_REMOTE: srcStore, NIX_CONFIG: nixConf } });
    if (b.status !== 0) throw new Error(b.stderr);
    toplevel = b.stdout.trim();
    cache = await startHost("cache-1");
    hosts = [await startHost("web-1"), await startHost("web-2"), await startHost("web-3")];
    shim = writeShims([cache, ...hosts], toplevel);
  }, 180_000);

  afterAll(() => {
    for (const p of [...sshds, ...servers]) p.kill();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("copies the host's whole system closure into the cache host's store, at its pinned key", () => {
    const r = runPush({}, cache.key);
    expect(r.stdout.trim()).toBe("web-1: pushed its system closure to cache-1");
    expect(r.code).toBe(0);
    const closure = spawnSync("nix-store", ["--query", "--requisites", toplevel], { encoding: "utf8", env: deployEnv() }).stdout.trim().split("\n");
    expect(closure).toHaveLength(3);
    for (const p of closure) expect(inStore(cache.store, p), p).toBe(true);
    // Nothing secret or variable on the command line: the inventory is stdin, the key the environment.
    expect(r.script).not.toContain(cache.key.split(" ")[1]);
  });

  it("refuses a cache host that does not show its pinned key, and still exits 0 with one line", () => {
    const other = keygen(path.join(dir, "other_ed25519"));
    fs.rmSync(path.join(cache.store, "nix"), { recursive: true, force: true });
    const r = runPush({}, other);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^web-1: push to cache-1 failed \(exit 5\); the host receives its closure from the deploy machine instead\n/);
    expect(r.stdout).toMatch(/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/);
    expect(inStore(cache.store, toplevel)).toBe(false);
  });

  it("bounds what a failure prints, and pushes nothing for a system built on the host", () => {
    const noisy = path.join(dir, "noisy");
    fs.mkdirSync(noisy, { recursive: true });
    fs.writeFileSync(path.join(noisy, "nix"), `#!/bin/sh\ni=0; while [ $i -lt 500 ]; do printf 'x%.0s' $(seq 1 400); echo; i=$((i+1)); done >&2; exit 1\n`, { mode: 0o755 });
    const r = runPush({}, cache.key, { PATH: `${noisy}:${shim}:${process.env.PATH}` });
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("web-1: push to cache-1 failed (exit 4); the host receives its closure from the deploy machine instead");
    expect(lines.length).toBeLessThanOrEqual(PUSH_LOG_LINES + 1);
    for (const l of lines.slice(1)) expect(l.length).toBeLessThanOrEqual(PUSH_LOG_COLUMNS);
    const remote = runPush({ remoteBuild: "always" }, cache.key);
    expect(remote.stdout.trim()).toBe("web-1: builds on the host: nothing to push to cache-1 from here");
  });

  it("a wave of three hosts: the deploy machine sends the shared closure once with the push, three times without", async () => {
    /** deploy-rs' copy of the system to each host (src/push.rs): nix copy --substitute-on-destination. */
    const copyToHosts = (bytesFile: string) => {
      for (const h of hosts) {
        const r = spawnSync("sh", ["-c", `work=$(mktemp -d); printf '%s %s\\n' ${h.name} "$RF_HOST_KEY" > "$work/kh"; NIX_SSHOPTS="-o HostName=127.0.0.1 -o HostKeyAlias=${h.name} -o UserKnownHostsFile=$work/kh -o StrictHostKeyChecking=yes -o BatchMode=yes" nix copy --substitute-on-destination --to ssh://${os.userInfo().username}@${h.name} ${toplevel}`],
          { encoding: "utf8", timeout: 120_000, env: deployEnv({ RF_HOST_KEY: h.key, RF_BYTES_FILE: bytesFile }) });
        expect(r.status, r.stderr).toBe(0);
        expect(inStore(h.store, toplevel)).toBe(true);
      }
    };
    const fresh = (name: string): string => {
      for (const h of [cache, ...hosts]) fs.rmSync(path.join(h.store, "nix"), { recursive: true, force: true });
      const bytesFile = path.join(dir, name);
      fs.rmSync(bytesFile, { force: true });
      return bytesFile;
    };
    const sent = (bytesFile: string) => fs.readFileSync(bytesFile, "utf8").trim().split("\n").reduce((n, line) => n + Number(line.split(" ")[1]), 0);
    const measure = (): number => {
      const bytesFile = fresh("bytes-without");
      copyToHosts(bytesFile);
      return sent(bytesFile);
    };
    const without = measure();

    // The cache host serves its store over HTTP, signed (Harmonia's job; here a file:// cache made from it).
    const keyDir = path.join(dir, "cache-key");
    fs.mkdirSync(keyDir, { recursive: true });
    spawnSync("nix-store", ["--generate-binary-cache-key", "cache-1", path.join(keyDir, "sk"), path.join(keyDir, "pk")], { env: { ...process.env, HOME: dir } });
    const port = await freePort();
    const served = path.join(dir, "served");
    fs.mkdirSync(served, { recursive: true });
    servers.push(spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", served], { stdio: "ignore" }));
    for (const h of hosts) {
      fs.writeFileSync(path.join(h.conf, "nix.conf"), `build-users-group =\nsubstituters = http://127.0.0.1:${port}?priority=30\ntrusted-public-keys = ${fs.readFileSync(path.join(keyDir, "pk"), "utf8").trim()}\nconnect-timeout = 5\nfallback = true\n`);
    }
    const bytesFile = fresh("bytes-with");
    expect(runPush({}, cache.key, { RF_BYTES_FILE: bytesFile }).stdout.trim()).toBe("web-1: pushed its system closure to cache-1");
    // Harmonia's part: what reached the cache host's store is served, signed.
    const exported = spawnSync("nix", ["copy", "--from", `local?root=${cache.store}`, "--to", `file://${served}?secret-key=${path.join(keyDir, "sk")}`, toplevel],
      { encoding: "utf8", env: { ...process.env, HOME: dir, NIX_REMOTE: "", NIX_CONFIG: nixConf } });
    expect(exported.status, exported.stderr).toBe(0);
    copyToHosts(bytesFile);
    const withPush = sent(bytesFile);
    // eslint-disable-next-line no-console
    console.log(`cache-push: bytes the deploy machine sent for a wave of 3 hosts: without the fleet cache ${without}, with it ${withPush}`);
    // Three copies of the closure against one (plus the protocol's small talk per host).
    expect(withPush).toBeLessThan(without / 2);
  }, 300_000);
});

// ---------------------------------------------------------------------------------------------
// The program: push steps and the inventory section in the offline plan (mock runtime)


function fleetWithCache(cache: Record<string, unknown>): Record<string, any> {
  const cfg = baseConfig();
  const existing = existingHost;
  cfg.hosts = { "cache-1": existing("192.0.2.20", ["cache"]), "cache-2": existing("192.0.2.23", ["cache"]), "web-1": existing("192.0.2.21", ["forgejo-runner"]), "web-2": existing("192.0.2.22", ["forgejo-runner"]) };
  cfg.deploy = { tool: "deploy-rs", batchSize: 2 };
  cfg.cache = cache;
  return cfg;
}

describe("the program pushes before each switch and hands hosts the public key", () => {
  it("makes one <host>-push-to-<cache> per other host, to the first cache host, and puts only the public key in the inventory", async () => {
    const doc = await planJson(fleetWithCache({ domains: { "cache-1": "cache-1.example.org", "cache-2": "cache-2.example.org" } }));
    const pushes = doc.resources.filter((r) => r.name.includes("-push-to-")).map((r) => r.name).sort();
    expect(pushes).toEqual(["cache-2-push-to-cache-1", "web-1-push-to-cache-1", "web-2-push-to-cache-1"]);
    const push = doc.resources.find((r) => r.name === "web-1-push-to-cache-1")!;
    expect(push.type).toBe("command:local:Command");
    expect(push.inputs.create).toContain('nix copy --to ssh://deploy@cache-1 "$toplevel"');
    const inventory = JSON.parse(doc.outputs.inventory ?? doc.outputs.inventoryJson);
    expect(inventory.cache.substituters).toEqual([
      { url: "https://cache-1.example.org", publicKey: nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey), priority: 30, host: "cache-1" },
      { url: "https://cache-2.example.org", publicKey: nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey), priority: 30, host: "cache-2" },
    ]);
    const all = JSON.stringify(doc);
    expect(all).not.toContain("PLANTEDSIGNINGKEY77d2e0");
  }, 120_000);

  it("makes none when hosts do not substitute from the cache, or with cache.push off", async () => {
    for (const cache of [{}, { domains: { "cache-1": "cache-1.example.org" }, push: false }, { domains: { "cache-1": "cache-1.example.org" }, useFleetCache: false }]) {
      const doc = await planJson(fleetWithCache(cache));
      expect(doc.resources.filter((r) => r.name.includes("-push-to-")), JSON.stringify(cache)).toEqual([]);
      // Nothing to substitute from: the inventory (and so every switch's trigger) is as before.
      if (Object.keys(cache).length === 0) expect(JSON.parse(doc.outputs.inventory ?? doc.outputs.inventoryJson)).not.toHaveProperty("cache");
    }
  }, 180_000);
});
