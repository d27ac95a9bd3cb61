/**
 * The exporter's bench rows (npm run bench; `--monitoring-only` for these alone): what a scrape of
 * runner-fleet-exporter costs on a host laid out as NixOS does (10 generations, the secrets of a
 * fireactions host, its units), against floors measured in the same run:
 *
 * - /metrics latency: GET /metrics, median and max of N sequential scrapes. Floor: python3's
 *   ThreadingHTTPServer answering the same number of bytes from memory (what any exporter in
 *   this interpreter pays before it reads a single fact).
 * - relay latency: GET /metrics/fireactions through the exporter. Floor: the same GET straight to
 *   the upstream (the fireactions stand-in's metrics listener).
 * - peak RSS of the exporter after the scrapes. Floor: the bare server's.
 *
 * systemctl is a shell STAND-IN printing `show`'s blocks (no systemd runs here), so the unit
 * facts cost one fork+exec of /bin/sh per scrape, close to what `systemctl show` costs on a host.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { table } from "./bench-lib";
import { makeSystemRoot, startExporter, writeRootFile } from "../test/support/exporter";
import { freePort } from "../test/support/free-port";

/** Targets: a scrape within this many ms of the floor; a relay within this ratio of a direct GET (plus 5 ms); memory within this ratio. */
const SCRAPE_MAX_EXTRA_MS = 50;
const RELAY_MAX_RATIO = 2;
const RSS_MAX_RATIO = 1.5;

/** Serves one body, read from a file, at every path: the floor, and the upstream the exporter relays. */
const STATIC_SERVER = `
import http.server, sys
body = open(sys.argv[2], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
host, port = sys.argv[1].rsplit(":", 1)
print("ready", flush=True)
http.server.ThreadingHTTPServer((host, int(port)), H).serve_forever()
`;

/** What fireactions v0.4.0 serves for a host with 4 pools (server/metrics.go names). */
function fireactionsMetrics(): string {
  const lines = ["fireactions_server_up 1", "fireactions_pool_total 4"];
  const values: Array<[string, number]> = [["max_runners_count", 10], ["min_runners_count", 2], ["current_runners_count", 3], ["status", 1], ["scale_requests", 5], ["scale_successes", 5], ["scale_failures", 0]];
  for (let p = 0; p < 4; p++) for (const [m, v] of values) lines.push(`fireactions_pool_${m}{pool="p${p}"} ${v}`);
  return `${lines.join("\n")}\n`;
}

const UNITS = ["vault-agent-runner-fleet", "runner-fleet-secrets", "fireactions", "runner-fleet-scaler"];
const SECRETS = ["/run/secrets/github-app-id", "/run/secrets/github-app-key.pem"];

function peakRssMib(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "-");

