// Checks for nix/: every file parses, the pure library maps inventories to the
// expected deploy targets, and the host-side fireactions renderer produces the
// v0.4 config for each pool size preset. Needs nix-instantiate (Debian
// nix-bin) and python3; a missing tool fails the suite rather than skipping it.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(__dirname, "..");
const nixDir = join(root, "nix");
const renderer = join(nixDir, "pkgs", "render-fireactions-config.py");

let scratch = "";

// No daemon and no writable /nix needed: the dummy store answers every store
// query without touching disk, which is all parsing and pure evaluation need.
function nixEnv(): NodeJS.ProcessEnv {
  return { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" };
}

function nixInstantiate(args: string[]): string {
  return execFileSync("nix-instantiate", args, { env: nixEnv(), encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function evalJson(expr: string): unknown {
  return JSON.parse(nixInstantiate(["--eval", "--strict", "--json", "--expr", expr]));
}

function nixFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return nixFiles(path);
    return entry.endsWith(".nix") ? [path] : [];
  });
}

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "nix-test-"));
});
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("nix/ parses", () => {
  it("has nix-instantiate on PATH (install Debian's nix-bin)", () => {
    expect(nixInstantiate(["--version"])).toMatch(/nix-instantiate \(Nix\)/);
  });

  const files = nixFiles(nixDir);
  it("finds the flake, the library and the modules", () => {
    const rel = files.map((f) => f.slice(nixDir.length + 1));
    for (const f of ["flake.nix", "lib/default.nix", "modules/default.nix", "modules/fireactions.nix"]) {
      expect(rel).toContain(f);
    }
  });
  for (const file of files) {
    it(`parses ${file.slice(root.length + 1)}`, () => {
      nixInstantiate(["--parse", file]);
    });
  }
});

// The library with stub nixpkgs-side functions, applied to one inventory.
function evalLib(inventoryPath: string, body: string): any {
  return evalJson(`
    let
      fleet = import ${join(nixDir, "lib")};
      inventory = fleet.readInventory ${inventoryPath};
    in ${body}`);
}

describe("nix/lib on nix/inventory.example.json", () => {
  const inv = join(nixDir, "inventory.example.json");

  it("maps every host to a deploy-rs node", () => {
    const nodes = evalLib(inv, `fleet.deployNodes { inherit inventory; mkActivate = h: "activate:" + h.name; }`);
    expect(Object.keys(nodes)).toEqual(["aws-metal-1", "cache-1", "onprem-1"]);
    expect(nodes["onprem-1"]).toEqual({
      hostname: "192.0.2.10",
      sshUser: "deploy",
      sshOpts: ["-p", "2222", "-o", "StrictHostKeyChecking=accept-new"],
      user: "root",
      magicRollback: true,
      autoRollback: true,
      confirmTimeout: 30,
      activationTimeout: 240,
      profiles: { system: { user: "root", path: "activate:onprem-1" } },
    });
    expect(nodes["aws-metal-1"].hostname).toBe("203.0.113.10");
    expect(nodes["cache-1"].profiles.system.path).toBe("activate:cache-1");
  });

  it("lets the caller override deploy timeouts", () => {
    const nodes = evalLib(
      inv,
      `fleet.deployNodes { inherit inventory; mkActivate = h: h.name; settings = { confirmTimeout = 90; }; }`,
    );
    expect(nodes["cache-1"].confirmTimeout).toBe(90);
    expect(nodes["cache-1"].activationTimeout).toBe(240);
  });

  it("builds the colmena hive with per-node nixpkgs and deployment", () => {
    const hive = evalLib(
      inv,
      `fleet.colmenaHive { inherit inventory; nixpkgsFor = s: "nixpkgs:" + s; mkNode = h: { networking.hostName = h.name; }; }`,
    );
    expect(hive.meta).toEqual({
      nixpkgs: "nixpkgs:x86_64-linux",
      nodeNixpkgs: {
        "aws-metal-1": "nixpkgs:aarch64-linux",
        "cache-1": "nixpkgs:x86_64-linux",
        "onprem-1": "nixpkgs:x86_64-linux",
      },
      specialArgs: {},
    });
    expect(hive["aws-metal-1"]).toEqual({
      deployment: {
        targetHost: "203.0.113.10",
        targetPort: 22,
        targetUser: "deploy",
        buildOnTarget: false,
        tags: ["aws", "fireactions", "prod"],
      },
      imports: [{ networking: { hostName: "aws-metal-1" } }],
    });
    expect(hive["onprem-1"].deployment.tags).toEqual(["existing", "forgejo-runner", "lab", "prod"]);
  });

  it("groups hosts by tag and by role", () => {
    expect(evalLib(inv, "fleet.hostsByTag inventory")).toEqual({
      aws: ["aws-metal-1"],
      cache: ["cache-1"],
      existing: ["onprem-1"],
      fireactions: ["aws-metal-1"],
      "forgejo-runner": ["onprem-1"],
      hetzner: ["cache-1"],
      lab: ["onprem-1"],
      prod: ["aws-metal-1", "onprem-1"],
    });
    expect(evalLib(inv, "fleet.hostsByRole inventory")).toEqual({
      cache: ["cache-1"],
      fireactions: ["aws-metal-1"],
      "forgejo-runner": ["onprem-1"],
      "gitea-runner": [],
    });
  });

  it("names one image template per role and arch", () => {
    expect(evalLib(inv, "builtins.attrNames fleet.templates")).toEqual([
      "cache-aarch64",
      "cache-x86_64",
      "fireactions-aarch64",
      "fireactions-x86_64",
      "forgejo-runner-aarch64",
      "forgejo-runner-x86_64",
    ]);
    expect(evalLib(inv, `fleet.templates."fireactions-aarch64".system`)).toBe("aarch64-linux");
  });
});

