/**
 * The registry mirror's bench rows (npm run bench; `--mirror-only` for these alone, --no-mirror
 * skips them), on loopback with real programs: Debian's docker-registry as the upstream and, with
 * the config nix/pkgs/runner-fleet-registry-mirror.py renders, as the mirror (distribution proxy
 * mode); skopeo pulls (copy to a fresh dir: each pull fetches every blob).
 *
 * - cold: the first pull of an image through the mirror (it fetches from the upstream while
 *   serving and stores what it fetched);
 * - warm: the second pull of it through the mirror, served from its cache;
 * - floor, in the same run: a direct pull of the same image from the upstream.
 * Median of SAMPLES images, each pushed fresh (random layer) so every cold pull is cold.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { median, table } from "./bench-lib";
import { writeOciImage } from "../test/support/oci-image";

const HELPER = path.join(__dirname, "..", "nix", "pkgs", "runner-fleet-registry-mirror.py");
const LAYER_MIB = 32;
/** Targets against the direct pull: a cold pull may cost the store; a warm one should not. */
const COLD_MAX_RATIO = 2.5;
const WARM_MAX_RATIO = 1.5;

const freePort = () => new Promise<number>((done, fail) => {
  const s = net.createServer().listen(0, "127.0.0.1", () => { const p = (s.address() as net.AddressInfo).port; s.close(() => done(p)); });
  s.on("error", fail);
});
async function waitPort(port: number) {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((done) => { const c = net.connect(port, "127.0.0.1", () => { c.end(); done(true); }); c.on("error", () => done(false)); });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}
function skopeo(args: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync("skopeo", ["copy", "--quiet", ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`skopeo copy ${args.join(" ")}: ${r.stderr.trim()}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export async function benchMirror(opts: { work: string; samples?: number; log?: (s: string) => void }): Promise<{ lines: string[]; failures: number }> {
  const log = opts.log ?? (() => {});
  const missing = ["docker-registry", "skopeo", "python3"].filter((p) => spawnSync("sh", ["-c", `command -v ${p}`]).status !== 0);
  if (missing.length) return { lines: ["", `Registry mirror rows: skipped, missing ${missing.join(", ")} (node scripts/ensure-tools.mjs installs them)`], failures: 0 };
  const dir = fs.mkdtempSync(path.join(opts.work, "mirror-"));
  const samples = opts.samples ?? 3;
  const procs: ChildProcess[] = [];
  const start = (name: string, config: string) => {
    const out = fs.openSync(path.join(dir, `${name}.log`), "a");
    procs.push(spawn("docker-registry", ["serve", config], { stdio: ["ignore", out, out] }));
  };
  try {
    const [upPort, mirrorPort] = [await freePort(), await freePort()];
    fs.writeFileSync(path.join(dir, "upstream.json"), JSON.stringify({
      version: 0.1, log: { level: "warn", accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: path.join(dir, "upstream") }, delete: { enabled: true } },
      http: { addr: `127.0.0.1:${upPort}` },
    }));
    start("upstream", path.join(dir, "upstream.json"));
    fs.writeFileSync(path.join(dir, "mirror-config.json"), JSON.stringify({
      listen: "127.0.0.1", storageDir: path.join(dir, "cache"), credentialsDir: path.join(dir, "creds"),
      upstreams: { "docker.io": { url: `http://127.0.0.1:${upPort}`, port: mirrorPort } },
    }));
    const rendered = spawnSync("python3", [HELPER, "--config", path.join(dir, "mirror-config.json"), "registry", "docker.io", "--out", path.join(dir, "mirror.json")], { encoding: "utf8" });
    if (rendered.status !== 0) throw new Error(rendered.stderr);
    start("mirror", path.join(dir, "mirror.json"));
    await Promise.all([waitPort(upPort), waitPort(mirrorPort)]);

    const direct: number[] = [], cold: number[] = [], warm: number[] = [];
    for (let i = 0; i < samples; i++) {
      const image = `library/bench-${i}`;
      writeOciImage(path.join(dir, `oci-${i}`), "1", LAYER_MIB << 20);
      skopeo(["--dest-tls-verify=false", `oci:${path.join(dir, `oci-${i}`)}:1`, `docker://127.0.0.1:${upPort}/${image}:1`]);
      const to = (what: string) => `dir:${path.join(dir, `pull-${i}-${what}`)}`;
      direct.push(skopeo(["--src-tls-verify=false", `docker://127.0.0.1:${upPort}/${image}:1`, to("direct")]));
      cold.push(skopeo(["--src-tls-verify=false", `docker://127.0.0.1:${mirrorPort}/${image}:1`, to("cold")]));
      warm.push(skopeo(["--src-tls-verify=false", `docker://127.0.0.1:${mirrorPort}/${image}:1`, to("warm")]));
      log(`mirror sample ${i + 1}/${samples}: direct ${direct.at(-1)!.toFixed(3)} s, cold ${cold.at(-1)!.toFixed(3)} s, warm ${warm.at(-1)!.toFixed(3)} s\n`);
      for (const w of ["direct", "cold", "warm"]) fs.rmSync(path.join(dir, `pull-${i}-${w}`), { recursive: true, force: true });
    }
    const floor = median(direct);
    const row = (what: string, xs: number[], max: number): [string[], boolean] => {
      const m = median(xs);
      const ok = m <= floor * max;
      return [[what, m.toFixed(3), floor.toFixed(3), (m / floor).toFixed(2), `<= ${max}x`, ok ? "PASS" : "FAIL"], ok];
    };
    const [coldRow, coldOk] = row("cold: first pull through the mirror", cold, COLD_MAX_RATIO);
    const [warmRow, warmOk] = row("warm: second pull, from the mirror's cache", warm, WARM_MAX_RATIO);
    const lines = [
      "", `Registry mirror (skopeo pulls of a ${LAYER_MIB} MiB layer on loopback, median of ${samples}; floor: the same image pulled direct from the upstream)`,
      table([["pull", "median s", "floor s", "ratio", "target", "verdict"], coldRow, warmRow]),
    ];
    return { lines, failures: [coldOk, warmOk].filter((ok) => !ok).length };
  } finally {
    for (const p of procs) p.kill("SIGTERM");
  }
}
