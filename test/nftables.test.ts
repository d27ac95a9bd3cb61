// The runner-VM guard of nix/modules/security.nix, for real: the tables come from
// nix/lib/nftables-rules.nix (the function the module deploys), are rendered the way nixpkgs'
// nftables module renders networking.nftables.tables, checked with `nft -c` and then loaded
// with `nft -f` into throwaway network namespaces wired like a fireactions host: a bridge with
// two "runner VMs" on it, and an "outside" namespace holding the internet, the cloud metadata
// address, Azure's WireServer (which is also Azure's DNS resolver), AWS's resolvers and a private
// Vault. The host runs the guests' DNS forwarder: Debian's dnsmasq with the very settings
// roles/fireactions.nix gives services.dnsmasq (nix/lib/vm-network.nix), forwarding to
// 168.63.129.16 the way an Azure host's resolv.conf would, and serving static DHCP from the
// entries our CNI plugin (nix/pkgs/cni-vm-port.sh) writes. Probes are TCP connects, DNS
// queries (UDP and TCP) and a DHCP exchange (busybox udhcpc); the same probes are first run
// without the rules, so every "dropped" below is shown to pass when unguarded. The plugin also
// binds each VM's bridge port to its MAC and address (the vmPorts table the fireactions unit
// loads): frames one VM crafts with another's address or MAC (AF_PACKET and raw sockets) are
// shown to poison the host's neighbour and forwarding tables and to leave the host without that
// table, and not with it. Needs root, iproute2, nftables, dnsmasq (Debian dnsmasq-base),
// busybox, jq and nix-instantiate; a missing tool fails the suite.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import fc from "fast-check";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(__dirname, "..");
const rulesNix = join(root, "nix", "lib", "nftables-rules.nix");
const vmNetNix = join(root, "nix", "lib", "vm-network.nix");
const vmPortPlugin = join(root, "nix", "pkgs", "cni-vm-port.sh");
const BRIDGE = "fireactions0";
const MONITORING = JSON.parse(readFileSync(join(root, "nix", "lib", "monitoring.json"), "utf8"));
const GUARD_PORTS: number[] = MONITORING.guardPorts;
/** The ports other hosts serve metrics on (8081 and 9102 listen on loopback only, everywhere). */
const SCRAPE_PORTS: number[] = [MONITORING.nodeExporterPort, MONITORING.exporterPort];
const GATEWAY = "10.200.0.1";

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

interface VmNetwork {
  bridge: string;
  subnet: string;
  gateway: string;
  portsTable: string;
  dnsmasq: Record<string, string | number | boolean | string[]>;
  cniConflist: any;
}
const vmNetwork = () => nixEval(`import ${vmNetNix}`) as VmNetwork;
// The guard exactly as security.nix instantiates it: bridge and gateway from vm-network.nix.
const guard = () =>
  nixEval(`import ${rulesNix} { inherit (import ${vmNetNix}) bridge gateway; }`) as {
    tables: Record<string, Table>; blocked4: string[]; blocked6: string[]; gateway: string;
    vmPorts: Table & { name: string; text: string };
  };

/** nixpkgs' services.dnsmasq.settings format: `k=v`, true as a bare `k`, lists as repeated keys. */
function renderDnsmasqLikeNixos(settings: VmNetwork["dnsmasq"]): string {
  return Object.entries(settings)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => (x === true ? k : x === false ? `# ${k} false` : `${k}=${x}`)))
    .join("\n") + "\n";
}

// ---- namespaces ---------------------------------------------------------------------------

const tag = `rf${process.pid % 100000}`;
const ns = { host: `${tag}-host`, vm1: `${tag}-vm1`, vm2: `${tag}-vm2`, vm3: `${tag}-vm3`, out: `${tag}-out`, lan: `${tag}-lan` };
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
  awsDns: "169.254.169.253",
  vpcDns: "10.0.0.2",
  vault: "10.0.0.5",
};
const HOST_UPLINK = "192.0.2.1";
const HOST_LAN = "172.31.9.1";
const LAN_PEER = "172.31.9.2";
const VM1 = "10.200.0.2";
const VM2 = "10.200.0.3";
// A VM whose CNI ADD has not run (its port has no binding) until the DHCP test below.
const VM3 = "10.200.0.4";
// What every DNS server outside answers for any name; the forwarder passes it on.
const ANSWER = "198.51.100.7";

