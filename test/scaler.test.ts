// The on-demand scaler (nix/pkgs/runner-fleet-scaler.py), unit by unit: the console lines it
// reads, taken from actions/runner's source (docs/upstream.md, "On-demand scaling (#20)"); its
// decision rule, as properties and as a closed loop against a model of fireactions v0.4.0's
// Pool; pools.json; the metrics text (checked by promtool); following real log files through
// appends, truncation, rotation and deletion; and its systemd unit. The program runs under
// python3 through test/support/scaler-driver.py, one process for the whole file.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { appendFileSync, mkdtempSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import fc from "fast-check";
import { renderPoolsJson, resolvePool } from "../components/pools";

const root = resolve(__dirname, "..");
export const SCALER = join(root, "nix", "pkgs", "runner-fleet-scaler.py");
const DRIVER = join(root, "test", "support", "scaler-driver.py");

/** One python3 running the driver; requests are answered in order, one JSON line each. */
class Driver {
  private child: ChildProcessWithoutNullStreams;
  private waiting: ((v: any) => void)[] = [];
  constructor() {
    this.child = spawn("python3", [DRIVER, SCALER]);
    createInterface({ input: this.child.stdout }).on("line", (line) => this.waiting.shift()!(JSON.parse(line)));
  }
  ask(op: string, body: Record<string, unknown>): Promise<any> {
    return new Promise((res) => {
      this.waiting.push(res);
      this.child.stdin.write(JSON.stringify({ op, ...body }) + "\n");
    });
  }
  close() {
    this.child.stdin.end();
  }
}

