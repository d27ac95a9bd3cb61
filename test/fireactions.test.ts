// The fireactions host side: the config renderer (nix/pkgs/render-fireactions-config.py) on
// every size preset and on every pools.json the prod plan writes, and the ExecStart wrapper
// (nix/pkgs/fireactions-supervise.sh) that makes fireactions v0.4.0's failures fail the unit.
//
// fireactions' own config loading cannot run here: the Go module proxy answers 403 for
// github.com/hostinger/fireactions at every version, and building the fetched source is not
// allowed. So V040 below restates, by hand, the keys and validate tags of v0.4.0's
// server/config.go and server/pool.go (cited in docs/upstream.md), and every rendered config is
// checked against them. Needs python3, bash and nix-instantiate; a missing tool fails the suite.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(__dirname, "..");
const renderer = join(root, "nix", "pkgs", "render-fireactions-config.py");
const supervise = join(root, "nix", "pkgs", "fireactions-supervise.sh");
const roleNix = join(root, "nix", "modules", "roles", "fireactions.nix");

let scratch = "";
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "fireactions-test-"));
});
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

// ---- fireactions v0.4.0's config rules, restated (see the header) ----------------------------

const V040 = {
  // yaml keys of Config, MetricsConfig, GitHubConfig, PoolConfig, RunnerConfig,
  // FirecrackerConfig, FirecrackerMachineConfig; yaml.v3 drops anything else silently.
  top: ["bind_address", "metrics", "basic_auth_enabled", "basic_auth_users", "github", "pools", "log_level", "debug"],
  metrics: ["enabled", "address"],
  github: ["app_private_key", "app_id"],
  pool: ["name", "max_runners", "min_runners", "runner", "firecracker"],
  runner: ["name", "image_pull_policy", "image", "organization", "group_id", "labels"],
  firecracker: ["binary_path", "kernel_image_path", "kernel_args", "machine_config", "metadata"],
  machine: ["vcpu_count", "mem_size_mib"],
  logLevels: ["debug", "info", "warn", "error", "fatal", "panic", "trace"],
  pullPolicies: ["always", "never", "ifnotpresent"],
};

const subsetOf = (obj: object, keys: string[]) => Object.keys(obj).filter((k) => !keys.includes(k));
const hostPort = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):([0-9]{1,5})$/;

/** Every problem v0.4.0's struct tags (enforced or not) would have with a rendered config. */
function v040Problems(cfg: any): string[] {
  const p: string[] = [];
  const unknown = (where: string, obj: object, keys: string[]) => {
    for (const k of subsetOf(obj, keys)) p.push(`${where}.${k}: unknown to v0.4.0 (dropped silently)`);
  };
  unknown("config", cfg, V040.top);
  if (!hostPort.test(cfg.bind_address ?? "")) p.push("bind_address: not hostname_port");
  if (!V040.logLevels.includes(cfg.log_level)) p.push("log_level: not one of its levels");
  unknown("metrics", cfg.metrics ?? {}, V040.metrics);
  if (cfg.metrics?.enabled && !hostPort.test(cfg.metrics.address ?? "")) p.push("metrics.address: not hostname_port");
  unknown("github", cfg.github ?? {}, V040.github);
  if (!cfg.github?.app_private_key) p.push("github.app_private_key: required");
  if (!Number.isInteger(cfg.github?.app_id) || cfg.github.app_id === 0) p.push("github.app_id: required (non-zero)");
  if (!Array.isArray(cfg.pools) || cfg.pools.length < 1) p.push("pools: required,min=1");
  for (const [i, pool] of (cfg.pools ?? []).entries()) {
    const at = `pools[${i}]`;
    unknown(at, pool, V040.pool);
    if (!pool.name) p.push(`${at}.name: required`);
    if (!(pool.max_runners >= 1)) p.push(`${at}.max_runners: min=1`);
    if (!(pool.min_runners >= 1)) p.push(`${at}.min_runners: min=1`);
    const r = pool.runner ?? {};
    unknown(`${at}.runner`, r, V040.runner);
    for (const k of ["name", "image", "organization"]) if (!r[k]) p.push(`${at}.runner.${k}: required`);
    if (!V040.pullPolicies.includes(r.image_pull_policy)) p.push(`${at}.runner.image_pull_policy: oneof=always never ifnotpresent`);
    if (!Number.isInteger(r.group_id) || r.group_id === 0) p.push(`${at}.runner.group_id: required (0 is no group)`);
    if (!Array.isArray(r.labels) || r.labels.length === 0) p.push(`${at}.runner.labels: required`);
    const fc = pool.firecracker ?? {};
    unknown(`${at}.firecracker`, fc, V040.firecracker);
    unknown(`${at}.firecracker.machine_config`, fc.machine_config ?? {}, V040.machine);
    for (const k of ["binary_path", "kernel_image_path"]) if (!fc[k]) p.push(`${at}.firecracker.${k}: empty`);
  }
  return p;
}