function buildTopology(): void {
  for (const n of Object.values(ns)) sh(["ip", "netns", "add", n]);
  for (const n of Object.values(ns)) inNs(n, "ip", "link", "set", "lo", "up");
  // host: the VM bridge with one veth port per VM, and an uplink to the outside.
  // The gateway address comes later (addGateway), after dnsmasq is up, as on a host where CNI
  // creates bridge and address with the first VM.
  inNs(ns.host, "ip", "link", "add", BRIDGE, "type", "bridge");
  inNs(ns.host, "ip", "link", "set", BRIDGE, "up");
  for (const [vm, addr, port] of [[ns.vm1, VM1, "p1"], [ns.vm2, VM2, "p2"], [ns.vm3, VM3, "p3"]] as const) {
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
  // A second network of the host's (a private LAN): neither it nor the uplink's neighbour may
  // use the host as a router to the other.
  inNs(ns.host, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ns.lan);
  inNs(ns.host, "ip", "addr", "add", `${HOST_LAN}/24`, "dev", "lan0");
  inNs(ns.host, "ip", "link", "set", "lan0", "up");
  inNs(ns.lan, "ip", "addr", "add", `${LAN_PEER}/24`, "dev", "eth0");
  inNs(ns.lan, "ip", "link", "set", "eth0", "up");
  inNs(ns.lan, "ip", "route", "add", "default", "via", HOST_LAN);
  inNs(ns.out, "ip", "route", "add", "172.31.9.0/24", "via", HOST_UPLINK);
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

// A test stand-in for the clouds' resolvers: answers every A query with ANSWER, over UDP and TCP.
const DNS_SERVER = `
import socket, struct, sys, threading
def answer(q):
    end = 12
    while q[end]: end += 1 + q[end]
    question = q[12:end + 5]
    return (q[:2] + b"\\x81\\x80" + struct.pack(">HHHH", 1, 1, 0, 0) + question
            + b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(sys.argv[1]))
def udp(addr):
    # One socket per address, so each reply comes from the address that was asked.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, 53))
    while True:
        q, peer = s.recvfrom(512); s.sendto(answer(q), peer)
def tcp_one(c):
    with c:
        n = struct.unpack(">H", c.recv(2))[0]; q = b""
        while len(q) < n: q += c.recv(n - len(q))
        r = answer(q); c.sendall(struct.pack(">H", len(r)) + r)
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 53)); s.listen(16)
    while True:
        c, _ = s.accept(); threading.Thread(target=tcp_one, args=(c,), daemon=True).start()
for a in sys.argv[2:]:
    threading.Thread(target=udp, args=(a,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`;

// Asks addr:53 for an A record over udp or tcp (1 s); prints the first answer's address.
const DNS_QUERY = `
import random, socket, struct, sys
addr, proto = sys.argv[1], sys.argv[2]
qid = random.randrange(65536)
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\\x06runner\\x07example\\x00" + struct.pack(">HH", 1, 1)
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); s.connect((addr, 53))
    s.send(q); r = s.recv(512)
else:
    s = socket.create_connection((addr, 53), timeout=1); s.sendall(struct.pack(">H", len(q)) + q)
    r = b""
    while len(r) < 2: r += s.recv(2 - len(r))
    n = struct.unpack(">H", r)[0]; r = b""
    while len(r) < n: r += s.recv(n - len(r))
assert struct.unpack(">H", r[:2])[0] == qid and struct.unpack(">H", r[6:8])[0] >= 1, "no answer"
print(socket.inet_ntoa(r[-4:]))
`;

/** True when addr answers an A query from the namespace with ANSWER within a second. */
function resolves(from: string, addr: string, proto: "udp" | "tcp"): boolean {
  const r = spawnSync("ip", ["netns", "exec", from, "python3", "-c", DNS_QUERY, addr, proto], { encoding: "utf8", timeout: 10_000 });
  return r.status === 0 && r.stdout.trim() === ANSWER;
}

function startChild(name: string, cmd: string[], ready: (child: ChildProcess) => Promise<void>): Promise<void> {
  const child = spawn("ip", ["netns", "exec", name, ...cmd], { stdio: ["ignore", "pipe", "pipe"] });
  listeners.push(child);
  return Promise.race([
    ready(child),
    new Promise<void>((_, fail) => child.once("exit", (code) => fail(new Error(`${cmd[0]} in ${name} exited ${code}`)))),
  ]);
}

/** The guests' DNS forwarder: Debian's dnsmasq with the deployed settings, upstream Azure's resolver. */
function startDnsmasq(): Promise<void> {
  const conf = join(scratch, "dnsmasq.conf");
  // Deployed settings; only the hosts directory moves from /run into the scratch directory.
  writeFileSync(conf, renderDnsmasqLikeNixos({ ...vmNetwork().dnsmasq, "dhcp-hostsdir": hostsDir() }));
  // The host's resolv.conf on Azure; dnsmasq reads /etc/resolv.conf unless told otherwise.
  const resolv = join(scratch, "resolv.conf");
  writeFileSync(resolv, `nameserver ${OUT.wireserver}\n`);
  const args = ["dnsmasq", "--keep-in-foreground", `--conf-file=${conf}`, `--resolv-file=${resolv}`,
    `--pid-file=${join(scratch, "dnsmasq.pid")}`, `--dhcp-leasefile=${join(scratch, "dnsmasq.leases")}`,
    "--user=root", `--log-facility=${join(scratch, "dnsmasq.log")}`];
  return startChild(ns.host, args, async () => { await new Promise((ok) => setTimeout(ok, 300)); });
}

const hostsDir = () => join(scratch, "dhcp-hosts");

const stateDir = () => join(scratch, "vm-ports");

/** Runs our CNI plugin as libcni would (the command in the environment, the deployed plugin
 * config on stdin, only its directories moved into the scratch directory), in the host namespace. */
function cniVmPort(command: string, containerId: string, prevResult?: unknown, path = process.env.PATH): { status: number | null; out: any; stderr: string } {
  const deployed = vmNetwork().cniConflist.plugins.find((p: any) => p.type === "runner-fleet-vm-port");
  const conf = { cniVersion: "1.0.0", name: "fireactions", ...deployed, hostsDir: hostsDir(), stateDir: stateDir(), ...(prevResult ? { prevResult } : {}) };
  const r = spawnSync("ip", ["netns", "exec", ns.host, "bash", vmPortPlugin], {
    input: JSON.stringify(conf), encoding: "utf8",
    env: { ...process.env, PATH: path, CNI_COMMAND: command, CNI_CONTAINERID: containerId, CNI_NETNS: "/var/run/netns/x", CNI_IFNAME: "eth0", CNI_PATH: "/opt/cni/bin" },
  });
  return { status: r.status, out: r.stdout.trim() ? JSON.parse(r.stdout) : null, stderr: r.stderr };
}

/** A CNI result shaped like the bridge plugin's then tc-redirect-tap's (docs/upstream.md): the
 * bridge, the host end of the veth (the bridge port, no sandbox), the container end; then the tap
 * and the VM's own interface, whose sandbox is the VM id. */
function tcRedirectTapResult(vmId: string, vmMac: string, vmAddr: string, port = "veth0a1b2c3d"): any {
  return {
    cniVersion: "1.0.0",
    interfaces: [
      { name: BRIDGE, mac: "02:00:00:00:00:01" },
      { name: port, mac: "02:00:00:00:00:02" },
      { name: "eth0", mac: vmMac, sandbox: "/var/run/netns/x" },
      { name: "tap0", mac: "02:00:00:00:00:04", sandbox: "/var/run/netns/x" },
      { name: "tap0", mac: vmMac, sandbox: vmId },
    ],
    ips: [
      { address: `${vmAddr}/24`, gateway: GATEWAY, interface: 2 },
      { address: `${vmAddr}/24`, gateway: GATEWAY, interface: 4 },
    ],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: { nameservers: [GATEWAY] },
  };
}

const macOf = (name: string) => inNs(name, "cat", "/sys/class/net/eth0/address").trim();

/** Asks DHCP from the namespace's eth0 (busybox udhcpc, nothing configured); the lease, or null. */
function dhcpLease(from: string): { ip: string; router: string; dns: string } | null {
  const script = join(scratch, "udhcpc.sh");
  writeFileSync(script, `#!/bin/sh\n[ "$1" = bound ] && echo "$ip $router $dns"\nexit 0\n`, { mode: 0o755 });
  const r = spawnSync("ip", ["netns", "exec", from, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "2", "-T", "1", "-s", script],
    { encoding: "utf8", timeout: 15_000 });
  const line = r.stdout.split("\n").find((l) => /^\d+\.\d+\.\d+\.\d+ /.test(l));
  if (r.status !== 0 || !line) return null;
  const [ip, router, dns] = line.split(" ");
  return { ip, router, dns };
}

/** CNI gives the bridge its address with the first VM; dnsmasq (bind-dynamic) must pick it up. */
async function addGateway(): Promise<void> {
  inNs(ns.host, "ip", "addr", "add", `${GATEWAY}/24`, "dev", BRIDGE);
  for (let i = 0; i < 50; i++) {
    if (resolves(ns.host, GATEWAY, "udp")) return;
    await new Promise((ok) => setTimeout(ok, 200));
  }
  throw new Error(`dnsmasq never answered at ${GATEWAY} after the address appeared`);
}

// Each probe: who connects (tcp) or asks for a name (udp/tcp to port 53) where, and whether the
// guard lets it through.
type Probe = { what: string; from: keyof typeof ns; to: string; port: number; guarded: boolean; dns?: "udp" | "tcp"; dhcp?: true };
const probes: Probe[] = [
  { what: "a VM reaches the internet", from: "vm1", to: OUT.internet, port: 80, guarded: true },
  { what: "a VM resolves a name at the gateway's forwarder over UDP", from: "vm1", to: GATEWAY, port: 53, dns: "udp", guarded: true },
  { what: "a VM resolves a name at the gateway's forwarder over TCP", from: "vm2", to: GATEWAY, port: 53, dns: "tcp", guarded: true },
  { what: "a VM asking DHCP gets its CNI address, the gateway as router and DNS", from: "vm1", to: VM1, port: 67, dhcp: true, guarded: true },
  { what: "a VM reaches the cloud metadata service", from: "vm1", to: OUT.metadata, port: 80, guarded: false },
  { what: "a VM reaches Azure's WireServer", from: "vm1", to: OUT.wireserver, port: 80, guarded: false },
  { what: "a VM reaches Azure's WireServer host agent port", from: "vm1", to: OUT.wireserver, port: 32526, guarded: false },
  { what: "a VM asks Azure's WireServer for DNS itself over UDP", from: "vm1", to: OUT.wireserver, port: 53, dns: "udp", guarded: false },
  { what: "a VM asks Azure's WireServer for DNS itself over TCP", from: "vm1", to: OUT.wireserver, port: 53, dns: "tcp", guarded: false },
  { what: "a VM asks AWS's link-local resolver for DNS itself", from: "vm1", to: OUT.awsDns, port: 53, dns: "udp", guarded: false },
  { what: "a VM asks AWS's VPC resolver for DNS itself", from: "vm1", to: OUT.vpcDns, port: 53, dns: "udp", guarded: false },
  { what: "a VM asks the metadata address for DNS", from: "vm1", to: OUT.metadata, port: 53, dns: "udp", guarded: false },
  { what: "a VM reaches a private-network Vault", from: "vm1", to: OUT.vault, port: 8200, guarded: false },
  { what: "a VM reaches the host's sshd at the bridge gateway", from: "vm1", to: GATEWAY, port: 22, guarded: false },
  { what: "a VM reaches the host's sshd at its uplink address", from: "vm1", to: HOST_UPLINK, port: 22, guarded: false },
  { what: "a VM reaches another VM on the bridge", from: "vm1", to: VM2, port: 80, guarded: false },
  { what: "the outside opens a connection to a VM", from: "out", to: VM1, port: 80, guarded: false },
  { what: "the outside reaches the host's sshd", from: "out", to: HOST_UPLINK, port: 22, guarded: true },
  // Metrics ports (nix/lib/monitoring.json guardPorts): never from a VM, to this host or any other.
  ...GUARD_PORTS.flatMap((port): Probe[] => [
    { what: `a VM reaches metrics port ${port} at the host's uplink address`, from: "vm1", to: HOST_UPLINK, port, guarded: false },
    { what: `a VM reaches metrics port ${port} at the bridge gateway`, from: "vm1", to: GATEWAY, port, guarded: false },
    { what: `a VM reaches port ${port} on another host's public address`, from: "vm1", to: OUT.internet, port, guarded: !SCRAPE_PORTS.includes(port) },
    { what: `the outside reaches the host's metrics port ${port}`, from: "out", to: HOST_UPLINK, port, guarded: true },
  ]),
  { what: "a neighbour on the uplink routes through the host into its LAN", from: "out", to: LAN_PEER, port: 80, guarded: false },
  { what: "a LAN peer routes through the host to the uplink's neighbour", from: "lan", to: OUT.internet, port: 80, guarded: false },
];

function runProbes(): Record<string, boolean> {
  const dhcpOk = (from: string, addr: string) => {
    const lease = dhcpLease(from);
    return lease !== null && lease.ip === addr && lease.router === GATEWAY && lease.dns === GATEWAY;
  };
  return Object.fromEntries(probes.map((p) => [p.what,
    p.dhcp ? dhcpOk(ns[p.from], p.to) : p.dns ? resolves(ns[p.from], p.to, p.dns) : connects(ns[p.from], p.to, p.port)]));
}

function loadRules(text: string, check: boolean): void {
  const file = join(scratch, check ? "check.nft" : "load.nft");
  writeFileSync(file, text);
  inNs(ns.host, "nft", ...(check ? ["-c"] : []), "-f", file);
}

// ---- the VM port binding (#24 item 12) -----------------------------------------------------

/** What the fireactions unit's ExecStartPre does: load the port table fresh (empty). */
const loadPorts = () => loadRules(guard().vmPorts.text, false);
const unloadPorts = () => spawnSync("ip", ["netns", "exec", ns.host, "nft", "delete", "table", "bridge", guard().vmPorts.name]);
const portElements = () => inNs(ns.host, "nft", "list", "set", "bridge", guard().vmPorts.name, "vm_ports");
const VMS = { vm1: { id: "runner-vm1", addr: VM1, port: "p1" }, vm2: { id: "runner-vm2", addr: VM2, port: "p2" }, vm3: { id: "runner-vm3", addr: VM3, port: "p3" } };
/** CNI ADD for a VM of the topology with its real bridge port, MAC and address. */
function addVm(vm: keyof typeof VMS): ReturnType<typeof cniVmPort> {
  const { id, addr, port } = VMS[vm];
  return cniVmPort("ADD", id, tcRedirectTapResult(id, macOf(ns[vm]), addr, port));
}

// Sends one Ethernet frame on eth0 (AF_PACKET): dst, src, ethertype (hex), payload (hex).
const SEND_FRAME = `
import socket, sys
dst, src, etype, payload = sys.argv[1:5]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
frame = mac(dst) + mac(src) + bytes.fromhex(etype) + bytes.fromhex(payload)
for _ in range(3): s.send(frame.ljust(60, b"\\0"))
`;
const hex = (m: string) => m.replace(/:/g, "");
const ipHex = (a: string) => a.split(".").map((o) => Number(o).toString(16).padStart(2, "0")).join("");
/** An Ethernet/IPv4 ARP packet: op 1 request, 2 reply. */
const arpPayload = (op: 1 | 2, sha: string, spa: string, tha: string, tpa: string) =>
  `000108000604000${op}${hex(sha)}${ipHex(spa)}${hex(tha)}${ipHex(tpa)}`;
function sendFrame(from: string, dst: string, src: string, etype: string, payload: string): void {
  inNs(from, "python3", "-c", SEND_FRAME, dst, src, etype, payload);
}
const bridgeMac = () => inNs(ns.host, "cat", `/sys/class/net/${BRIDGE}/address`).trim();
/** The host's neighbour entry for addr on the VM bridge ("" if none). */
const neighbour = (addr: string) => inNs(ns.host, "ip", "neigh", "show", addr, "dev", BRIDGE).trim();
/** The bridge port the host's forwarding table puts mac on ("" if none). */
const fdbPort = (mac: string) => (inNs(ns.host, "bridge", "fdb", "show", "br", BRIDGE).split("\n").find((l) => l.startsWith(`${mac} dev `) && !l.includes(" permanent")) ?? "").split(" ")[2] ?? "";

// A UDP datagram from a forged source address (raw socket, IP_HDRINCL: the kernel fills length,
// id and checksum), routed out through the VM's gateway like any other.
const SEND_SPOOFED_UDP = `
import socket, struct, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
udp = struct.pack(">HHHH", 40000, port, 8 + 5, 0) + b"spoof"
ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3): s.sendto(ip + udp, (dst, 0))
`;
// Waits up to 2 s for one datagram on the port; prints its source address.
const RECV_UDP = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(2)
print("ready", flush=True)
try:
    print(s.recvfrom(64)[1][0], flush=True)
except socket.timeout:
    pass
`;
/** Sends a datagram from `from` with source `src` to the internet address; the source it arrives with, or null. */
async function spoofedUdp(from: string, src: string): Promise<string | null> {
  const child = spawn("ip", ["netns", "exec", ns.out, "python3", "-c", RECV_UDP, "9999"], { stdio: ["ignore", "pipe", "inherit"] });
  listeners.push(child);
  let out = "";
  const done = new Promise<void>((ok) => child.once("exit", () => ok()));
  await new Promise<void>((ok) => child.stdout!.on("data", (d) => { out += d; if (out.includes("ready")) ok(); }));
  inNs(from, "python3", "-c", SEND_SPOOFED_UDP, src, OUT.internet, "9999");
  await done;
  return out.split("\n").map((l) => l.trim()).find((l) => /^\d+\.\d+\.\d+\.\d+$/.test(l)) ?? null;
}

const FAKE_MAC = "02:de:ad:be:ef:01";
/**
 * What VM 1 can do to VM 2 and to the host, each attack run from scratch (host entries cleared):
 * answer ARP for VM 2's address (request and reply), give its own address a MAC that is not its
 * own, send from VM 2's address, and take VM 2's MAC into the bridge's forwarding table through
 * an ordinary frame, an 802.1X (link-local, input hook) frame and an LLDP frame (no hook). True
 * where the attack took effect.
 */
async function attacks(): Promise<Record<string, boolean>> {
  const [vm1Mac, vm2Mac, brMac] = [macOf(ns.vm1), macOf(ns.vm2), bridgeMac()];
  const clearNeighbours = () => inNs(ns.host, "ip", "neigh", "flush", "dev", BRIDGE);
  const clearFdb = () => spawnSync("ip", ["netns", "exec", ns.host, "bridge", "fdb", "del", vm2Mac, "dev", "p1", "master"]);
  const result: Record<string, boolean> = {};

  clearNeighbours();
  sendFrame(ns.vm1, "ff:ff:ff:ff:ff:ff", vm1Mac, "0806", arpPayload(1, vm1Mac, VM2, "00:00:00:00:00:00", GATEWAY));
  result["an ARP request with VM 2's address makes the host send VM 2's traffic to VM 1"] = neighbour(VM2).includes(vm1Mac);
  // A reply updates an entry the host has (older than locktime, 1 s): VM 2's real one, made by
  // VM 2's own ARP (it asks for the gateway).
  clearNeighbours();
  sendFrame(ns.vm2, "ff:ff:ff:ff:ff:ff", vm2Mac, "0806", arpPayload(1, vm2Mac, VM2, "00:00:00:00:00:00", GATEWAY));
  await new Promise((ok) => setTimeout(ok, 1200));
  sendFrame(ns.vm1, brMac, vm1Mac, "0806", arpPayload(2, vm1Mac, VM2, brMac, GATEWAY));
  result["an ARP reply with VM 2's address makes the host send VM 2's traffic to VM 1"] = neighbour(VM2).includes(vm1Mac);
  clearNeighbours();
  sendFrame(ns.vm1, "ff:ff:ff:ff:ff:ff", vm1Mac, "0806", arpPayload(1, FAKE_MAC, VM1, "00:00:00:00:00:00", GATEWAY));
  result["an ARP request whose sender MAC is not the frame's sets another MAC for VM 1's address"] = neighbour(VM1).includes(FAKE_MAC);
  clearNeighbours();

  result["a datagram from VM 2's address leaves the host"] = (await spoofedUdp(ns.vm1, VM2)) === VM2;

  const fdb: [string, string, string, string][] = [
    ["an ordinary frame", "ff:ff:ff:ff:ff:ff", "0806", arpPayload(1, vm2Mac, VM2, "00:00:00:00:00:00", GATEWAY)],
    ["an 802.1X frame (link-local, input hook)", "01:80:c2:00:00:03", "888e", "0100000000"],
    ["an LLDP frame (link-local, no hook)", "01:80:c2:00:00:0e", "88cc", "00".repeat(20)],
  ];
  for (const [what, dst, etype, payload] of fdb) {
    clearFdb();
    sendFrame(ns.vm1, dst, vm2Mac, etype, payload);
    result[`${what} from VM 1 with VM 2's MAC moves VM 2's MAC to VM 1's port`] = fdbPort(vm2Mac) === "p1";
  }
  clearFdb();
  return result;
}