describe("nix/lib on test/fixtures/inventory.multi.json", () => {
  const inv = join(root, "test", "fixtures", "inventory.multi.json");

  it("uses each host's ssh user and port", () => {
    const nodes = evalLib(inv, `fleet.deployNodes { inherit inventory; mkActivate = h: h.system; }`);
    expect(Object.keys(nodes)).toEqual(["az-1", "do-1"]);
    expect(nodes["do-1"]).toMatchObject({
      hostname: "161.35.0.9",
      sshUser: "ops",
      sshOpts: ["-p", "2200", "-o", "StrictHostKeyChecking=accept-new"],
      user: "root",
      profiles: { system: { path: "x86_64-linux" } },
    });
  });

  it("tags colmena nodes with roles, provider and user tags", () => {
    const hive = evalLib(inv, `fleet.colmenaNodes { inherit inventory; mkNode = _: { }; }`);
    expect(hive["az-1"].deployment).toEqual({
      targetHost: "20.0.0.4",
      targetPort: 22,
      targetUser: "ops",
      buildOnTarget: false,
      tags: ["azure", "eu", "fireactions", "prod"],
    });
    expect(hive["do-1"].deployment.tags).toEqual(["cache", "digitalocean", "eu", "gitea-runner"]);
  });

  it("rejects a host keyed under another name", () => {
    const bad = join(scratch, "bad.json");
    const doc = JSON.parse(readFileSync(inv, "utf8"));
    doc.hosts["az-1"].name = "az-2";
    writeFileSync(bad, JSON.stringify(doc));
    expect(() => evalLib(bad, "inventory.hosts")).toThrow(/hosts\.az-1: name is "az-2"/);
  });
});

// ---- host-side renderer ------------------------------------------------------

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
      imagePullPolicy: "IfNotPresent",
      organization: "acme",
      labels: ["self-hosted", "fireactions", size],
      ...extra,
    },
    firecracker: { vcpuCount: p.vcpuCount, memSizeMib: p.memSizeMib, kernelArgs },
  };
}

