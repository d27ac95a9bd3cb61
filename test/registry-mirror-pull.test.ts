// The registry mirror for real (#23), wired like a fireactions host: a "host" network namespace
// with the VM bridge fireactions0 at the gateway 10.200.0.1 and the runner-VM guard from
// nix/lib/nftables-rules.nix (with the mirror's port as security.nix passes it), and a "VM"
// namespace on that bridge. In the host namespace run a real upstream registry (Debian's
// docker-registry, distribution v2.8) holding a test image pushed by real skopeo, and the mirror:
// the same docker-registry with the config runner-fleet-registry-mirror.py renders (proxy mode,
// on the gateway only). In the VM namespace a real containerd (Debian's) pulls
// docker.io/library/<image> through exactly the hosts.toml the helper renders for the VMs.
// Shown: the VM reaches the mirror port and not the upstream's (a host service the guard keeps
// closed, open without it); the second pull is served from the mirror's cache (the upstream's
// access log shows no new blob fetch); a pull works from cache with the upstream stopped.
// Needs root, ip, nft, nix-instantiate, docker-registry, skopeo, containerd and ctr; run under
// `flock /work/test.lock` (namespaces). zot is not used: see docs/upstream.md (#23).
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { writeOciImage } from "./support/oci-image";

const root = resolve(__dirname, "..");
const helper = join(root, "nix", "pkgs", "runner-fleet-registry-mirror.py");
const rulesNix = join(root, "nix", "lib", "nftables-rules.nix");
const vmNetNix = join(root, "nix", "lib", "vm-network.nix");
const GATEWAY = "10.200.0.1";
const tag = `rm${process.pid % 100000}`;
const ns = { host: `${tag}-host`, vm: `${tag}-vm` };
const UPSTREAM_PORT = 20000 + (process.pid % 5000) * 2;
const MIRROR_PORT = UPSTREAM_PORT + 1;
const IMAGE = `library/rf-test-${tag}`;

let scratch = "";
const procs: Record<string, ChildProcess> = {};
let blobs: string[] = [];

const sh = (cmd: string[], input?: string) => execFileSync(cmd[0], cmd.slice(1), { encoding: "utf8", input, stdio: ["pipe", "pipe", "pipe"] });
const inNs = (name: string, ...cmd: string[]) => sh(["ip", "netns", "exec", name, ...cmd]);

function start(name: string, netns: string, cmd: string[]): void {
  const log = openSync(join(scratch, `${name}.log`), "a");
  procs[name] = spawn("ip", ["netns", "exec", netns, ...cmd], { stdio: ["ignore", log, log] });
}
function stop(name: string): Promise<void> {
  const p = procs[name];
  delete procs[name];
  if (!p || p.exitCode !== null) return Promise.resolve();
  return new Promise((done) => { p.once("exit", () => done()); p.kill("SIGTERM"); });
}
/** A TCP connect from `netns` to addr:port within 1 s. */
const connects = (netns: string, addr: string, port: number) =>
  spawnSync("ip", ["netns", "exec", netns, "timeout", "1", "bash", "-c", `echo > /dev/tcp/${addr}/${port}`]).status === 0;
async function waitPort(netns: string, addr: string, port: number) {
  for (let i = 0; i < 100; i++) {
    if (connects(netns, addr, port)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on ${addr}:${port} in ${netns}: ${readFileSync(join(scratch, "mirror.log"), "utf8").slice(-2000)}`);
}
const upstreamBlobGets = () => readFileSync(join(scratch, "upstream.log"), "utf8").split("\n")
  .filter((l) => /^\S+ - - \[.*\] "GET \/v2\/.*\/blobs\/sha256:/.test(l)).length;

function nixEval(expr: string): any {
  return JSON.parse(execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], {
    env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" }, encoding: "utf8",
  }));
}

function loadGuard() {
  // The guard as security.nix instantiates it, rendered as nixpkgs' nftables module does.
  const g = nixEval(`import ${rulesNix} { inherit (import ${vmNetNix}) bridge gateway; mirrorPorts = [ ${MIRROR_PORT} ]; }`);
  const text = Object.entries(g.tables as Record<string, { family: string; content: string }>)
    .map(([n, t]) => `table ${t.family} ${n}\ndelete table ${t.family} ${n}\ntable ${t.family} ${n} {\n${t.content}\n}\n`).join("");
  writeFileSync(join(scratch, "guard.nft"), text);
  inNs(ns.host, "nft", "-f", join(scratch, "guard.nft"));
}

/** containerd in the VM namespace, with its own root, state and socket. */
async function startContainerd() {
  const dir = join(scratch, "containerd");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.toml"), [
    "version = 2", `root = "${dir}/root"`, `state = "${dir}/state"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]', "[grpc]", `  address = "${dir}/sock"`,
    // Each containerd namespace fetches its own copy (the default, "shared", would find the first
    // pull's blobs and fetch nothing), so every pull below really goes to the mirror.
    '[plugins."io.containerd.metadata.v1.bolt"]', '  content_sharing_policy = "isolated"', "",
  ].join("\n"));
  start("containerd", ns.vm, ["containerd", "--config", join(dir, "config.toml")]);
  for (let i = 0; i < 100; i++) {
    if (spawnSync("ctr", ["-a", join(dir, "sock"), "version"]).status === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`containerd did not start: ${readFileSync(join(scratch, "containerd.log"), "utf8").slice(-2000)}`);
}