/** Probes from VM 3, whose port nothing was bound to: each true where it got through. */
function unboundProbes(): Record<string, boolean> {
  return {
    "a VM whose ADD never ran reaches the internet": connects(ns.vm3, OUT.internet, 80),
    "a VM whose ADD never ran resolves a name at the gateway": resolves(ns.vm3, GATEWAY, "udp"),
  };
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "nftables-test-"));
  expect(process.getuid?.(), "network namespaces need root").toBe(0);
  buildTopology();
  mkdirSync(hostsDir());
  mkdirSync(stateDir());
  await Promise.all([
    listen(ns.out, [80, 8200, 32526, ...GUARD_PORTS]),
    listen(ns.host, [22, ...GUARD_PORTS]),
    listen(ns.vm1, [80]),
    listen(ns.vm2, [80]),
    listen(ns.lan, [80]),
    startChild(ns.out, ["python3", "-c", DNS_SERVER, ANSWER, ...Object.values(OUT)], (c) => new Promise((ok) => c.stdout!.once("data", () => ok()))),
  ]);
  await startDnsmasq();
  await addGateway();
  // What CNI's ADD leaves for VMs 1 and 2 (DHCP records; VM 3 gets none, see the DHCP test
  // below); the port table, which ADD needs, is taken away again until the guard is loaded.
  loadPorts();
  for (const vm of ["vm1", "vm2"] as const) expect(addVm(vm).status).toBe(0);
  unloadPorts();
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
    // The one host service open to VMs is DNS at the gateway vm-network.nix names.
    expect(g.gateway).toBe(vmNetwork().gateway);
    expect(g.tables["runner-fleet-guard"].content.match(/^.*accept$/gm)!.map((l) => l.trim())).toEqual([
      `oifname "${BRIDGE}" ct state established,related accept`,
      `iifname "${BRIDGE}" ct state established,related accept`,
      `iifname "${BRIDGE}" ip daddr ${GATEWAY} udp dport 53 accept`,
      `iifname "${BRIDGE}" ip daddr ${GATEWAY} tcp dport 53 accept`,
      `iifname "${BRIDGE}" udp sport 68 udp dport 67 accept`,
    ]);
  });

  it("is exactly what nix/modules/security.nix deploys on a fireactions host, and nothing elsewhere", () => {
    // The module with a stand-in lib.mkIf (the real one is nixpkgs'; this keeps the test free of it).
    const deployed = (roles: string) => nixEval(`
      let
        lib = { mkIf = cond: value: if cond then value else { }; };
        config.runnerFleet = { host.roles = ${roles}; fireactions = { bridge = "${BRIDGE}"; gateway = "${GATEWAY}"; }; registryMirror.ports = [ ]; };
      in (import ${join(root, "nix", "modules", "security.nix")} { inherit config lib; }).networking.nftables.tables`);
    expect(deployed(`[ "fireactions" ]`)).toEqual(guard().tables);
    expect(deployed(`[ "cache" ]`)).toEqual({});
  });

  it("security.nix asserts that nixpkgs never flushes the whole ruleset on a fireactions host (it would take the port table)", () => {
    const assertions = (roles: string, flush: boolean) => nixEval(`
      let
        lib = { mkIf = cond: value: if cond then value else { }; };
        config.runnerFleet = { host.roles = ${roles}; fireactions = { bridge = "${BRIDGE}"; gateway = "${GATEWAY}"; }; registryMirror.ports = [ ]; };
        config.networking.nftables.flushRuleset = ${flush};
      in (import ${join(root, "nix", "modules", "security.nix")} { inherit config lib; }).assertions`);
    expect(assertions(`[ "fireactions" ]`, false)).toEqual([{ assertion: true, message: expect.stringMatching(/^networking\.nftables\.flushRuleset: must stay false/) }]);
    expect(assertions(`[ "fireactions" ]`, true)).toEqual([{ assertion: false, message: expect.stringContaining(guard().vmPorts.name) }]);
    expect(assertions(`[ "cache" ]`, true)).toEqual({});
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

  it("without the port table (the guard as it was), VM 1 takes VM 2's address and MAC, and an unbound VM gets through", async () => {
    loadRules(renderLikeNixos(guard().tables), false);
    // Link-local learning as the bridge plugin leaves it (our plugin's ADD turned it off).
    inNs(ns.host, "sh", "-c", `echo 0 > /sys/class/net/${BRIDGE}/bridge/no_linklocal_learn`);
    const results = await attacks();
    expect(results).toEqual(Object.fromEntries(Object.keys(results).map((k) => [k, true])));
    expect(Object.keys(results)).toHaveLength(7);
    expect(unboundProbes()).toEqual({ "a VM whose ADD never ran reaches the internet": true, "a VM whose ADD never ran resolves a name at the gateway": true });
  }, 60_000);

  it("with the guard loaded, VMs reach the internet, DNS at the gateway and DHCP, nothing else", () => {
    const text = renderLikeNixos(guard().tables);
    loadRules(text, false);
    // Loading twice must work too: nixpkgs reloads the same file on every switch.
    loadRules(text, false);
    // The fireactions unit's start, then CNI ADD for both VMs (the real plugin).
    loadPorts();
    for (const vm of ["vm1", "vm2"] as const) expect(addVm(vm).status).toBe(0);
    const listed = inNs(ns.host, "nft", "list", "ruleset");
    expect(listed).toContain("table inet runner-fleet-guard");
    expect(listed).toContain("table bridge runner-fleet-guard-l2");
    expect(listed).toContain(`table bridge ${guard().vmPorts.name}`);
    expect(runProbes()).toEqual(Object.fromEntries(probes.map((p) => [p.what, p.guarded])));
  }, 60_000);

  it("with the port table, none of VM 1's attacks takes effect, and an unbound VM gets nothing through", async () => {
    const results = await attacks();
    expect(results).toEqual(Object.fromEntries(Object.keys(results).map((k) => [k, false])));
    expect(Object.keys(results)).toHaveLength(7);
    expect(unboundProbes()).toEqual({ "a VM whose ADD never ran reaches the internet": false, "a VM whose ADD never ran resolves a name at the gateway": false });
    // The VMs themselves are untouched by all that: VM 2 still reaches the internet.
    expect(connects(ns.vm2, OUT.internet, 80)).toBe(true);
  }, 60_000);

  it("a reload of nixpkgs' tables keeps the bindings; the unit's load empties them", () => {
    const bound = (text: string) => ["p1", "p2"].every((p) => text.includes(`"${p}" . `));
    expect(bound(portElements())).toBe(true);
    loadRules(renderLikeNixos(guard().tables), false);
    expect(bound(portElements())).toBe(true);
    loadPorts();
    expect(portElements()).not.toContain("elements");
    for (const vm of ["vm1", "vm2"] as const) expect(addVm(vm).status).toBe(0);
    expect(bound(portElements())).toBe(true);
  });
});

