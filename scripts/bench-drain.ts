/**
 * The drain's bench rows (npm run bench; `--drain-only` for these alone, `--no-drain` skips
 * them): what a pool edit costs on a host, against the fireactions v0.4.0 and GitHub STAND-INS
 * (test/stand-ins/) on loopback. Both ways run in the same run, on the same host, alternating:
 *
 * - reload (what runner-fleet-apply-pools does now): `runner-fleet-drain --reload -- <render>`,
 *   i.e. render the new config, POST /api/v1/reload.
 * - restart (what it did before #19, and the floor a reload must beat): render the new config,
 *   stop fireactions (SIGTERM: v0.4.0 stops every VM) and start it again.
 *
 * Apply time: from the start of the step until fireactions' API reports the edited pool's new
 * maxRunners. VMs kept: the share of the VMs running before the edit that still run after it
 * (a VM that stops takes its job with it).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { table } from "./bench-lib";
import {
  apiPasswordFile, appKeyPair, poolEntry, startFireactions, startGitHub, startStandInHost, waitFor, type FireactionsStandIn,
} from "../test/stand-ins/support";

const APP_ID = 4242;
const DRAIN = path.resolve(__dirname, "..", "nix", "pkgs", "runner-fleet-drain.py");
const RENDERER = path.resolve(__dirname, "..", "nix", "pkgs", "render-fireactions-config.py");
const POOL = "edit";
const MIN = 3;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "-");

async function vmsOf(fa: FireactionsStandIn): Promise<string[]> {
  const r = await fetch(`${fa.api}/api/v1/pools/${POOL}/microvms`, { headers: fa.auth });
  return ((await r.json()) as { micro_vms: { VMID: string }[] }).micro_vms.map((v) => v.VMID).sort();
}
const maxOf = async (fa: FireactionsStandIn) => (await fa.pools()).find((p) => p.name === POOL)?.max_runners as number | undefined;
/** The pool's live VMs, once at least MIN run and each runner listens (older consoles stay on disk). */
async function settled(fa: FireactionsStandIn): Promise<string[] | undefined> {
  const vms = await vmsOf(fa);
  const consoles = fa.consoles(POOL);
  return vms.length >= MIN && vms.every((v) => consoles[v]?.includes(": Listening for Jobs")) ? vms : undefined;
}

/** Runs a command to its end; rejects with its stderr when it fails. */
function run(argv: string[]): Promise<void> {
  return new Promise((ok, fail) => {
    const p = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    p.stderr!.on("data", (d) => (err += d));
    p.on("exit", (code) => (code === 0 ? ok() : fail(new Error(`${argv.slice(0, 2).join(" ")} exited ${code}: ${err.slice(-800)}`))));
  });
}

export async function benchDrain(opts: { work: string; samples?: number; log?: (s: string) => void }): Promise<{ lines: string[]; failures: number }> {
  const log = opts.log ?? (() => {});
  const samples = opts.samples ?? 5;
  const dir = fs.mkdtempSync(path.join(opts.work, "drain-"));
  const keys = appKeyPair(dir);
  const gh = await startGitHub({ dir, appId: APP_ID, publicKeyFile: keys.pub, lostAfter: 30 });
  const pools = (max: number) => [poolEntry(POOL, { min: MIN, max, labels: ["self-hosted", POOL] })];
  let host = await startStandInHost({ dir: path.join(dir, "host"), pools: pools(MIN + 1), appId: APP_ID, keyFile: keys.key, githubApi: gh.url });
  const times = { reload: [] as number[], restart: [] as number[] };
  const kept = { reload: [] as number[], restart: [] as number[] };
  let max = MIN + 1;
  try {
    log(`drain bench: pool edit, reload vs restart, ${samples} each ... `);
    for (let i = 0; i < 2 * samples; i++) {
      const way = i % 2 === 0 ? "reload" : "restart";
      const before = await waitFor("the pool at min, its runners listening", () => settled(host.fa), 30_000);
      max = max === MIN + 1 ? MIN + 2 : MIN + 1;
      const t0 = performance.now();
      if (way === "reload") {
        fs.writeFileSync(path.join(host.sub, "pools-next.json"), JSON.stringify(pools(max)));
        await run(["python3", DRAIN, "--config", host.config, "--github-api", gh.url, "--reload", "--",
          "python3", RENDERER, "--pools", path.join(host.sub, "pools-next.json"), "--app-id-file", path.join(host.sub, "github-app-id"),
          "--app-key-file", keys.key, "--out", host.config, "--bind-address", host.bind, "--metrics-address", host.metrics,
          "--api-password-file", apiPasswordFile(host.sub)]);
      } else {
        host.rerender(pools(max));
        await host.fa.stop();
        host = { ...host, fa: await startFireactions({ config: host.config, root: path.join(host.sub, "root"), githubApi: gh.url, api: host.bind, metrics: host.metrics }) };
      }
      await waitFor("the new maxRunners", async () => ((await maxOf(host.fa)) === max) || undefined, 30_000);
      times[way].push((performance.now() - t0) / 1000);
      const after = new Set(await vmsOf(host.fa));
      kept[way].push(before.length ? before.filter((v) => after.has(v)).length / before.length : NaN);
    }
    log(`reload ${fmt(median(times.reload))} s, restart ${fmt(median(times.restart))} s\n`);
  } finally {
    await host.fa.stop();
    await gh.stop();
  }
  const keptPct = (xs: number[]) => 100 * Math.min(...xs);
  const timeOk = median(times.reload) <= median(times.restart);
  const keptOk = keptPct(kept.reload) === 100;
  const verdict = (ok: boolean) => (ok ? "PASS" : "FAIL");
  const lines = [
    "",
    `Pool edit on a host (the fireactions and GitHub stand-ins on loopback; ${MIN} VMs running; restart measured in the same run)`,
    table([
      ["row", "reload", "restart", "x", "target", "result"],
      [`apply s, median of ${samples} (max)`, `${fmt(median(times.reload))} (${fmt(Math.max(...times.reload))})`,
        `${fmt(median(times.restart))} (${fmt(Math.max(...times.restart))})`, fmt(median(times.reload) / median(times.restart)), "<= restart", verdict(timeOk)],
      ["VMs kept %, least of the runs", fmt(keptPct(kept.reload), 0), fmt(keptPct(kept.restart), 0), "-", "reload 100", verdict(keptOk)],
    ]),
    "  apply: the step's start -> fireactions' API reporting the edited pool's new maxRunners",
    "  reload: runner-fleet-drain --reload (render, POST /api/v1/reload); restart: render, SIGTERM, start, as before #19",
    "  VMs kept: VMs running before the edit that still run after it (each stopped VM is a killed job when busy)",
  ];
  return { lines, failures: [timeOk, keptOk].filter((ok) => !ok).length };
}