let py: Driver;
let scratch = "";
beforeAll(() => {
  py = new Driver();
  scratch = mkdtempSync(join(tmpdir(), "scaler-test-"));
});
afterAll(() => {
  py?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

// ---- console lines ----------------------------------------------------------------------

/** .NET's "u" format (dotnet/runtime DateTimeFormatInfo: yyyy'-'MM'-'dd HH':'mm':'ss'Z'). */
const stampOf = (d: Date) => d.toISOString().replace("T", " ").replace(/\.\d{3}Z$/, "Z");
/** The three lines, restated from actions/runner v2.336.0 (Runner.cs:491, JobDispatcher.cs:378 and :591). */
export const runnerLine = {
  listening: (at: Date) => `${stampOf(at)}: Listening for Jobs`,
  running: (at: Date, job: string) => `${stampOf(at)}: Running job: ${job}`,
  completed: (at: Date, job: string, result: string) => `${stampOf(at)}: Job ${job} completed with result: ${result}`,
};
const at = new Date("2026-12-02T18:30:05Z");
// TaskResult's names (actions/runner src/Sdk/DTWebApi/WebApi/TaskResult.cs).
const RESULTS = ["Succeeded", "SucceededWithIssues", "Failed", "Canceled", "Skipped", "Abandoned"];

describe("console-log parsing", () => {
  it("recognises the runner's listening, job and completion lines as the source writes them", async () => {
    expect(runnerLine.listening(at)).toBe("2026-12-02 18:30:05Z: Listening for Jobs");
    const lines = [
      runnerLine.listening(at),
      runnerLine.running(at, "build (ubuntu-24.04, 3)"),
      ...RESULTS.map((r) => runnerLine.completed(at, "build (ubuntu-24.04, 3)", r)),
    ];
    expect(await py.ask("parse", { lines })).toEqual(["listening", "job-started", ...RESULTS.map(() => "job-finished")]);
  });

  it("finds them behind journald's console prefix, with a serial console's CR", async () => {
    // journald-console.c: optional "[%5llu.%06llu] " then "identifier[pid]: " then the message.
    const lines = [
      `[   12.345678] fireactions[412]: ${runnerLine.listening(at)}\r`,
      `fireactions[412]: ${runnerLine.running(at, "test")}\r\n`,
      `run.sh[9]: ${runnerLine.completed(at, "test", "Failed")}`,
    ];
    expect(await py.ask("parse", { lines })).toEqual(["listening", "job-started", "job-finished"]);
  });

  it("ignores everything else the console carries", async () => {
    const lines = [
      "Current runner version: '2.336.0'",
      "√ Connected to GitHub",
      "[    0.000000] Linux version 6.1.102 (nixbld@localhost)",
      "[  OK  ] Started fireactions.service - Fireactions.",
      "Running job: build", // no timestamp: not the listener's line
      "2026-12-02 18:30:05Z: Listening for Jobs and more",
      "2026-12-02T18:30:05Z: Listening for Jobs", // ISO 'T' is not .NET's "u"
      "",
    ];
    expect(await py.ask("parse", { lines })).toEqual(lines.map(() => null));
  });

  it("takes a job name that contains the completion text as a job start", async () => {
    const lines = [runnerLine.running(at, "Job x completed with result: Failed")];
    expect(await py.ask("parse", { lines })).toEqual(["job-started"]);
  });

  it("gets the same events and state however the console bytes are split across reads", async () => {
    const noise = fc.oneof(
      fc.constantFrom("[    1.2] random: crng init done", "√ Connected to GitHub", "Current runner version: '2.336.0'", "ünïcødé ✓ line"),
      fc.string({ maxLength: 40 }).map((s) => s.replace(/[\r\n]/g, " ")),
    );
    const line = fc.oneof(
      noise,
      fc.constant(runnerLine.listening(at)),
      fc.string({ minLength: 1, maxLength: 20 }).map((j) => runnerLine.running(at, j.replace(/[\r\n]/g, "_"))),
      fc.constantFrom(...RESULTS).map((r) => runnerLine.completed(at, "j", r)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(line, { maxLength: 30 }), fc.array(fc.nat(400), { maxLength: 8 }), async (lines, cuts) => {
        const bytes = Buffer.from(lines.map((l) => l + "\n").join(""));
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const chunks: string[] = [];
        let from = 0;
        for (const p of [...points, bytes.length]) {
          chunks.push(bytes.subarray(from, p).toString("base64"));
          from = p;
        }
        const whole = await py.ask("feed", { chunks: [bytes.toString("base64")] });
        const split = await py.ask("feed", { chunks });
        expect(split).toEqual(whole);
        // The state follows the events: a finished job is final, a started one is busy.
        const ev: string[] = whole.events;
        const expected = ev.includes("job-finished") ? "done" : ev.includes("job-started") ? "busy" : ev.includes("listening") ? "idle" : "booting";
        expect(whole.state).toBe(expected);
      }),
      { numRuns: 150 },
    );
  });

  it("a later 'Listening for Jobs' (a reconnect) does not make a busy runner idle", async () => {
    const chunk = Buffer.from([runnerLine.listening(at), runnerLine.running(at, "j"), runnerLine.listening(at), ""].join("\n")).toString("base64");
    expect((await py.ask("feed", { chunks: [chunk] })).state).toBe("busy");
  });
});

// ---- the decision rule --------------------------------------------------------------------

const poolCase = fc
  .record({ min: fc.integer({ min: 1, max: 1000 }), extra: fc.integer({ min: 0, max: 1000 }), current: fc.nat(1200), busy: fc.nat(1200), paused: fc.boolean(), kept: fc.nat(1000) })
  .map(({ min, extra, current, busy, paused, kept }) => {
    const max = Math.min(1000, min + extra);
    // What fireactions' own loop keeps: its min_runners, the same as ours once reloaded.
    return { min, max, current, busy, paused, kept: kept % 3 === 0 ? min : Math.min(kept, max) };
  });

describe("decide(min, max, current, busy, paused, kept)", () => {
  it("never exceeds max, never scales a paused pool, and reaches min(max, busy + min)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(poolCase, { minLength: 1, maxLength: 50 }), async (cases) => {
        const out: [number, number][] = await py.ask("decide", { cases: cases.map((c) => [c.min, c.max, c.current, c.busy, c.paused, c.kept]) });
        cases.forEach((c, i) => {
          const [desired, add] = out[i];
          const busy = Math.min(c.busy, c.current);
          // What the pool holds once fireactions has topped it up to its own minimum.
          const base = c.paused ? c.current : Math.max(c.current, c.kept);
          expect(desired).toBe(Math.min(c.max, busy + c.min));
          expect(add).toBeGreaterThanOrEqual(0);
          if (add > 0) expect(base + add).toBe(desired);
          expect(base + add).toBeLessThanOrEqual(Math.max(c.max, base)); // never past max
          if (c.paused) expect(add).toBe(0);
          else expect(base + add).toBeGreaterThanOrEqual(desired);
          // It only adds, and nothing once idle >= min.
          if (c.current - busy >= c.min) expect(add).toBe(0);
        });
      }),
      { numRuns: 200 },
    );
  });

  it("keeps min idle on top of the busy runners (worked examples)", async () => {
    const cases = [[2, 5, 2, 0, false, 2], [2, 5, 2, 2, false, 2], [2, 5, 4, 4, false, 2], [2, 5, 3, 1, true, 2], [1, 1, 0, 0, false, 0],
      [2, 5, 0, 0, false, 2], [3, 8, 1, 1, false, 2]];
    // ... and below fireactions' own minimum it leaves the VMs up to that minimum to fireactions' loop.
    expect(await py.ask("decide", { cases })).toEqual([[2, 0], [4, 2], [5, 1], [3, 0], [1, 1], [2, 0], [4, 2]]);
  });

  // A closed loop: fireactions v0.4.0's Pool (server/pool.go: Start tops up to min every
  // second unless paused; the scale route adds one VM if that stays <= max, paused or not),
  // ephemeral runners (a VM leaves when its job ends), random job arrivals, pauses and live
  // edits of min/max. The scaler decides on what it sees each tick.
  it("in a loop with fireactions' own top-up, live edits and pauses: size <= max, paused pools get nothing, and it settles at min(max, busy + min)", async () => {
    const event = fc.oneof(
      { weight: 4, arbitrary: fc.record({ jobs: fc.nat(6) }) },
      { weight: 3, arbitrary: fc.record({ finish: fc.nat(6) }) },
      { weight: 1, arbitrary: fc.record({ pause: fc.boolean() }) },
      { weight: 1, arbitrary: fc.record({ min: fc.integer({ min: 1, max: 6 }), extra: fc.nat(6) }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.nat(6), fc.array(event, { maxLength: 25 }), async (min0, extra0, events) => {
        let min = min0;
        let max = min0 + extra0;
        let paused = false;
        let idle = 0; // VMs listening
        let busy = 0; // VMs running a job
        let queued = 0; // jobs waiting for a runner
        const fireactionsTopUp = () => {
          if (!paused) while (idle + busy < min) idle++;
        };
        const assign = () => {
          while (queued > 0 && idle > 0) (queued--, idle--, busy++);
        };
        const tick = async () => {
          fireactionsTopUp();
          assign();
          const size = idle + busy;
          const [[, add]] = await py.ask("decide", { cases: [[min, max, size, busy, paused, min]] });
          if (paused) expect(add).toBe(0);
          if (add > 0) {
            expect(size + add).toBeLessThanOrEqual(max); // never past maxRunners
            for (let i = 0; i < add; i++) if (idle + busy + 1 <= max) idle++; // Pool.Scale's own bound
            // It brings the idle runners up to min, no further (or stops at max).
            expect(idle === min || idle + busy === max).toBe(true);
          }
          assign();
        };
        for (const e of events) {
          if ("jobs" in e) queued += e.jobs;
          if ("finish" in e) busy -= Math.min(busy, e.finish); // those VMs exit: nothing stops them
          if ("pause" in e) paused = e.pause;
          if ("min" in e) (min = e.min, max = e.min + e.extra);
          await tick();
        }
        // No new jobs, unpaused: within a few passes it reaches min(max, busy + min); what is
        // above it (idle VMs left from a larger min) waits for jobs, as fireactions' would.
        paused = false;
        queued = 0;
        for (let i = 0; i < 3; i++) await tick();
        expect(idle + busy).toBeGreaterThanOrEqual(Math.min(max, busy + min));
        if (busy + min <= max) expect(idle).toBeGreaterThanOrEqual(min);
      }),
      { numRuns: 60 },
    );
  });
});