// Opens n connections at once from the namespace (non-blocking), waits a second, counts the ones that completed.
const BURST = `
import selectors, socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sel = selectors.DefaultSelector(); socks = []
for _ in range(n):
    s = socket.socket(); s.setblocking(False); s.connect_ex((addr, port)); sel.register(s, selectors.EVENT_WRITE); socks.append(s)
done = set(); end = time.time() + 1.5
while time.time() < end and len(done) < n:
    for key, _ in sel.select(timeout=0.1):
        if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0: done.add(key.fileobj)
        sel.unregister(key.fileobj)
print(len(done))
`;
const burst = (from: string, addr: string, port: number, n: number) => Number(inNs(from, "python3", "-c", BURST, addr, String(port), String(n)).trim());

describe("the guard's per-VM connection rate limit (#24 item 12)", () => {
  it("lets a VM open 100 new connections a second (burst 100), drops the rest; other VMs keep their own budget", () => {
    // The guard is loaded by the suite above; 400 connects at once from one VM.
    const first = burst(ns.vm1, OUT.internet, 80, 400);
    expect(first).toBeGreaterThanOrEqual(100);
    expect(first).toBeLessThanOrEqual(260);
    // vm2 is counted on its own address.
    expect(burst(ns.vm2, OUT.internet, 80, 50)).toBe(50);
  }, 30_000);
});

