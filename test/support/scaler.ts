/**
 * Starting the real scaler (nix/pkgs/runner-fleet-scaler.py) from a test or the bench, and
 * reading its metrics. Used by test/scaler-standin.test.ts, test/e2e/scaler.e2e.ts and
 * scripts/bench-scaler.ts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const SCALER = resolve(__dirname, "..", "..", "nix", "pkgs", "runner-fleet-scaler.py");

export interface ScalerProc {
  proc: ChildProcess;
  /** What it wrote to stderr (its log) so far. */
  log(): string;
  metrics(): Promise<string>;
  /** One series' value, e.g. metric("current", "default"); undefined when absent. */
  metric(name: string, pool?: string): Promise<number | undefined>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** The value of `runner_fleet_scaler_pool_<name>{pool="<pool>"}` (or a bare name) in metrics text. */
export function metricValue(text: string, name: string, pool?: string): number | undefined {
  const series = pool === undefined ? name : `runner_fleet_scaler_pool_${name}{pool="${pool}"}`;
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * `lock`: the drain's scale lock (--lock). Without one, a path that does not exist: no drain
 * runs, and the machine's /run/runner-fleet/scale.lock is none of a test's business.
 * `passwordFile`: fireactions' API password (--api-password-file; the unit's LoadCredential copy).
 */
export async function startScaler(opts: { pools: string; poolsDir: string; api: string; metricsAddress: string; interval?: number; maxBackoff?: number; lock?: string; passwordFile?: string }): Promise<ScalerProc> {
  const lock = opts.lock ?? join(tmpdir(), `runner-fleet-test-${process.pid}-no-drain`, "scale.lock");
  const args = [SCALER, "--pools", opts.pools, "--pools-dir", opts.poolsDir, "--api", opts.api,
    "--metrics-address", opts.metricsAddress, "--interval", String(opts.interval ?? 0.2), "--max-backoff", String(opts.maxBackoff ?? 2), "--lock", lock,
    ...(opts.passwordFile ? ["--api-password-file", opts.passwordFile] : [])];
  const proc = spawn("python3", args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  const url = `http://${opts.metricsAddress}/metrics`;
  const metrics = async () => (await fetch(url)).text();
  const end = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`scaler exited ${proc.exitCode}: ${stderr}`);
    try {
      await metrics();
      break;
    } catch {
      if (Date.now() > end) throw new Error(`scaler metrics never answered: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    proc,
    log: () => stderr,
    metrics,
    metric: async (name, pool) => metricValue(await metrics(), name, pool),
    async stop(signal = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      await new Promise<void>((ok) => {
        proc.once("exit", () => ok());
        proc.kill(signal);
      });
    },
  };
}