// ---- pools.json -------------------------------------------------------------------------

describe("pool limits from pools.json", () => {
  it("reads minRunners and maxRunners of every pool the Pulumi side writes", async () => {
    const pools = ["small", "medium", "large"].map((size) => resolvePool(`p-${size}`, { size: size as any, ...(size === "large" ? { maxRunners: 12 } : {}) }, "acme"));
    expect(await py.ask("limits", { text: renderPoolsJson(pools) })).toEqual({ "p-small": [1, 2], "p-medium": [2, 5], "p-large": [5, 12] });
  });

  it("names every problem at once, by key path", async () => {
    const text = JSON.stringify([
      { name: "Bad Name", minRunners: 1, maxRunners: 2 },
      { name: "a", minRunners: 0, maxRunners: 2 },
      { name: "b", minRunners: 3, maxRunners: 2 },
      { name: "b", minRunners: 1, maxRunners: 1 },
      { name: "c", minRunners: 1, maxRunners: true },
      7,
    ]);
    const { error } = await py.ask("limits", { text });
    expect(error.split("; ")).toEqual([
      "pools.json[0].name: must be lowercase letters, digits and dashes (1-63 characters)",
      "pools.json[1].minRunners: must be an integer from 1 to 1000",
      "pools.json[2].minRunners: 3 is more than maxRunners (2)",
      "pools.json[4].maxRunners: must be an integer from 1 to 1000",
      "pools.json[5]: must be an object",
    ]);
    expect((await py.ask("limits", { text: JSON.stringify([{ name: "b", minRunners: 1, maxRunners: 1 }, { name: "b", minRunners: 1, maxRunners: 1 }]) })).error)
      .toBe("pools.json[1].name: duplicate pool 'b'");
    expect((await py.ask("limits", { text: "[{" })).error).toMatch(/^pools\.json: not valid JSON/);
    expect((await py.ask("limits", { text: "{}" })).error).toBe("pools.json: must be a JSON array");
  });
});