describe("a fireactions host's kernel settings and fireactions' unit (#24 item 12)", () => {
  const hardening = () => nixEval(`import ${join(root, "nix", "lib", "host-hardening.nix")}`) as { sysctl: Record<string, number>; logGroup: string };
  const roleDefs = (path: string[]) => nixEval(`
    let t = import ${join(root, "test", "support", "nix-modules.nix")};
        r = t.call { file = ${join(root, "nix", "modules", "roles", "fireactions.nix")}; inventory = t.readInventory ${join(root, "nix", "inventory.example.json")}; hostName = "aws-metal-1"; };
    in map (d: d.value) (t.defsAt ${JSON.stringify(path).replace(/,/g, " ")} r)`) as any[];

  it("roles/fireactions.nix sets exactly the hardened sysctls and ip_forward, read back from its evaluation", () => {
    const h = hardening();
    expect(roleDefs(["boot", "kernel", "sysctl"])).toEqual([{ ...h.sysctl, "net.ipv4.ip_forward": 1 }]);
    expect(h.sysctl).toMatchObject({ "kernel.kptr_restrict": 2, "kernel.dmesg_restrict": 1, "kernel.unprivileged_bpf_disabled": 1, "net.ipv4.conf.all.send_redirects": 0, "net.ipv4.tcp_syncookies": 1 });
  });

  it("the kernel takes every per-namespace net.* value: written into the host namespace and read back", () => {
    const net = Object.entries(hardening().sysctl).filter(([k]) => /^net\.ipv[46]\./.test(k));
    expect(net.length).toBeGreaterThan(10);
    for (const [key, value] of net) {
      const file = `/proc/sys/${key.replace(/\./g, "/")}`;
      inNs(ns.host, "sh", "-c", `echo ${value} > ${file}`);
      expect(inNs(ns.host, "cat", file).trim(), key).toBe(String(value));
    }
  });

  it("fireactions' unit: umask 0027, the sandboxing it can take; the pools directory setgid to the log group the scaler joins", () => {
    const [unit] = roleDefs(["systemd", "services", "fireactions"]);
    expect(unit.serviceConfig).toMatchObject({
      UMask: "0027", NoNewPrivileges: true, LockPersonality: true, RestrictRealtime: true, RestrictSUIDSGID: true,
      ProtectClock: true, ProtectKernelLogs: true, SystemCallArchitectures: "native",
    });
    // What KVM, CNI and the taps need stays: no PrivateDevices, no ProtectKernelTunables (CNI writes /proc/sys).
    expect(unit.serviceConfig).not.toHaveProperty("PrivateDevices");
    expect(unit.serviceConfig).not.toHaveProperty("ProtectKernelTunables");
    expect(unit.serviceConfig.RestrictAddressFamilies).toEqual(expect.arrayContaining(["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]));
    // The last rule only: the others name packages the nixpkgs stand-in does not build.
    const lastRule = nixEval(`
      let t = import ${join(root, "test", "support", "nix-modules.nix")};
          r = t.call { file = ${join(root, "nix", "modules", "roles", "fireactions.nix")}; inventory = t.readInventory ${join(root, "nix", "inventory.example.json")}; hostName = "aws-metal-1"; };
          rules = (builtins.head (t.defsAt [ "systemd" "tmpfiles" "rules" ] r)).value;
      in builtins.elemAt rules (builtins.length rules - 1)`);
    expect(lastRule).toBe(`d /var/lib/fireactions/pools 2750 root ${hardening().logGroup} -`);
    expect(roleDefs(["users", "groups"])).toEqual([{ [hardening().logGroup]: {} }]);
    // Before fireactions starts (and so before any VM): the port table, loaded fresh.
    expect(unit.serviceConfig.ExecStartPre.at(-1)).toMatch(new RegExp(`^\\+/nix/store/[0-9a-z]{32}-nftables/bin/nft -f /nix/store/[0-9a-z]{32}-${guard().vmPorts.name}\\.nft$`));
    const scaler = readFileSync(join(root, "nix", "modules", "scaler.nix"), "utf8");
    expect(scaler).toMatch(/SupplementaryGroups = \[ \(import \.\.\/lib\/host-hardening\.nix\)\.logGroup \];/);
  });

  it("under that umask, a console log fireactions creates in a new pool directory is the log group's, not the world's", () => {
    // As fireactions v0.4.0 does it: MkdirAll(pool dir, 0755), then os.Create(<runner>.log) (0666), as root.
    const parent = mkdtempSync(join(tmpdir(), "rf-pools-"));
    execFileSync("chmod", ["0755", parent]);
    const dir = join(parent, "pools");
    mkdirSync(dir);
    execFileSync("sh", ["-c", `chgrp nogroup ${dir} && chmod 2750 ${dir}`]);
    execFileSync("sh", ["-c", `umask 0027 && python3 -c 'import os,sys; d=os.path.join(sys.argv[1],"small"); os.makedirs(d, 0o755, exist_ok=True); open(os.path.join(d,"runner-1.log"),"w").write("console\\n")' ${dir}`]);
    const stat = (p: string) => execFileSync("stat", ["-c", "%a %G", p], { encoding: "utf8" }).trim();
    expect(stat(join(dir, "small"))).toBe("2750 nogroup");
    expect(stat(join(dir, "small", "runner-1.log"))).toBe("640 nogroup");
    // Someone outside the group cannot read it; a member can.
    const asUser = (groups: string) => spawnSync("setpriv", ["--reuid=65534", "--regid=65533", `--groups=${groups}`, "cat", join(dir, "small", "runner-1.log")], { encoding: "utf8" });
    expect(asUser("65533").status).not.toBe(0);
    const nogroup = execFileSync("getent", ["group", "nogroup"], { encoding: "utf8" }).split(":")[2];
    expect(asUser(nogroup).stdout).toBe("console\n");
  });
});

describe("nix/lib/vm-network.nix (the guests' gateway, DNS and CNI network)", () => {
  it("names one gateway for the guests' nameserver, the forwarder and the guard", () => {
    const net = vmNetwork();
    expect([net.bridge, net.gateway]).toEqual([BRIDGE, GATEWAY]);
    const [bridgePlugin] = net.cniConflist.plugins;
    expect(bridgePlugin).toMatchObject({ type: "bridge", bridge: BRIDGE, isGateway: true, ipam: { type: "host-local", subnet: net.subnet } });
    // The bridge plugin's `dns` is what the SDK passes into ip=; host-local's resolvConf would
    // hand the guests the host's resolvers, which the guard blocks.
    expect(bridgePlugin.dns).toEqual({ nameservers: [GATEWAY] });
    expect(bridgePlugin.ipam).not.toHaveProperty("resolvConf");
    expect(net.dnsmasq["listen-address"]).toBe(GATEWAY);
    // DHCP only for MACs the plugin recorded (static), in the CNI subnet, from the plugin's directory.
    expect(net.dnsmasq["dhcp-range"]).toBe(`10.200.0.0,static,255.255.255.0,5m`);
    expect(net.subnet).toBe("10.200.0.0/24");
    expect(net.cniConflist.plugins.map((p: any) => p.type)).toEqual(["bridge", "firewall", "tc-redirect-tap", "runner-fleet-vm-port"]);
    // The plugin binds ports of the VM bridge in the table the fireactions unit loads.
    expect(net.cniConflist.plugins[3]).toEqual({ type: "runner-fleet-vm-port", bridge: BRIDGE, hostsDir: net.dnsmasq["dhcp-hostsdir"], stateDir: "/run/runner-fleet/vm-ports", table: guard().vmPorts.name });
    expect(net.cniConflist.plugins[3].stateDir).not.toBe(net.dnsmasq["dhcp-hostsdir"]);
  });

  it("is what roles/fireactions.nix deploys: the CNI file, services.dnsmasq, the firewall's port 53 on the bridge", () => {
    const net = vmNetwork();
    const defs = nixEval(`
      let t = import ${join(root, "test", "support", "nix-modules.nix")};
          r = t.call { file = ${join(root, "nix", "modules", "roles", "fireactions.nix")}; inventory = t.readInventory ${join(root, "nix", "inventory.example.json")}; hostName = "aws-metal-1"; };
      in { cni = t.defsAt [ "environment" "etc" "cni/net.d/fireactions.conflist" "text" ] r;
           dnsmasq = t.defsAt [ "services" "dnsmasq" ] r;
           firewall = t.defsAt [ "networking" "firewall" "interfaces" ] r; }`);
    expect(defs.cni.map((d: any) => JSON.parse(d.value))).toEqual([net.cniConflist]);
    expect(defs.dnsmasq.map((d: any) => d.value)).toEqual([{ enable: true, resolveLocalQueries: false, settings: net.dnsmasq }]);
    expect(defs.firewall.map((d: any) => d.value)).toEqual([{ [BRIDGE]: { allowedUDPPorts: [53, 67], allowedTCPPorts: [53] } }]);
  });

  it("DHCP answers only a MAC the CNI plugin recorded, with exactly its CNI address; ADD binds the port, DEL unbinds it", () => {
    const table = guard().vmPorts.name;
    const vm3Mac = macOf(ns.vm3);
    expect(readFileSync(join(hostsDir(), "runner-vm1"), "utf8")).toBe(`${macOf(ns.vm1)},${VM1}\n`);
    expect(dhcpLease(ns.vm1)).toEqual({ ip: VM1, router: GATEWAY, dns: GATEWAY });
    // VM 3 has no record. Its port bound by hand, so the port table lets its request through:
    // dnsmasq (static) stays silent all the same.
    const byHand = `{ "p3" . ${vm3Mac} . ${VM3}, "p3" . ${vm3Mac} . 0.0.0.0 }`;
    inNs(ns.host, "nft", "add", "element", "bridge", table, "vm_ports", byHand);
    expect(dhcpLease(ns.vm3)).toBeNull();
    inNs(ns.host, "nft", "delete", "element", "bridge", table, "vm_ports", byHand);
    expect(connects(ns.vm3, OUT.internet, 80)).toBe(false);
    // A new file is read while dnsmasq runs (inotify), no restart.
    const added = addVm("vm3");
    expect(added.status).toBe(0);
    // ADD passes the previous result on untouched (the SDK reads it after us).
    expect(added.out).toEqual(tcRedirectTapResult("runner-vm3", vm3Mac, VM3, "p3"));
    expect(portElements()).toContain(`"p3" . ${vm3Mac} . ${VM3}`);
    expect(readFileSync(join(stateDir(), "runner-vm3"), "utf8")).toBe(`p3 ${vm3Mac} ${VM3}\n`);
    expect(dhcpLease(ns.vm3)).toEqual({ ip: VM3, router: GATEWAY, dns: GATEWAY });
    expect(connects(ns.vm3, OUT.internet, 80)).toBe(true);
    expect(cniVmPort("CHECK", "runner-vm3").status).toBe(0);
    expect(cniVmPort("DEL", "runner-vm3").status).toBe(0);
    expect(existsSync(join(hostsDir(), "runner-vm3"))).toBe(false);
    expect(existsSync(join(stateDir(), "runner-vm3"))).toBe(false);
    expect(portElements()).not.toContain(`"p3"`);
    expect(connects(ns.vm3, OUT.internet, 80)).toBe(false);
    expect(cniVmPort("CHECK", "runner-vm3").status).not.toBe(0);
    // DEL twice, and DEL for a VM that never had an ADD (the SDK deletes before it adds): fine.
    expect(cniVmPort("DEL", "runner-vm3").status).toBe(0);
    expect(cniVmPort("DEL", "runner-vm9").status).toBe(0);
    // The other VMs' bindings are untouched.
    expect(cniVmPort("CHECK", "runner-vm1").status).toBe(0);
  }, 60_000);

  it("the CNI plugin fails ADD as CNI expects when the result has no VM interface or not one port, or nft fails; refuses odd ids", () => {
    const noVm = tcRedirectTapResult("someone-else", "02:00:00:00:00:09", "10.200.0.9");
    const r = cniVmPort("ADD", "runner-vm3", noVm);
    expect(r.status).not.toBe(0);
    expect(r.out).toMatchObject({ cniVersion: "1.0.0", code: 999, msg: expect.stringMatching(/no VM interface/) });
    expect(existsSync(join(hostsDir(), "runner-vm3"))).toBe(false);
    // Two interfaces without a sandbox besides the bridge: which one is the port is not known.
    const twoPorts = tcRedirectTapResult("runner-vm3", "02:00:00:00:00:09", "10.200.0.9", "p3");
    twoPorts.interfaces.push({ name: "veth99", mac: "02:00:00:00:00:0a" });
    expect(cniVmPort("ADD", "runner-vm3", twoPorts).out.msg).toMatch(/not exactly one bridge port/);
    // nft refuses (here: a stand-in that fails as nft does): ADD fails, nothing for dnsmasq.
    const failing = mkdtempSync(join(scratch, "nft-fails-"));
    writeFileSync(join(failing, "nft"), "#!/bin/sh\necho 'Error: Could not process rule: No such file or directory' >&2\nexit 1\n", { mode: 0o755 });
    const refused = cniVmPort("ADD", "runner-vm3", tcRedirectTapResult("runner-vm3", macOf(ns.vm3), VM3, "p3"), `${failing}:${process.env.PATH}`);
    expect(refused.status).not.toBe(0);
    expect(refused.out).toMatchObject({ code: 999, msg: expect.stringMatching(/^nft: cannot bind port p3 to .* No such file or directory/) });
    expect(existsSync(join(hostsDir(), "runner-vm3"))).toBe(false);
    // The SDK's cleanup DEL after a failed ADD finds the record and succeeds.
    expect(cniVmPort("DEL", "runner-vm3").status).toBe(0);
    expect(existsSync(join(stateDir(), "runner-vm3"))).toBe(false);
    expect(cniVmPort("ADD", "../escape", tcRedirectTapResult("../escape", "02:00:00:00:00:09", "10.200.0.9")).out.msg).toMatch(/not a plain name/);
    expect(cniVmPort("VERSION", "").out).toEqual({ cniVersion: "1.0.0", supportedVersions: ["0.4.0", "1.0.0"] });
  });

  it("whatever strings the previous result holds, ADD is refused or adds exactly that port's two elements (fast-check)", () => {
    const table = guard().vmPorts.name;
    const stub = mkdtempSync(join(scratch, "nft-log-"));
    const log = join(stub, "log");
    writeFileSync(join(stub, "nft"), `#!/bin/sh\ncat >> ${log}\necho '<<end>>' >> ${log}\n`, { mode: 0o755 });
    const portRe = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
    const macRe = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
    const octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    const ipRe = new RegExp(`^${octet}([.]${octet}){3}$`);
    const byte = fc.integer({ min: 0, max: 255 });
    const hexByte = byte.map((n) => n.toString(16).padStart(2, "0"));
    // Strings that would change an nft command's structure if they got into it.
    const nasty = fc.constantFrom('"', " ", "}", "{", ",", ";", "\n", "\t", "\r", "*", "\\", "\u0000", "$(id)", " . ", "é", "\u00a0");
    const spiced = (valid: fc.Arbitrary<string>) => fc.tuple(valid, nasty, fc.string({ maxLength: 4 }), fc.boolean())
      .map(([v, n, t, front]) => (front ? `${n}${t}${v}` : `${v}${n}${t}`));
    const any = fc.oneof(fc.string(), fc.string({ unit: "grapheme" }), fc.string({ unit: "binary", maxLength: 20 }));
    // Valid values weighted up, so a good share of the runs is accepted (counted below).
    const port = fc.oneof({ arbitrary: fc.stringMatching(portRe), weight: 6 }, fc.constant(BRIDGE), fc.constant("veth0123456789ab"), spiced(fc.stringMatching(portRe)), any);
    const validMac = fc.array(hexByte, { minLength: 6, maxLength: 6 }).map((a) => a.join(":"));
    const mac = fc.oneof({ arbitrary: validMac, weight: 5 }, validMac.map((m) => m.toUpperCase()), spiced(validMac), any);
    const validIp = fc.array(byte, { minLength: 4, maxLength: 4 }).map((a) => a.join("."));
    const addr = fc.oneof({ arbitrary: validIp, weight: 6 }, fc.constantFrom("0.0.0.0", "256.1.1.1", "01.2.3.4", "1.2.3"), spiced(validIp), any);
    let accepted = 0;
    fc.assert(fc.property(port, mac, addr, fc.boolean(), (p, m, a, secondPort) => {
      rmSync(log, { force: true });
      const prev = tcRedirectTapResult("runner-prop", m, a, p);
      if (secondPort) prev.interfaces.push({ name: "veth99", mac: "02:00:00:00:00:0a" });
      const r = cniVmPort("ADD", "runner-prop", prev, `${stub}:${process.env.PATH}`);
      const ip = `${a}/24`.split("/")[0];
      // The port: the one interface without a sandbox that is not the bridge.
      const ports = [p, ...(secondPort ? ["veth99"] : [])].filter((n) => n !== BRIDGE);
      const ok = ports.length === 1 && portRe.test(ports[0]) && macRe.test(m.toLowerCase()) && ipRe.test(ip) && ip !== "0.0.0.0";
      const calls = existsSync(log) ? readFileSync(log, "utf8") : "";
      if (!ok) {
        expect(r.status, JSON.stringify([p, m, a])).not.toBe(0);
        expect(r.out).toMatchObject({ code: 999 });
        expect(calls).toBe("");
        return;
      }
      expect(r.status, `${JSON.stringify([p, m, a])}: ${JSON.stringify(r.out)}`).toBe(0);
      accepted++;
      const lm = m.toLowerCase();
      expect(calls).toBe(`add element bridge ${table} vm_ports { "${ports[0]}" . ${lm} . ${ip}, "${ports[0]}" . ${lm} . 0.0.0.0 }\n<<end>>\n`);
    }), { numRuns: 150 });
    expect(accepted).toBeGreaterThan(20);
    for (const dir of [hostsDir(), stateDir()]) rmSync(join(dir, "runner-prop"), { force: true });
  }, 120_000);

  it("dnsmasq with those settings answers at the gateway only: not on loopback, not on the uplink", () => {
    expect(resolves(ns.host, GATEWAY, "udp")).toBe(true);
    expect(resolves(ns.host, GATEWAY, "tcp")).toBe(true);
    for (const addr of ["127.0.0.1", HOST_UPLINK]) {
      expect(resolves(ns.host, addr, "udp"), addr).toBe(false);
      expect(resolves(ns.host, addr, "tcp"), addr).toBe(false);
    }
    expect(resolves(ns.out, HOST_UPLINK, "udp")).toBe(false);
  }, 30_000);
});