/** ctr in the VM pulls the image's content in a fresh containerd namespace (so nothing is local). */
function vmPull(containerdNs: string) {
  return spawnSync("ip", ["netns", "exec", ns.vm, "ctr", "-a", join(scratch, "containerd", "sock"), "-n", containerdNs,
    "content", "fetch", "--hosts-dir", join(scratch, "certs.d"), `docker.io/${IMAGE}:1`], { encoding: "utf8", timeout: 60_000 });
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "registry-pull-"));
  for (const n of Object.values(ns)) sh(["ip", "netns", "add", n]);
  inNs(ns.host, "ip", "link", "set", "lo", "up");
  inNs(ns.vm, "ip", "link", "set", "lo", "up");
  inNs(ns.host, "ip", "link", "add", "fireactions0", "type", "bridge");
  inNs(ns.host, "ip", "addr", "add", `${GATEWAY}/24`, "dev", "fireactions0");
  inNs(ns.host, "ip", "link", "set", "fireactions0", "up");
  inNs(ns.host, "ip", "link", "add", "vmtap", "type", "veth", "peer", "name", "eth0", "netns", ns.vm);
  inNs(ns.host, "ip", "link", "set", "vmtap", "master", "fireactions0", "up");
  inNs(ns.vm, "ip", "addr", "add", "10.200.0.2/24", "dev", "eth0");
  inNs(ns.vm, "ip", "link", "set", "eth0", "up");

  // The upstream: listens on every address of the host namespace, so the gateway too.
  writeFileSync(join(scratch, "upstream.yml"), JSON.stringify({
    version: 0.1, log: { level: "info", accesslog: { disabled: false } },
    storage: { filesystem: { rootdirectory: join(scratch, "upstream") }, delete: { enabled: true } },
    http: { addr: `0.0.0.0:${UPSTREAM_PORT}` },
  }));
  start("upstream", ns.host, ["docker-registry", "serve", join(scratch, "upstream.yml")]);
  await waitPort(ns.host, "127.0.0.1", UPSTREAM_PORT);
  blobs = writeOciImage(join(scratch, "oci"), "1", 4 << 20).blobs;
  inNs(ns.host, "skopeo", "copy", "--dest-tls-verify=false", `oci:${join(scratch, "oci")}:1`, `docker://127.0.0.1:${UPSTREAM_PORT}/${IMAGE}:1`);

  // The mirror, from the helper's config, as the unit's ExecStartPre renders it.
  const cfg = {
    listen: GATEWAY, storageDir: join(scratch, "cache"), credentialsDir: join(scratch, "creds"),
    upstreams: { "docker.io": { url: `http://127.0.0.1:${UPSTREAM_PORT}`, port: MIRROR_PORT } },
  };
  writeFileSync(join(scratch, "mirror-config.json"), JSON.stringify(cfg));
  sh(["python3", helper, "--config", join(scratch, "mirror-config.json"), "registry", "docker.io", "--out", join(scratch, "mirror.json")]);
  start("mirror", ns.host, ["docker-registry", "serve", join(scratch, "mirror.json")]);
  await waitPort(ns.host, GATEWAY, MIRROR_PORT);

  // The VM's containerd hosts.toml, exactly as rendered for the VMs.
  const files = JSON.parse(sh(["python3", helper, "--config", join(scratch, "mirror-config.json"), "vm"])).files as Record<string, string>;
  for (const [path, text] of Object.entries(files)) {
    if (!path.startsWith("/etc/containerd/certs.d/")) continue;
    const to = join(scratch, "certs.d", path.slice("/etc/containerd/certs.d/".length));
    mkdirSync(dirname(to), { recursive: true });
    writeFileSync(to, text);
  }
  await startContainerd();
}, 120_000);

afterAll(async () => {
  for (const name of Object.keys(procs)) await stop(name);
  for (const n of Object.values(ns)) spawnSync("ip", ["netns", "del", n]);
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("registry mirror on the gateway, behind the guard", () => {
  it("the VM reaches the mirror port at the gateway and no other host service (both open without the guard)", () => {
    expect(connects(ns.vm, GATEWAY, MIRROR_PORT)).toBe(true);
    expect(connects(ns.vm, GATEWAY, UPSTREAM_PORT)).toBe(true);
    loadGuard();
    expect(connects(ns.vm, GATEWAY, MIRROR_PORT)).toBe(true);
    expect(connects(ns.vm, GATEWAY, UPSTREAM_PORT)).toBe(false);
  });

  it("containerd pulls through the rendered hosts.toml; the second pull comes from the mirror's cache", () => {
    const before = upstreamBlobGets();
    const first = vmPull("first");
    expect(first.stderr).not.toMatch(/error|fail/i);
    expect(first.status).toBe(0);
    const afterFirst = upstreamBlobGets();
    // The mirror fetched each blob from the upstream.
    expect(afterFirst).toBeGreaterThanOrEqual(before + blobs.length);
    const mirrorLog = () => readFileSync(join(scratch, "mirror.log"), "utf8");
    for (const b of blobs) expect(mirrorLog()).toContain(`/blobs/${b}`);

    const second = vmPull("second");
    expect(second.status).toBe(0);
    expect(upstreamBlobGets()).toBe(afterFirst);
    // ... and served them again itself.
    for (const b of blobs) expect(mirrorLog().split(`GET /v2/${IMAGE}/blobs/${b}`).length - 1).toBeGreaterThanOrEqual(2);
  }, 120_000);

  it("pulls from cache with the upstream stopped", async () => {
    await stop("upstream");
    expect(connects(ns.host, "127.0.0.1", UPSTREAM_PORT)).toBe(false);
    const third = vmPull("third");
    expect(third.stderr).not.toMatch(/error|fail/i);
    expect(third.status).toBe(0);
    const listed = spawnSync("ip", ["netns", "exec", ns.vm, "ctr", "-a", join(scratch, "containerd", "sock"), "-n", "third", "content", "ls", "-q"], { encoding: "utf8" }).stdout;
    for (const b of blobs) expect(listed).toContain(b);
  }, 120_000);
});
