// The runner-VM guard of nix/modules/security.nix, for real: the tables come from
// nix/lib/nftables-rules.nix (the function the module deploys), are rendered the way nixpkgs'
// nftables module renders networking.nftables.tables, checked with `nft -c` and then loaded
// with `nft -f` into throwaway network namespaces wired like a fireactions host: a bridge with
// two "runner VMs" on it, and an "outside" namespace holding the internet, the cloud metadata
// address, Azure's WireServer and a private Vault. Probes are TCP connects; the same probes are
// first run without the rules, so every "dropped" below is shown to pass when unguarded.
// Needs root, iproute2, nftables (Debian) and nix-instantiate; a missing tool fails the suite.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(__dirname, "..");
const rulesNix = join(root, "nix", "lib", "nftables-rules.nix");
const BRIDGE = "fireactions0";

let scratch = "";

function nixEval(expr: string): any {
  const out = execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], {
    env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" },
    encoding: "utf8",
  });
  return JSON.parse(out);
}

interface Table {
  family: string;
  content: string;
}

/** nixpkgs nixos/modules/services/networking/nftables.nix writes each table like this. */
function renderLikeNixos(tables: Record<string, Table>): string {
  return Object.entries(tables)
    .map(([name, t]) => `table ${t.family} ${name}\ndelete table ${t.family} ${name}\ntable ${t.family} ${name} {\n${t.content}\n}\n`)
    .join("");
}

const guard = () => nixEval(`import ${rulesNix} { bridge = "${BRIDGE}"; }`) as { tables: Record<string, Table>; blocked4: string[]; blocked6: string[] };

// ---- namespaces ---------------------------------------------------------------------------

const tag = `rf${process.pid % 100000}`;
const ns = { host: `${tag}-host`, vm1: `${tag}-vm1`, vm2: `${tag}-vm2`, out: `${tag}-out` };
const listeners: ChildProcess[] = [];