// ---- metrics ------------------------------------------------------------------------------

describe("metrics text", () => {
  const pools = {
    default: { current: 5, busy: 3, idle: 2, desired: 5, min_runners: 2, max_runners: 5, paused: 0, scale_ups_total: 7, failures_total: 1 },
    "small-arm": { current: 1, busy: 0, idle: 1, desired: 1, min_runners: 1, max_runners: 2, paused: 1, scale_ups_total: 0, failures_total: 0 },
  };

  it("names each pool's current, busy, idle, desired, scale-ups and failures", async () => {
    const text: string = await py.ask("metrics", { pools, up: true });
    expect(text).toContain('runner_fleet_scaler_pool_current{pool="default"} 5');
    expect(text).toContain('runner_fleet_scaler_pool_busy{pool="default"} 3');
    expect(text).toContain('runner_fleet_scaler_pool_idle{pool="small-arm"} 1');
    expect(text).toContain('runner_fleet_scaler_pool_desired{pool="default"} 5');
    expect(text).toContain('runner_fleet_scaler_pool_scale_ups_total{pool="default"} 7');
    expect(text).toContain('runner_fleet_scaler_pool_failures_total{pool="default"} 1');
    expect(text).toContain('runner_fleet_scaler_pool_paused{pool="small-arm"} 1');
    expect(text).toContain("runner_fleet_scaler_up 1");
    expect(text).toContain("# TYPE runner_fleet_scaler_pool_scale_ups_total counter");
  });

  it("passes promtool check metrics (Debian's prometheus)", async () => {
    const text: string = await py.ask("metrics", { pools, up: false });
    const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(r.error, "promtool missing: scripts/ensure-tools.mjs installs Debian's prometheus").toBeUndefined();
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });
});

// ---- following a console log --------------------------------------------------------------

describe("ConsoleTail on a real file", () => {
  it("reads only what was appended, and survives truncation, rotation and deletion", async () => {
    const dir = mkdtempSync(join(scratch, "tail-"));
    const path = join(dir, "runner-abc.log");
    const poll = () => py.ask("tail", { path });
    expect(await poll()).toEqual({ state: "booting", offset: 0 }); // not there yet
    writeFileSync(path, "[    0.1] booting\n" + runnerLine.listening(at).slice(0, 10));
    expect((await poll()).state).toBe("booting");
    appendFileSync(path, runnerLine.listening(at).slice(10) + "\n");
    const listening = await poll();
    expect(listening.state).toBe("idle");
    expect(listening.offset).toBe(readFileSync(path).length);
    appendFileSync(path, runnerLine.running(at, "j") + "\n");
    expect((await poll()).state).toBe("busy");
    // copytruncate: the file starts over; it is read again from its start.
    truncateSync(path, 0);
    writeFileSync(path, "after truncation\n");
    expect(await poll()).toEqual({ state: "busy", offset: 17 });
    // rename and a new file under the same name (logrotate's default): the new file from 0.
    renameSync(path, path + ".1");
    writeFileSync(path, runnerLine.completed(at, "j", "Succeeded") + "\n");
    expect((await poll()).state).toBe("done");
    rmSync(path);
    expect((await poll()).state).toBe("done");
  });
});

