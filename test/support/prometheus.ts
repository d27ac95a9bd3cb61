/**
 * Debian's Prometheus (2.42), run for real by the monitoring tests, the e2e and the bench: it
 * scrapes the targets of a file_sd file (what the stack's prometheusTargets output holds), and
 * is queried through its HTTP API.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./free-port";

export interface PrometheusProc {
  url: string;
  dir: string;
  /** Instant query: the result vector's samples. */
  query(promql: string): Promise<Array<{ metric: Record<string, string>; value: number }>>;
  /** Polls `query` until `ok` holds for its result (or throws after timeoutMs). */
  until(promql: string, ok: (r: Array<{ metric: Record<string, string>; value: number }>) => boolean, timeoutMs?: number): Promise<Array<{ metric: Record<string, string>; value: number }>>;
  log(): string;
  stop(): Promise<void>;
}

/** prometheus.yml: one job reading the file_sd file; the targets' own __metrics_path__ picks the path. */
export function prometheusConfig(targetsFile: string, opts: { interval?: string; ruleFiles?: string[] } = {}): string {
  const interval = opts.interval ?? "1s";
  return [
    "global:",
    `  scrape_interval: ${interval}`,
    `  evaluation_interval: ${interval}`,
    ...(opts.ruleFiles?.length ? ["rule_files:", ...opts.ruleFiles.map((f) => `  - ${JSON.stringify(f)}`)] : []),
    "scrape_configs:",
    "  - job_name: runner-fleet",
    `    scrape_timeout: ${interval}`,
    "    file_sd_configs:",
    `      - files: [${JSON.stringify(targetsFile)}]`,
    "        refresh_interval: 1s",
    "",
  ].join("\n");
}

export async function startPrometheus(targets: unknown, opts: { interval?: string; ruleFiles?: string[]; netns?: string } = {}): Promise<PrometheusProc> {
  const dir = mkdtempSync(join(tmpdir(), "rf-prometheus-"));
  const targetsFile = join(dir, "targets.json");
  writeFileSync(targetsFile, JSON.stringify(targets));
  writeFileSync(join(dir, "prometheus.yml"), prometheusConfig(targetsFile, opts));
  const port = await freePort();
  const args = [`--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`,
    `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn"];
  const proc: ChildProcess = opts.netns
    ? spawn("ip", ["netns", "exec", opts.netns, "prometheus", ...args], { stdio: ["ignore", "ignore", "pipe"] })
    : spawn("prometheus", args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  const query = async (promql: string) => {
    const r = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await r.json()) as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> }; error?: string };
    if (body.status !== "success") throw new Error(`${promql}: ${body.error}`);
    return body.data.result.map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
  };
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      await new Promise<void>((ok) => { proc.once("exit", () => ok()); proc.kill("SIGTERM"); });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const until: PrometheusProc["until"] = async (promql, ok, timeoutMs = 20_000) => {
    const end = Date.now() + timeoutMs;
    let last: Awaited<ReturnType<typeof query>> = [];
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`prometheus exited ${proc.exitCode}: ${stderr}`);
      try {
        last = await query(promql);
        if (ok(last)) return last;
      } catch (err) {
        if (!(err instanceof TypeError)) throw err; // not listening yet
      }
      if (Date.now() > end) throw new Error(`${promql}: never as expected; last ${JSON.stringify(last)}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  return { url, dir, query, until, log: () => stderr, stop };
}