function sh(cmd: string[]): string {
  return execFileSync(cmd[0], cmd.slice(1), { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}
const inNs = (name: string, ...cmd: string[]) => sh(["ip", "netns", "exec", name, ...cmd]);

// Addresses the outside namespace answers on (all on one interface, routed there by the host).
const OUT = {
  internet: "203.0.113.10",
  metadata: "169.254.169.254",
  wireserver: "168.63.129.16",
  vault: "10.0.0.5",
};
const HOST_UPLINK = "192.0.2.1";
const VM1 = "10.200.0.2";
const VM2 = "10.200.0.3";
const GATEWAY = "10.200.0.1";

function buildTopology(): void {
  for (const n of Object.values(ns)) sh(["ip", "netns", "add", n]);
  for (const n of Object.values(ns)) inNs(n, "ip", "link", "set", "lo", "up");
  // host: the VM bridge with one veth port per VM, and an uplink to the outside.
  inNs(ns.host, "ip", "link", "add", BRIDGE, "type", "bridge");
  inNs(ns.host, "ip", "addr", "add", `${GATEWAY}/24`, "dev", BRIDGE);
  inNs(ns.host, "ip", "link", "set", BRIDGE, "up");
  for (const [vm, addr, port] of [[ns.vm1, VM1, "p1"], [ns.vm2, VM2, "p2"]] as const) {
    inNs(ns.host, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", vm);
    inNs(ns.host, "ip", "link", "set", port, "master", BRIDGE, "up");
    inNs(vm, "ip", "addr", "add", `${addr}/24`, "dev", "eth0");
    inNs(vm, "ip", "link", "set", "eth0", "up");
    inNs(vm, "ip", "route", "add", "default", "via", GATEWAY);
  }
  inNs(ns.host, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", ns.out);
  inNs(ns.host, "ip", "addr", "add", `${HOST_UPLINK}/24`, "dev", "uplink");
  inNs(ns.host, "ip", "link", "set", "uplink", "up");
  inNs(ns.out, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0");
  for (const a of Object.values(OUT)) inNs(ns.out, "ip", "addr", "add", `${a}/32`, "dev", "eth0");
  inNs(ns.out, "ip", "link", "set", "eth0", "up");
  inNs(ns.out, "ip", "route", "add", "10.200.0.0/24", "via", HOST_UPLINK);
  for (const a of Object.values(OUT)) inNs(ns.host, "ip", "route", "add", `${a}/32`, "via", "192.0.2.2");
  // net.* sysctls are per namespace; no procps needed.
  inNs(ns.host, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward");
}

const LISTENER = `
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`;

/** A TCP listener on each port inside a namespace, resolved once it is accepting. */
function listen(name: string, ports: number[]): Promise<void> {
  const child = spawn("ip", ["netns", "exec", name, "python3", "-c", LISTENER, ...ports.map(String)], { stdio: ["ignore", "pipe", "inherit"] });
  listeners.push(child);
  return new Promise((ok, fail) => {
    child.stdout!.once("data", () => ok());
    child.once("exit", (code) => fail(new Error(`listener in ${name} exited ${code}`)));
  });
}

/** True when a TCP connection from the namespace to addr:port completes within a second. */
function connects(from: string, addr: string, port: number): boolean {
  const r = spawnSync("ip", ["netns", "exec", from, "python3", "-c",
    "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()", addr, String(port)],
    { encoding: "utf8" });
  return r.status === 0;
}

// Each probe: who connects where, and whether the guard lets it through.
const probes = [
  { what: "a VM reaches the internet", from: "vm1", to: OUT.internet, port: 80, guarded: true },
  { what: "a VM reaches the cloud metadata service", from: "vm1", to: OUT.metadata, port: 80, guarded: false },
  { what: "a VM reaches Azure's WireServer", from: "vm1", to: OUT.wireserver, port: 80, guarded: false },
  { what: "a VM reaches a private-network Vault", from: "vm1", to: OUT.vault, port: 8200, guarded: false },
  { what: "a VM reaches the host's sshd at the bridge gateway", from: "vm1", to: GATEWAY, port: 22, guarded: false },
  { what: "a VM reaches the host's sshd at its uplink address", from: "vm1", to: HOST_UPLINK, port: 22, guarded: false },
  { what: "a VM reaches another VM on the bridge", from: "vm1", to: VM2, port: 80, guarded: false },
  { what: "the outside opens a connection to a VM", from: "out", to: VM1, port: 80, guarded: false },
  { what: "the outside reaches the host's sshd", from: "out", to: HOST_UPLINK, port: 22, guarded: true },
] as const;

function runProbes(): Record<string, boolean> {
  return Object.fromEntries(probes.map((p) => [p.what, connects(ns[p.from], p.to, p.port)]));
}

function loadRules(text: string, check: boolean): void {
  const file = join(scratch, check ? "check.nft" : "load.nft");
  writeFileSync(file, text);
  inNs(ns.host, "nft", ...(check ? ["-c"] : []), "-f", file);
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "nftables-test-"));
  expect(process.getuid?.(), "network namespaces need root").toBe(0);
  buildTopology();
  await Promise.all([
    listen(ns.out, [80, 8200]),
    listen(ns.host, [22]),
    listen(ns.vm1, [80]),
    listen(ns.vm2, [80]),
  ]);
}, 60_000);

afterAll(() => {
  for (const l of listeners) if (l.pid) try { process.kill(l.pid, "SIGKILL"); } catch { /* already gone */ }
  for (const n of Object.values(ns)) spawnSync("ip", ["netns", "del", n]);
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("nix/lib/nftables-rules.nix (the security.nix guard)", () => {
  it("blocks Azure's WireServer, the metadata ranges and every private range", () => {
    const g = guard();
    expect(g.blocked4).toEqual(expect.arrayContaining(["168.63.129.16/32", "169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]));
    expect(g.blocked6).toEqual(expect.arrayContaining(["fc00::/7", "fe80::/10"]));
    expect(Object.values(g.tables).map((t) => t.family).sort()).toEqual(["bridge", "inet"]);
    expect(g.tables["runner-fleet-guard"].content).toMatch(/chain input \{/);
  });

  it("is exactly what nix/modules/security.nix deploys on a fireactions host, and nothing elsewhere", () => {
    // The module with a stand-in lib.mkIf (the real one is nixpkgs'; this keeps the test free of it).
    const deployed = (roles: string) => nixEval(`
      let
        lib = { mkIf = cond: value: if cond then value else { }; };
        config.runnerFleet = { host.roles = ${roles}; fireactions.bridge = "${BRIDGE}"; };
      in (import ${join(root, "nix", "modules", "security.nix")} { inherit config lib; }).networking.nftables.tables`);
    expect(deployed(`[ "fireactions" ]`)).toEqual(guard().tables);
    expect(deployed(`[ "cache" ]`)).toEqual({});
  });

  it("is accepted by nft -c as nixpkgs renders it", () => {
    loadRules(renderLikeNixos(guard().tables), true);
  });

  it("is refused by nft -c when broken (the check can fail)", () => {
    const broken = renderLikeNixos(guard().tables).replace("policy accept;", "policy sometimes;");
    expect(() => loadRules(broken, true)).toThrow(/syntax error|Error/);
  });

  it("without the guard, every probe connects (so each drop below is the guard's doing)", () => {
    const before = runProbes();
    expect(before).toEqual(Object.fromEntries(probes.map((p) => [p.what, true])));
  }, 60_000);

  it("with the guard loaded, VMs reach the internet and nothing else", () => {
    const text = renderLikeNixos(guard().tables);
    loadRules(text, false);
    // Loading twice must work too: nixpkgs reloads the same file on every switch.
    loadRules(text, false);
    const listed = inNs(ns.host, "nft", "list", "ruleset");
    expect(listed).toContain("table inet runner-fleet-guard");
    expect(listed).toContain("table bridge runner-fleet-guard-l2");
    expect(runProbes()).toEqual(Object.fromEntries(probes.map((p) => [p.what, p.guarded])));
  }, 60_000);
});