// ---- the renderer ------------------------------------------------------------------------

const presets = {
  small: { vcpuCount: 1, memSizeMib: 1024, maxRunners: 2, minRunners: 1 },
  medium: { vcpuCount: 2, memSizeMib: 2048, maxRunners: 5, minRunners: 2 },
  large: { vcpuCount: 4, memSizeMib: 4096, maxRunners: 10, minRunners: 5 },
} as const;

const kernelArgs = "console=ttyS0 reboot=k panic=1 pci=off";
const pem = "-----BEGIN RSA PRIVATE KEY-----\nTESTKEY\n-----END RSA PRIVATE KEY-----\n";

function poolFor(size: keyof typeof presets, extra: Record<string, unknown> = {}) {
  const p = presets[size];
  return {
    name: size,
    maxRunners: p.maxRunners,
    minRunners: p.minRunners,
    runner: {
      name: "runner",
      image: "ghcr.io/acme/runner:24.04",
      organization: "acme",
      labels: ["self-hosted", "fireactions", size],
      ...extra,
    },
    firecracker: { vcpuCount: p.vcpuCount, memSizeMib: p.memSizeMib, kernelArgs },
  };
}

interface RenderOptions {
  extraArgs?: string[];
  appId?: string;
}

/** Runs the renderer on a pools document (or raw text); returns status, stdout and stderr. */
function runRenderer(pools: unknown, opts: RenderOptions = {}) {
  const dir = mkdtempSync(join(scratch, "render-"));
  writeFileSync(join(dir, "pools.json"), typeof pools === "string" ? pools : JSON.stringify(pools, null, 2) + "\n");
  writeFileSync(join(dir, "app-id"), opts.appId ?? "123456\n");
  writeFileSync(join(dir, "app-key.pem"), pem);
  const r = spawnSync("python3", [
    renderer,
    "--pools", join(dir, "pools.json"),
    "--app-id-file", join(dir, "app-id"),
    "--app-key-file", join(dir, "app-key.pem"),
    "--firecracker", "/fc/bin/firecracker",
    "--kernel", "/k/vmlinux",
    "--out", "-",
    ...(opts.extraArgs ?? []),
  ], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function render(pools: unknown, opts: RenderOptions = {}): any {
  const r = runRenderer(pools, opts);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout);
}

function refused(pools: unknown, opts: RenderOptions = {}): string {
  const r = runRenderer(pools, opts);
  expect(r.stdout).toBe("");
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/^render-fireactions-config: /);
  return r.stderr;
}

function expectedPool(size: keyof typeof presets, groupId = 1) {
  const p = presets[size];
  return {
    name: size,
    max_runners: p.maxRunners,
    min_runners: p.minRunners,
    runner: {
      name: "runner",
      image: "ghcr.io/acme/runner:24.04",
      image_pull_policy: "ifnotpresent",
      organization: "acme",
      group_id: groupId,
      labels: ["self-hosted", "fireactions", size],
    },
    firecracker: {
      binary_path: "/fc/bin/firecracker",
      kernel_image_path: "/k/vmlinux",
      // The scaler reads the runner's console lines: the renderer asks journald to forward them.
      kernel_args: `${kernelArgs} systemd.journald.forward_to_console=1`,
      machine_config: { vcpu_count: p.vcpuCount, mem_size_mib: p.memSizeMib },
    },
  };
}