// ---- the program as the unit runs it ------------------------------------------------------

describe("runner-fleet-scaler.py as nixpkgs' writer and systemd run it", () => {
  it("has no interpreter line (the writer adds its own) and passes flake8 --ignore E501, as writePython3Bin runs it", () => {
    expect(readFileSync(SCALER, "utf8").startsWith("#!")).toBe(false);
    const r = spawnSync("flake8", ["--ignore", "E501", SCALER, DRIVER], { encoding: "utf8" });
    expect(r.error).toBeUndefined();
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  const unit = () => {
    // The module's own option defaults feed its config (Nix is lazy, so this is no loop).
    const expr = `
      let t = import ${join(root, "test", "support", "nix-modules.nix")};
          m = import ${join(root, "nix", "modules", "scaler.nix")};
          r = m { inherit (t) lib pkgs; config.runnerFleet = {
                host.roles = [ "fireactions" ];
                scaler = builtins.mapAttrs (_: o: o.default) r.options.runnerFleet.scaler; }; };
      in (builtins.head (t.defsAt [ "systemd" "services" "runner-fleet-scaler" ] r.config)).value`;
    const r = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], { encoding: "utf8", env: { ...process.env, NIX_STATE_DIR: join(scratch, "nix-state") } });
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };

  it("restarts on failure with a start limit, and passes only flags the program accepts", () => {
    const u = unit();
    expect(u.serviceConfig).toMatchObject({ Restart: "on-failure", RestartSec: 5, DynamicUser: true });
    expect(u.startLimitBurst).toBe(5);
    expect(u.startLimitIntervalSec).toBe(300);
    // escapeShellArgs quotes only what needs it (nixpkgs lib/strings.nix); these need nothing.
    const argv: string[] = u.serviceConfig.ExecStart.split(" ");
    expect(argv.filter((a: string) => a.startsWith("--"))).toEqual(["--pools", "--pools-dir", "--api", "--metrics-address", "--interval", "--api-password-file"]);
    // The program accepts exactly these values (argparse exits 2 on anything it refuses).
    const r = spawnSync("python3", [SCALER, ...argv.slice(1), "--help"], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(argv).toContain("/var/lib/fireactions/pools");
    expect(argv).toContain("/etc/runner-fleet/pools.json");
  });

  it("gets fireactions' API password through LoadCredential= (it is a DynamicUser) and reads it from $CREDENTIALS_DIRECTORY", () => {
    const u = unit();
    expect(u.requires).toEqual(["runner-fleet-api-password.service"]);
    expect(u.after).toEqual(["fireactions.service", "runner-fleet-api-password.service"]);
    expect(u.wants).toEqual(["fireactions.service"]);
    expect(u.serviceConfig.DynamicUser).toBe(true);
    expect(u.serviceConfig.LoadCredential).toEqual(["fireactions-api-password:/run/fireactions-api/password"]);
    expect(u.serviceConfig.ExecStart).toMatch(/ --api-password-file '?\$\{CREDENTIALS_DIRECTORY\}\/fireactions-api-password'?$/);
    expect(u.serviceConfig.Environment).toBeUndefined(); // the secret is in no environment, no argv
  });

  it("refuses a bad flag value with one line and exit 2, before doing anything", () => {
    const r = spawnSync("python3", [SCALER, "--metrics-address", "nope"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split("\n").pop()).toMatch(/--metrics-address: 'nope' is not host:port/);
  });

  it("the renderer asks journald for the runner's console lines once, keeping a pool's own setting", () => {
    const renderer = join(root, "nix", "pkgs", "render-fireactions-config.py");
    const code = `import importlib.util,sys; s=importlib.util.spec_from_file_location("r", sys.argv[1]); m=importlib.util.module_from_spec(s); s.loader.exec_module(m)
for a in sys.argv[2:]: print(m.with_journal_on_console(a))`;
    const r = spawnSync("python3", ["-c", code, renderer, "console=ttyS0 reboot=k", "console=ttyS0 systemd.journald.forward_to_console=0", ""], { encoding: "utf8" });
    expect(r.stdout.trim().split("\n")).toEqual([
      "console=ttyS0 reboot=k systemd.journald.forward_to_console=1",
      "console=ttyS0 systemd.journald.forward_to_console=0",
      "systemd.journald.forward_to_console=1",
    ]);
  });
});
