/**
 * What a process tree costs, read from /proc while it runs: `npm run bench -- --engine` runs
 * `pulumi`, which starts the language host (and node under it) and one process per provider
 * plugin. GNU time reports the largest single process's peak RSS only (wait4's ru_maxrss is a
 * maximum over the waited-for processes, not a sum), so the tree's peak memory is sampled: the
 * largest sum of RSS of every live process of the tree at one instant. CPU time is kept per
 * program (argv[0]'s base name), from the last sample of each process.
 */
import * as fs from "node:fs";
import * as path from "node:path";

const PAGE = 4096;
const HZ = 100; // USER_HZ, the unit of /proc/<pid>/stat times on Linux

export interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime, in seconds. */
  cpu: number;
  /** cutime + cstime: children already reaped, in seconds. */
  childCpu: number;
  rssBytes: number;
}

/** Fields of /proc/<pid>/stat; the command name in parentheses may itself hold spaces and ")". */
export function parseStat(pid: number, text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const f = text.slice(close + 2).split(" ");
  // f[0] is field 3 (state): field n is f[n - 3].
  const n = (i: number) => Number(f[i - 3]);
  return { pid, ppid: n(4), cpu: (n(14) + n(15)) / HZ, childCpu: (n(16) + n(17)) / HZ, rssBytes: n(24) * PAGE };
}

export function readStat(pid: number): ProcStat | undefined {
  try {
    return parseStat(pid, fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined; // gone
  }
}

function programOf(pid: number): string {
  try {
    const argv0 = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0];
    return path.basename(argv0) || "?";
  } catch {
    return "?";
  }
}

/** The pids of `root` and all its descendants among `stats`. */
export function descendants(root: number, stats: ProcStat[]): ProcStat[] {
  const children = new Map<number, ProcStat[]>();
  for (const s of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s]);
  const out: ProcStat[] = [];
  const stack = stats.filter((s) => s.pid === root);
  while (stack.length) {
    const s = stack.pop()!;
    out.push(s);
    stack.push(...(children.get(s.pid) ?? []));
  }
  return out;
}

export interface TreeUsage {
  /** Largest sum of RSS over the tree at one sample, MiB. */
  peakTreeMib: number;
  /** CPU seconds by program, from each process's last sample. */
  cpuByProgram: Record<string, number>;
  samples: number;
}

/** Samples the tree under `root` every `everyMs` until stop() is called. */
export function sampleTree(root: number, everyMs = 100): { stop(): TreeUsage } {
  let peak = 0;
  let samples = 0;
  const last = new Map<number, { program: string; cpu: number }>();
  const tick = () => {
    const stats: ProcStat[] = [];
    for (const name of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      const s = readStat(Number(name));
      if (s) stats.push(s);
    }
    const tree = descendants(root, stats);
    samples++;
    peak = Math.max(peak, tree.reduce((a, s) => a + s.rssBytes, 0));
    for (const s of tree) {
      const seen = last.get(s.pid);
      // Read every time: `ip netns exec` becomes pulumi by exec, keeping its pid.
      last.set(s.pid, { program: programOf(s.pid) === "?" ? seen?.program ?? "?" : programOf(s.pid), cpu: s.cpu });
    }
  };
  tick();
  const timer = setInterval(tick, everyMs);
  return {
    stop() {
      clearInterval(timer);
      const cpuByProgram: Record<string, number> = {};
      for (const { program, cpu } of last.values()) cpuByProgram[program] = (cpuByProgram[program] ?? 0) + cpu;
      return { peakTreeMib: peak / 2 ** 20, cpuByProgram, samples };
    },
  };
}