describe("render-fireactions-config.py", () => {
  for (const size of Object.keys(presets) as (keyof typeof presets)[]) {
    it(`renders the ${size} preset as a config fireactions v0.4.0 accepts`, () => {
      const cfg = render([poolFor(size)]);
      expect(cfg).toEqual({
        bind_address: "127.0.0.1:8080",
        log_level: "info",
        debug: false,
        metrics: { enabled: true, address: "127.0.0.1:8081" },
        basic_auth_enabled: false,
        github: { app_id: 123456, app_private_key: pem },
        pools: [expectedPool(size)],
      });
      expect(v040Problems(cfg)).toEqual([]);
    });
  }

  it("the v0.4.0 rules catch what the old renderer wrote (so the check above can fail)", () => {
    const old = { ...expectedPool("small"), runner: { ...expectedPool("small").runner, image_pull_policy: "IfNotPresent" } } as any;
    delete old.runner.group_id;
    old.min_runners = 0;
    old.firecracker.cni_conf_dir = "/etc/cni/net.d";
    const cfg = { bind_address: "127.0.0.1:8080", log_level: "info", metrics: { enabled: true, address: "127.0.0.1:8081" }, github: { app_id: 1, app_private_key: pem }, pools: [old] };
    expect(v040Problems(cfg)).toEqual([
      "pools[0].min_runners: min=1",
      "pools[0].runner.image_pull_policy: oneof=always never ifnotpresent",
      "pools[0].runner.group_id: required (0 is no group)",
      "pools[0].firecracker.cni_conf_dir: unknown to v0.4.0 (dropped silently)",
    ]);
    expect(v040Problems({ ...cfg, pools: [] })).toEqual(["pools: required,min=1"]);
  });

  it("sorts pools by name, keeps groupId as group_id and defaults it to GitHub's default group 1", () => {
    const cfg = render([poolFor("small"), poolFor("large", { groupId: 7 }), poolFor("medium")]);
    expect(cfg.pools.map((p: { name: string }) => p.name)).toEqual(["large", "medium", "small"]);
    expect(cfg.pools.map((p: any) => p.runner.group_id)).toEqual([7, 1, 1]);
  });

  it("ignores an imagePullPolicy left in an older pools.json: v0.4.0 never reads it", () => {
    const cfg = render([poolFor("small", { imagePullPolicy: "Always" })]);
    expect(cfg.pools[0].runner.image_pull_policy).toBe("ifnotpresent");
  });

  it("writes no CNI keys: v0.4.0 hard-codes /etc/cni/net.d and /opt/cni/bin", () => {
    const text = runRenderer([poolFor("small")]).stdout;
    expect(text).not.toMatch(/cni/i);
  });

  it("writes the file atomically with mode 0640", () => {
    const out = join(scratch, "run", "fireactions", "config.yaml");
    const r = runRenderer([poolFor("small")], { extraArgs: ["--out", out] });
    expect([r.status, r.stdout, r.stderr]).toEqual([0, "", ""]);
    expect(statSync(out).mode & 0o777).toBe(0o640);
    expect(JSON.parse(readFileSync(out, "utf8")).pools[0].name).toBe("small");
    expect(readdirSync(join(scratch, "run", "fireactions"))).toEqual(["config.yaml"]);
  });

  it("refuses an empty pool list, as fireactions' `pools: required,min=1` would", () => {
    expect(refused([])).toMatch(/pools\.json: must list at least one pool/);
    const dir = mkdtempSync(join(scratch, "check-"));
    writeFileSync(join(dir, "pools.json"), "[]\n");
    const r = spawnSync("python3", [renderer, "--check", "--pools", join(dir, "pools.json")], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/at least one pool/);
  });

  it("refuses minRunners 0: v0.4.0 only tops a pool up to its minimum, so none would start", () => {
    expect(refused([{ ...poolFor("small"), minRunners: 0 }])).toMatch(/\[0\]\.minRunners: must be a positive integer/);
  });

  it("refuses bad pools with the key path", () => {
    expect(refused([{ ...poolFor("medium"), minRunners: 9 }])).toMatch(/\[0\]\.minRunners: exceeds maxRunners/);
    expect(refused([poolFor("small"), poolFor("small")])).toMatch(/duplicate pool 'small'/);
    expect(refused({})).toMatch(/must be a JSON array/);
    expect(refused([poolFor("small", { groupId: 0 })])).toMatch(/\[0\]\.runner\.groupId: must be a positive integer/);
    expect(refused([{ ...poolFor("small"), name: "Bad Name" }])).toMatch(/\[0\]\.name: must be lowercase/);
    expect(refused("[{")).toMatch(/not valid JSON/);
  });

  it("refuses what fireactions' top-level validation would: app id 0, a bind address without a port", () => {
    expect(refused([poolFor("small")], { appId: "0\n" })).toMatch(/GitHub App id must be a positive number/);
    expect(refused([poolFor("small")], { extraArgs: ["--bind-address", "localhost"] })).toMatch(/--bind-address: 'localhost' is not host:port/);
  });

  it("--api-password-file turns on v0.4.0's basic auth with one account, runner-fleet", () => {
    const pw = join(scratch, "api-password");
    writeFileSync(pw, "Zm9vYmFyYmF6cXV4LXBhc3N3b3JkLTAxMjM0NTY3ODk\n");
    const cfg = render([poolFor("small")], { extraArgs: ["--api-password-file", pw] });
    expect(cfg.basic_auth_enabled).toBe(true);
    expect(cfg.basic_auth_users).toEqual({ "runner-fleet": "Zm9vYmFyYmF6cXV4LXBhc3N3b3JkLTAxMjM0NTY3ODk" });
    expect(Object.keys(cfg)).toEqual(["bind_address", "log_level", "debug", "metrics", "basic_auth_enabled", "basic_auth_users", "github", "pools"]);
    expect(v040Problems(cfg)).toEqual([]);
  });

  it("refuses a missing, empty or multi-line API password file with one line (gin would panic on an empty account list)", () => {
    const missing = join(scratch, "no-such-password");
    const one = (args: string[]) => {
      const err = refused([poolFor("small")], { extraArgs: args });
      expect(err.trim().split("\n")).toHaveLength(1);
      return err;
    };
    expect(one(["--api-password-file", missing])).toBe(`render-fireactions-config: ${missing}: missing (the fireactions API password; runner-fleet-api-password.service writes it)\n`);
    const empty = join(scratch, "empty-password");
    writeFileSync(empty, "\n");
    expect(one(["--api-password-file", empty])).toMatch(/empty-password: empty/);
    const two = join(scratch, "two-line-password");
    writeFileSync(two, "0123456789abcdefghij\nsecond\n");
    expect(one(["--api-password-file", two])).toMatch(/two-line-password: must be one line of 16 to 256 printable ASCII characters without spaces/);
  });

  it("render_config stays pure: the password is an argument, not a file it reads", () => {
    const r = spawnSync("python3", ["-c", `
import importlib.util, json
spec = importlib.util.spec_from_file_location("r", ${JSON.stringify(renderer)})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
host = {"firecracker": "f", "kernel": "k", "bind_address": "127.0.0.1:8080", "metrics_address": "127.0.0.1:8081", "log_level": "info"}
pools = [{"name": "p", "maxRunners": 1, "minRunners": 1, "runner": {"name": "r", "image": "i", "organization": "o", "labels": ["l"]}, "firecracker": {"vcpuCount": 1, "memSizeMib": 1, "kernelArgs": ""}}]
a = m.render_config(pools, 1, "key", host, None, "pw-0123456789abcdef")
b = m.render_config(pools, 1, "key", host)
print(json.dumps([a["basic_auth_enabled"], a["basic_auth_users"], b["basic_auth_enabled"], "basic_auth_users" in b]))
`], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual([true, { "runner-fleet": "pw-0123456789abcdef" }, false, false]);
  });

  it("accepts every flag roles/fireactions.nix passes it", () => {
    const role = readFileSync(roleNix, "utf8");
    const call = /renderFlags = \[([\s\S]*?)\];/.exec(role)![1];
    const flags = [...call.matchAll(/(--[a-z-]+)/g)].map((m) => m[1]);
    expect(flags).toEqual(["--pools", "--app-id-file", "--app-key-file", "--out", "--mode", "--firecracker", "--kernel", "--api-password-file"]);
    const help = execFileSync("python3", [renderer, "--help"], { encoding: "utf8" });
    for (const f of flags) expect(help).toContain(f);
  });
});

// The pools the Pulumi side really writes for the prod stack, rendered as each host would.
describe("render-fireactions-config.py on the pools.json files plan --out writes for prod", () => {
  let hostsDir = "";
  beforeAll(async () => {
    const { runPlan } = await import("./support/fixtures");
    const out = join(scratch, "plan-prod");
    const result = await runPlan(["--stack", "prod", "--out", out]);
    expect(result.code, result.stderr).toBe(0);
    hostsDir = join(out, "hosts");
  }, 120_000);

  it("renders every fireactions host's pools into a config v0.4.0 accepts", () => {
    const hosts = readdirSync(hostsDir).filter((h) => existsSync(join(hostsDir, h, "pools.json")));
    const fireactionsHosts = hosts.filter((h) => JSON.parse(readFileSync(join(hostsDir, h, "pools.json"), "utf8")).length > 0);
    expect(fireactionsHosts.length).toBeGreaterThan(0);
    for (const host of fireactionsHosts) {
      const pools = JSON.parse(readFileSync(join(hostsDir, host, "pools.json"), "utf8"));
      const cfg = render(pools);
      expect(v040Problems(cfg), host).toEqual([]);
      expect(cfg.pools.map((p: any) => p.name)).toEqual(pools.map((p: any) => p.name).sort());
      for (const [i, pool] of cfg.pools.entries()) {
        const src = pools.find((p: any) => p.name === pool.name);
        expect(pool.runner.group_id, `${host} pool ${i}`).toBe(src.runner.groupId);
        expect(pool.min_runners).toBe(src.minRunners);
      }
    }
  });
});

// ---- the ExecStart wrapper ------------------------------------------------------------------

// A stand-in for `fireactions server`, which cannot be built here. It behaves like v0.4.0 in
// the two ways that matter: on an error it prints and exits 0 (cmd/fireactions/main.go), and it
// otherwise runs until SIGTERM, then exits 0 (commands/server.go).
const STAND_IN = `#!/usr/bin/env bash
# test stand-in for fireactions v0.4.0 (see test/fireactions.test.ts)
mode=$1 log=$2
case "$mode" in
  fail) echo "Error executing command: config: validate: Key: 'Config.Pools' Error" >&2; exit 0 ;;
  crash) exit 3 ;;
  serve) trap 'echo TERM >> "$log"; exit 0' TERM; echo ready; while :; do sleep 0.1; done ;;
esac
`;

function standIn(): string {
  const path = join(scratch, "fireactions-stand-in");
  if (!existsSync(path)) writeFileSync(path, STAND_IN, { mode: 0o755 });
  return path;
}

describe("fireactions-supervise.sh (the unit's ExecStart)", () => {
  it("reports failure when fireactions prints an error and exits 0, as v0.4.0 does", () => {
    const r = spawnSync("bash", [supervise, standIn(), "fail", "/dev/null"], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Error executing command");
    expect(r.stderr).toMatch(/exited with status 0 without being asked to stop/);
  });

  it("reports failure when fireactions exits non-zero", () => {
    const r = spawnSync("bash", [supervise, standIn(), "crash", "/dev/null"], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/status 3/);
  });

  it("passes systemd's SIGTERM on and exits 0 on a requested stop", async () => {
    const log = join(scratch, "term.log");
    const child = spawn("bash", [supervise, standIn(), "serve", log], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    await new Promise<void>((ok) => child.stdout.once("data", () => ok()));
    const exited = new Promise<number | null>((ok) => child.once("exit", (code) => ok(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(stderr).toBe("");
    expect(readFileSync(log, "utf8")).toBe("TERM\n");
  });
});

// ---- the guest kernel ------------------------------------------------------------------------

describe("firecracker-guest-kernel.config", () => {
  const text = readFileSync(join(root, "nix", "pkgs", "firecracker-guest-kernel.config"), "utf8");
  const options = text.split("\n").filter((l) => l.startsWith("CONFIG_"));

  it("builds in what a guest without initrd needs to mount its root: virtio-mmio, virtio-blk, ext4", () => {
    for (const want of ["CONFIG_VIRTIO_MMIO=y", "CONFIG_VIRTIO_BLK=y", "CONFIG_EXT4_FS=y", "CONFIG_DEVTMPFS=y"]) expect(options).toContain(want);
  });

  it("only builds things in (=y): the guest kernel loads no modules", () => {
    expect(options.filter((l) => !l.endsWith("=y"))).toEqual([]);
    expect(text.split("\n").filter((l) => l && !l.startsWith("#") && !l.startsWith("CONFIG_"))).toEqual([]);
  });
});