async function startPy(script: string, args: string[]): Promise<ChildProcess> {
  const p = spawn("python3", ["-c", script, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((ok, fail) => {
    p.stdout!.once("data", () => ok());
    p.once("exit", (code) => fail(new Error(`python3 exited ${code}`)));
  });
  await new Promise((r) => setTimeout(r, 100)); // "ready" comes just before serve_forever
  return p;
}

/** Milliseconds of each of n sequential GETs (after two warm-ups). */
async function timings(url: string, n: number): Promise<{ ms: number[]; bytes: number }> {
  let bytes = 0;
  for (let i = 0; i < 2; i++) bytes = (await (await fetch(url)).arrayBuffer()).byteLength;
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = await fetch(url);
    await r.arrayBuffer();
    ms.push(performance.now() - t0);
    if (r.status !== 200) throw new Error(`${url}: HTTP ${r.status}`);
  }
  return { ms, bytes };
}

export async function benchMonitoring(opts: { work: string; samples?: number; log?: (s: string) => void }): Promise<{ lines: string[]; failures: number }> {
  const log = opts.log ?? (() => {});
  const n = opts.samples ?? 100;
  const dir = fs.mkdtempSync(path.join(opts.work, "monitoring-"));
  const root = path.join(dir, "host");
  makeSystemRoot(root, { generations: 10, profile: 10, current: 10, booted: 9 });
  for (const s of SECRETS) writeRootFile(root, s, "secret");
  const systemctl = path.join(dir, "systemctl");
  fs.writeFileSync(systemctl, `#!/bin/sh\n# STAND-IN: systemctl show --property=Id,ActiveState -- UNITS\nshift 3\nfirst=1\nfor u in "$@"; do [ $first = 1 ] || echo; first=0; printf 'Id=%s.service\\nActiveState=active\\n' "$u"; done\n`);
  fs.chmodSync(systemctl, 0o755);
  const upAddr = `127.0.0.1:${await freePort()}`;
  const upstreamBody = path.join(dir, "fireactions-metrics.txt");
  fs.writeFileSync(upstreamBody, fireactionsMetrics());
  const upstream = await startPy(STATIC_SERVER, [upAddr, upstreamBody]);
  const children: ChildProcess[] = [upstream];
  try {
    log(`monitoring bench: ${n} scrapes of the exporter ... `);
    const ex = await startExporter({
      listen: `127.0.0.1:${await freePort()}`, root, configFile: path.join(dir, "exporter.json"), systemctl,
      config: { secrets: SECRETS, units: UNITS, relays: { fireactions: `http://${upAddr}/metrics` } },
    });
    children.push(ex.proc);
    const scrape = await timings(`${ex.url}/metrics`, n);
    const relay = await timings(`${ex.url}/metrics/fireactions`, n);
    const rss = peakRssMib(ex.proc.pid!);
    await ex.stop();
    log("floors ... ");
    const floorAddr = `127.0.0.1:${await freePort()}`;
    const floorBody = path.join(dir, "floor-body");
    fs.writeFileSync(floorBody, "x".repeat(scrape.bytes));
    const floorServer = await startPy(STATIC_SERVER, [floorAddr, floorBody]);
    children.push(floorServer);
    const floor = await timings(`http://${floorAddr}/metrics`, n);
    const floorRss = peakRssMib(floorServer.pid!);
    const direct = await timings(`http://${upAddr}/metrics`, n);
    log("done\n");

    const scrapeOk = median(scrape.ms) <= median(floor.ms) + SCRAPE_MAX_EXTRA_MS;
    const relayOk = median(relay.ms) <= RELAY_MAX_RATIO * median(direct.ms) + 5;
    const rssOk = rss <= RSS_MAX_RATIO * floorRss;
    const verdict = (ok: boolean) => (ok ? "PASS" : "FAIL");
    const lines = [
      "",
      `Exporter (runner-fleet-exporter; a host root with 10 generations, ${SECRETS.length} secrets, ${UNITS.length} units, a systemctl stand-in; floors in the same run)`,
      table([
        ["row", "exporter", "floor", "x", "target", "result"],
        [`GET /metrics ms, median of ${n} (max)`, `${fmt(median(scrape.ms))} (${fmt(Math.max(...scrape.ms))})`, `${fmt(median(floor.ms))} (${fmt(Math.max(...floor.ms))})`,
          fmt(median(scrape.ms) / median(floor.ms)), `<= floor + ${SCRAPE_MAX_EXTRA_MS} ms`, verdict(scrapeOk)],
        [`GET /metrics/fireactions ms, median of ${n} (max)`, `${fmt(median(relay.ms))} (${fmt(Math.max(...relay.ms))})`, `${fmt(median(direct.ms))} (${fmt(Math.max(...direct.ms))})`,
          fmt(median(relay.ms) / median(direct.ms)), `<= ${RELAY_MAX_RATIO}x direct + 5 ms`, verdict(relayOk)],
        ["peak RSS MiB", fmt(rss, 1), fmt(floorRss, 1), fmt(rss / floorRss), `<= ${RSS_MAX_RATIO}x`, verdict(rssOk)],
      ]),
      `  floor (/metrics, RSS): python3's ThreadingHTTPServer answering the same ${scrape.bytes} bytes from memory`,
      "  floor (relay): the same GET straight to the upstream metrics listener",
    ];
    return { lines, failures: [scrapeOk, relayOk, rssOk].filter((ok) => !ok).length };
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill();
  }
}