function render(pools: unknown, extraArgs: string[] = []): string {
  const dir = mkdtempSync(join(scratch, "render-"));
  writeFileSync(join(dir, "pools.json"), JSON.stringify(pools, null, 2) + "\n");
  writeFileSync(join(dir, "app-id"), "123456\n");
  writeFileSync(join(dir, "app-key.pem"), pem);
  return execFileSync(
    "python3",
    [
      renderer,
      "--pools", join(dir, "pools.json"),
      "--app-id-file", join(dir, "app-id"),
      "--app-key-file", join(dir, "app-key.pem"),
      "--firecracker", "/fc/bin/firecracker",
      "--kernel", "/k/vmlinux",
      "--cni-conf-dir", "/etc/cni/net.d",
      "--cni-bin-dir", "/cni/bin",
      "--out", "-",
      ...extraArgs,
    ],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
}

function expectedPool(size: keyof typeof presets) {
  const p = presets[size];
  return {
    name: size,
    max_runners: p.maxRunners,
    min_runners: p.minRunners,
    runner: {
      name: "runner",
      image: "ghcr.io/acme/runner:24.04",
      image_pull_policy: "IfNotPresent",
      organization: "acme",
      labels: ["self-hosted", "fireactions", size],
    },
    firecracker: {
      binary_path: "/fc/bin/firecracker",
      kernel_image_path: "/k/vmlinux",
      kernel_args: kernelArgs,
      cni_conf_dir: "/etc/cni/net.d",
      cni_bin_dirs: ["/cni/bin"],
      machine_config: { vcpu_count: p.vcpuCount, mem_size_mib: p.memSizeMib },
    },
  };
}

describe("render-fireactions-config.py", () => {
  for (const size of Object.keys(presets) as (keyof typeof presets)[]) {
    it(`renders the ${size} preset in the fireactions v0.4 format`, () => {
      const out = render([poolFor(size)]);
      expect(out.endsWith("\n")).toBe(true);
      expect(JSON.parse(out)).toEqual({
        bind_address: "127.0.0.1:8080",
        log_level: "info",
        debug: false,
        metrics: { enabled: true, address: "127.0.0.1:8081" },
        basic_auth_enabled: false,
        github: { app_id: 123456, app_private_key: pem },
        pools: [expectedPool(size)],
      });
    });
  }

  it("sorts pools by name and keeps groupId as group_id", () => {
    const cfg = JSON.parse(render([poolFor("small"), poolFor("large", { groupId: 7 }), poolFor("medium")]));
    expect(cfg.pools.map((p: { name: string }) => p.name)).toEqual(["large", "medium", "small"]);
    expect(cfg.pools[0].runner.group_id).toBe(7);
    expect(cfg.pools[1].runner).not.toHaveProperty("group_id");
  });

  it("writes the file atomically with mode 0640", () => {
    const out = join(scratch, "run", "fireactions", "config.yaml");
    render([poolFor("small")], ["--out", out]);
    expect(statSync(out).mode & 0o777).toBe(0o640);
    expect(JSON.parse(readFileSync(out, "utf8")).pools[0].name).toBe("small");
  });

  it("rejects bad pools with the key path", () => {
    const bad = { ...poolFor("medium"), minRunners: 9 };
    expect(() => render([bad])).toThrow(/\[0\]\.minRunners: exceeds maxRunners/);
    expect(() => render([poolFor("small"), poolFor("small")])).toThrow(/duplicate pool 'small'/);
    expect(() => render({})).toThrow(/must be a JSON array/);
  });

  it("validates only, with --check", () => {
    const dir = mkdtempSync(join(scratch, "check-"));
    writeFileSync(join(dir, "pools.json"), "[]\n");
    execFileSync("python3", [renderer, "--check", "--pools", join(dir, "pools.json")]);
  });
});

// The inventory the Pulumi side really writes: plan --out for the prod stack, evaluated by
// the same library deploy-rs and colmena use. Expected values come from the inventory itself.
describe("nix/lib on the inventory plan --out writes for prod", () => {
  let inventoryFile = "";
  let inventory: any;
  beforeAll(async () => {
    const { runPlan } = await import("./support/fixtures");
    const out = join(scratch, "plan-prod");
    const result = await runPlan(["--stack", "prod", "--out", out]);
    expect(result.code, result.stderr).toBe(0);
    inventoryFile = join(out, "inventory.json");
    inventory = JSON.parse(readFileSync(inventoryFile, "utf8"));
  }, 120_000);

  it("gives every host a deploy-rs node at its address, as the deploy user, activating as root", () => {
    const nodes = evalLib(inventoryFile, `fleet.deployNodes { inherit inventory; mkActivate = h: "activate:" + h.name; }`);
    expect(Object.keys(nodes).sort()).toEqual(Object.keys(inventory.hosts).sort());
    for (const [name, host] of Object.entries<any>(inventory.hosts)) {
      expect(nodes[name]).toMatchObject({
        hostname: host.address,
        sshUser: "deploy",
        user: "root",
        magicRollback: true,
        autoRollback: true,
        profiles: { system: { user: "root", path: `activate:${name}` } },
      });
    }
  });

  it("gives every host a colmena node with its address, user and tags", () => {
    const hive = evalLib(inventoryFile, `fleet.colmenaHive { inherit inventory; nixpkgsFor = s: "nixpkgs-" + s; mkNode = h: { }; }`);
    for (const [name, host] of Object.entries<any>(inventory.hosts)) {
      const deployment = hive[name].deployment;
      expect(deployment.targetHost).toBe(host.address);
      expect(deployment.targetUser).toBe("deploy");
      expect(deployment.tags).toEqual(expect.arrayContaining([...host.roles, host.provider, ...host.tags]));
    }
    expect(hive.meta.nodeNixpkgs["aws-metal-arm-1"]).toBe("nixpkgs-aarch64-linux");
  });
});

// ---- host-side seed (existing machines) ----------------------------------------

const seeder = join(nixDir, "pkgs", "runner-fleet-seed.py");

/** Runs the seed script against scratch etc/state dirs; returns exit status, stderr and the dirs. */
function runSeed(doc: unknown, opts: { unwrapped?: boolean; etcDir?: string } = {}) {
  const dir = mkdtempSync(join(scratch, "seed-"));
  const etcDir = opts.etcDir ?? join(dir, "etc", "runner-fleet");
  const stateDir = join(dir, "state");
  if (opts.unwrapped) {
    mkdirSync(join(stateDir, "vault"), { recursive: true });
    writeFileSync(join(stateDir, "vault", "secret-id"), "secret-id-from-the-first-unwrap");
  }
  const r = spawnSync("python3", [seeder, "--etc-dir", etcDir, "--state-dir", stateDir], {
    input: typeof doc === "string" ? doc : JSON.stringify(doc), encoding: "utf8",
  });
  return { status: r.status, stderr: r.stderr, etcDir };
}

const seedDoc = (wrapped = "hvs.wrapped-1") => ({
  files: [
    { path: "/etc/runner-fleet/host.json", mode: "0644", content: '{"name":"gamma"}\n' },
    { path: "/etc/runner-fleet/pools.json", mode: "0644", content: "[]\n" },
    { path: "/etc/runner-fleet/vault/role-id", mode: "0600", content: "role-1" },
    { path: "/etc/runner-fleet/vault/wrapped-secret-id", mode: "0600", content: wrapped },
  ],
});

describe("runner-fleet-seed.py", () => {
  it("writes every file under the etc dir with its mode and exact content, no temp files left", () => {
    const r = runSeed(seedDoc());
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(readFileSync(join(r.etcDir, "host.json"), "utf8")).toBe('{"name":"gamma"}\n');
    expect(statSync(join(r.etcDir, "host.json")).mode & 0o777).toBe(0o644);
    expect(readFileSync(join(r.etcDir, "vault", "wrapped-secret-id"), "utf8")).toBe("hvs.wrapped-1");
    expect(statSync(join(r.etcDir, "vault", "wrapped-secret-id")).mode & 0o777).toBe(0o600);
    expect(statSync(join(r.etcDir, "vault")).mode & 0o777).toBe(0o700);
    expect(readdirSync(r.etcDir).sort()).toEqual(["host.json", "pools.json", "vault"]);
    expect(readdirSync(join(r.etcDir, "vault")).sort()).toEqual(["role-id", "wrapped-secret-id"]);
  });

  it("overwrites files in place on a re-seed", () => {
    const first = runSeed(seedDoc());
    const doc = seedDoc();
    doc.files[0].content = '{"name":"gamma","tags":["new"]}\n';
    const again = runSeed(doc, { etcDir: first.etcDir });
    expect(again.status).toBe(0);
    expect(readFileSync(join(first.etcDir, "host.json"), "utf8")).toContain('"new"');
  });

  it("keeps the wrapped secret_id once the host has unwrapped (secret-id exists), writes the rest", () => {
    const first = runSeed(seedDoc("hvs.wrapped-1"));
    const dir = join(first.etcDir, "..", "..");
    mkdirSync(join(dir, "state", "vault"), { recursive: true });
    writeFileSync(join(dir, "state", "vault", "secret-id"), "unwrapped");
    const doc = seedDoc("hvs.wrapped-2");
    doc.files[2].content = "role-2";
    const again = spawnSync("python3", [seeder, "--etc-dir", first.etcDir, "--state-dir", join(dir, "state")], { input: JSON.stringify(doc), encoding: "utf8" });
    expect(again.status).toBe(0);
    expect(readFileSync(join(first.etcDir, "vault", "wrapped-secret-id"), "utf8")).toBe("hvs.wrapped-1");
    expect(readFileSync(join(first.etcDir, "vault", "role-id"), "utf8")).toBe("role-2");
    expect(again.stdout).toContain("kept /etc/runner-fleet/vault/wrapped-secret-id");
  });

  it("does not write the wrapped secret_id on a host that has unwrapped before", () => {
    const r = runSeed(seedDoc(), { unwrapped: true });
    expect(r.status).toBe(0);
    expect(readdirSync(join(r.etcDir, "vault"))).toEqual(["role-id"]);
  });

  const bad: [string, (d: ReturnType<typeof seedDoc>) => unknown, RegExp][] = [
    ["a path outside /etc/runner-fleet/", (d) => { d.files[3].path = "/etc/sudoers.d/runner"; return d; }, /files\[3\]\.path: must be under \/etc\/runner-fleet\//],
    ["a .. component", (d) => { d.files[3].path = "/etc/runner-fleet/../shadow"; return d; }, /files\[3\]\.path: has an empty, \. or \.\. component/],
    ["the directory itself", (d) => { d.files[3].path = "/etc/runner-fleet/"; return d; }, /files\[3\]\.path: has an empty/],
    ["an executable mode", (d) => { d.files[3].mode = "0755"; return d; }, /files\[3\]\.mode: may not be executable/],
    ["a numeric mode", (d) => { (d.files[3] as any).mode = 420; return d; }, /files\[3\]\.mode: must be an octal string/],
    ["a duplicate path", (d) => { d.files[3].path = d.files[0].path; return d; }, /files\[3\]\.path: .*appears twice/],
    ["an unknown key", (d) => ({ ...d, extra: 1 }), /seed: must have exactly one key, files/],
    ["no files", () => ({ files: [] }), /files: must be a non-empty array/],
    ["not JSON", () => "{", /seed: not JSON/],
  ];
  for (const [what, mutate, message] of bad) {
    it(`refuses ${what} and writes nothing`, () => {
      const r = runSeed(mutate(seedDoc()));
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(message);
      expect(existsSync(join(r.etcDir, "host.json"))).toBe(false);
    });
  }

  it("never writes through a symlinked directory", () => {
    const dir = mkdtempSync(join(scratch, "seed-link-"));
    const etcDir = join(dir, "etc");
    mkdirSync(etcDir);
    mkdirSync(join(dir, "elsewhere"));
    symlinkSync(join(dir, "elsewhere"), join(etcDir, "vault"));
    const r = runSeed(seedDoc(), { etcDir });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/vault: is not a directory/);
    expect(readdirSync(join(dir, "elsewhere"))).toEqual([]);
  });
});

describe("runner-fleet-seed on the host", () => {
  const bootstrapNix = readFileSync(join(nixDir, "modules", "bootstrap.nix"), "utf8");
  const commonNix = readFileSync(join(nixDir, "modules", "common.nix"), "utf8");

  it("the deploy user may sudo it, next to runner-fleet-apply-pools", () => {
    // common.nix reads its sudo rules from nix/lib/deploy-sudo.json (the e2e hosts render the same).
    expect(commonNix).toContain("../lib/deploy-sudo.json");
    const commands = evalJson(`let m = import ${join(nixDir, "modules", "common.nix")} {
      config = { runnerFleet = { inventory = { }; host = { name = "h"; sshUser = "deploy"; sshPort = 22; }; }; nix.package = "/nix/store/x-nix"; };
      lib = { mkDefault = x: x; }; pkgs = { };
    }; in map (c: c.command) (builtins.head m.security.sudo.extraRules).commands`) as string[];
    expect(commands).toContain("/run/current-system/sw/bin/runner-fleet-apply-pools");
    expect(commands).toContain("/run/current-system/sw/bin/runner-fleet-seed");
    expect(commands).toContain("/nix/store/x-nix/bin/nix-env --profile /nix/var/nix/profiles/system --set /nix/store/*");
  });

  it("writes the files with the tested script, then bootstraps", () => {
    const text = bootstrapNix.slice(bootstrapNix.indexOf('name = "runner-fleet-seed"'));
    expect(text).toMatch(/runner-fleet-seed-files --etc-dir \$\{etcDir\} --state-dir \$\{stateDir\}\n\s*(#.*\n\s*)*runner-fleet-bootstrap\n/);
    expect(bootstrapNix).toMatch(/environment\.systemPackages = \[[^\]]*\bseed\b/);
  });
});
