// Checks for nix/: every file parses, the pure library maps inventories to the
// expected deploy targets (the fireactions renderer: test/fireactions.test.ts).
// Needs nix-instantiate (Debian nix-bin) and python3; a missing tool fails the suite rather than skipping it.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { FleetConfigSchema } from "../components/config-schema";
import { baseConfig } from "./support/fixtures";

const root = resolve(__dirname, "..");
const nixDir = join(root, "nix");

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
      activationTimeout: 420,
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
    expect(nodes["cache-1"].activationTimeout).toBe(420);
  });

  it("waits for a switch longer than runner-fleet-secrets may take to start, in the flake and the config alike (#22 item 7)", () => {
    // deploy-rs gives up waiting for the switch after activationTimeout and the switch rolls back.
    const secrets = join(nixDir, "modules", "secrets.nix");
    const timeoutSec = evalJson(`let t = import ${modules}; in (import ${secrets} { inherit (t) lib pkgs; config = t.configFor { inventory = t.readInventory ${inv}; host = (t.readInventory ${inv}).hosts.cache-1; }; }).options.runnerFleet.secrets.timeoutSec.default`);
    const [start] = moduleDefs("secrets.nix", "cache-1", ["systemd", "services", "runner-fleet-secrets", "serviceConfig", "TimeoutStartSec"]);
    expect(timeoutSec).toBe(300); // what the module harness passes as the option's value
    const nixDefault = evalLib(inv, "fleet.deployDefaults").activationTimeout;
    expect(nixDefault).toBeGreaterThan(start.value);
    expect(FleetConfigSchema.parse(baseConfig()).deploy.activationTimeout).toBe(nixDefault);
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
      "gitlab-runner": [],
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

  it("builds on the target for colmena only when deploy.remoteBuild is always", () => {
    const doc = JSON.parse(readFileSync(inv, "utf8"));
    doc.hosts["az-1"].remoteBuild = "always";
    doc.hosts["do-1"].remoteBuild = "auto";
    const file = join(scratch, "remote-build.json");
    writeFileSync(file, JSON.stringify(doc));
    const hive = evalLib(file, `fleet.colmenaNodes { inherit inventory; mkNode = _: { }; }`);
    expect(hive["az-1"].deployment.buildOnTarget).toBe(true);
    expect(hive["do-1"].deployment.buildOnTarget).toBe(false);
  });

  it("rejects a host keyed under another name", () => {
    const bad = join(scratch, "bad.json");
    const doc = JSON.parse(readFileSync(inv, "utf8"));
    doc.hosts["az-1"].name = "az-2";
    writeFileSync(bad, JSON.stringify(doc));
    expect(() => evalLib(bad, "inventory.hosts")).toThrow(/hosts\.az-1: name is "az-2"/);
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

  it("wires every prod host through nix/flake.nix (stand-in inputs): modules, per-system checks, vault-agent files", () => {
    const out = JSON.parse(
      execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", `
        let o = import ${join(root, "test", "support", "flake-standin.nix")} { };
        in {
          modules = builtins.mapAttrs (_: c: builtins.length c.modules) o.nixosConfigurations;
          checks = builtins.mapAttrs (_: c: c.nodes) o.checks;
          agent = builtins.mapAttrs
            (_: h: map (t: t.destination) (import ${join(nixDir, "lib", "vault-agent-config.nix")} { roleIdFile = "/r"; secretIdFile = "/s"; inherit (h) secrets; }).template)
            ((import ${join(nixDir, "lib")}).readInventory "${inventoryFile}").hosts;
        }`], { env: { ...nixEnv(), RUNNER_FLEET_INVENTORY: inventoryFile }, encoding: "utf8" }),
    );
    for (const [name, host] of Object.entries<any>(inventory.hosts)) {
      expect(out.modules[name], name).toBeGreaterThan(2);
      expect(out.checks[host.system]).toContain(name);
      expect(out.agent[name]).toEqual(host.secrets.map((s: any) => s.file));
    }
    expect(out.checks["aarch64-linux"]).toEqual(Object.keys(inventory.hosts).filter((h) => inventory.hosts[h].arch === "aarch64"));
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

// ---- flake.lock ----------------------------------------------------------------
// nix cannot fetch here, so `nix flake lock` cannot check the lock; this checks what it
// would: every input flake.nix declares is locked (or follows what flake.nix says), every
// node reference resolves, and each lock pins a commit with a NAR hash.

describe("nix/flake.lock", () => {
  const lock = JSON.parse(readFileSync(join(nixDir, "flake.lock"), "utf8"));
  const inputs = evalJson(`(import ${join(nixDir, "flake.nix")}).inputs`) as Record<string, any>;

  it("is a version 7 lock whose root has exactly flake.nix's inputs", () => {
    expect(lock.version).toBe(7);
    expect(Object.keys(lock.nodes[lock.root].inputs).sort()).toEqual(Object.keys(inputs).sort());
  });

  it("locks every input at a commit on the ref flake.nix names, with a NAR hash", () => {
    for (const [name, input] of Object.entries<any>(inputs)) {
      const node = lock.nodes[lock.nodes[lock.root].inputs[name]];
      const [, owner, repo, ref] = /^github:([^/]+)\/([^/]+)(?:\/(.+))?$/.exec(input.url)!;
      expect(node.original, name).toEqual({ type: "github", owner, repo, ...(ref ? { ref } : {}) });
      expect(node.locked).toMatchObject({ type: "github", owner, repo });
      expect(node.locked.rev).toMatch(/^[0-9a-f]{40}$/);
      expect(node.locked.narHash).toMatch(/^sha256-[A-Za-z0-9+/]{43}=$/);
      expect(Number.isInteger(node.locked.lastModified)).toBe(true);
    }
  });

  it("writes each `follows` of flake.nix as the lock's path, and resolves every other reference", () => {
    const resolve = (path: string[]): string => {
      let node = lock.root;
      for (const step of path) {
        const ref = lock.nodes[node].inputs[step];
        node = Array.isArray(ref) ? resolve(ref) : ref;
      }
      return node;
    };
    for (const [name, input] of Object.entries<any>(inputs)) {
      for (const [sub, spec] of Object.entries<any>(input.inputs ?? {})) {
        expect(lock.nodes[name].inputs[sub], `${name}.inputs.${sub}`).toEqual(spec.follows.split("/"));
      }
    }
    for (const [id, node] of Object.entries<any>(lock.nodes)) {
      for (const [sub, ref] of Object.entries<any>(node.inputs ?? {})) {
        const target = Array.isArray(ref) ? resolve(ref) : ref;
        expect(lock.nodes[target], `${id}.inputs.${sub}`).toBeDefined();
      }
    }
    // deploy-rs and colmena share one nixpkgs with the hosts.
    expect(resolve(["deploy-rs", "nixpkgs"])).toBe("nixpkgs");
    expect(resolve(["colmena", "stable"])).toBe("nixpkgs");
    expect(resolve(["colmena", "flake-utils"])).toBe(resolve(["deploy-rs", "utils"]));
  });
});

// ---- vault-agent configuration -------------------------------------------------------

function agentConfig(args: string): any {
  return evalJson(`import ${join(nixDir, "lib", "vault-agent-config.nix")} ${args}`);
}

describe("nix/lib/vault-agent-config.nix", () => {
  const secrets = `[
    { file = "/run/secrets/forgejo-runner-token"; path = "ci/data/hosts/h/forgejo-runner"; field = "token"; format = "env:TOKEN"; }
    { file = "/run/secrets/cache-signing-key"; path = "ci/data/hosts/h/cache"; field = "signing_key"; format = "raw"; }
  ]`;

  it("logs in with the kept secret_id and renders one 0400 file per secret", () => {
    const cfg = agentConfig(`{ address = "https://vault.test:8200"; roleIdFile = "/r"; secretIdFile = "/s"; secrets = ${secrets}; }`);
    expect(cfg.vault).toEqual({ address: "https://vault.test:8200" });
    expect(cfg.auto_auth.method).toEqual([
      {
        type: "approle",
        mount_path: "auth/approle",
        config: { role_id_file_path: "/r", secret_id_file_path: "/s", remove_secret_id_file_after_reading: false },
      },
    ]);
    expect(cfg.template).toEqual([
      {
        destination: "/run/secrets/forgejo-runner-token",
        contents: 'TOKEN={{ with secret "ci/data/hosts/h/forgejo-runner" }}{{ index .Data.data "token" }}{{ end }}\n',
        perms: "0400",
        error_on_missing_key: true,
      },
      {
        destination: "/run/secrets/cache-signing-key",
        contents: '{{ with secret "ci/data/hosts/h/cache" }}{{ index .Data.data "signing_key" }}{{ end }}',
        perms: "0400",
        error_on_missing_key: true,
      },
    ]);
    expect(cfg.template_config).toEqual({ exit_on_retry_failure: true });
    expect(cfg.exit_after_auth).toBe(false);
  });

  it("unwraps a wrapped secret_id itself when given the wrapping path, and exits after auth on request", () => {
    const cfg = agentConfig(
      `{ roleIdFile = "/r"; secretIdFile = "/w"; secretIdWrappingPath = "auth/ar/role/h/secret-id"; authMount = "ar"; secrets = [ ]; exitAfterAuth = true; }`,
    );
    expect(cfg.auto_auth.method[0]).toEqual({
      type: "approle",
      mount_path: "auth/ar",
      config: {
        role_id_file_path: "/r",
        secret_id_file_path: "/w",
        secret_id_response_wrapping_path: "auth/ar/role/h/secret-id",
        remove_secret_id_file_after_reading: true,
      },
    });
    expect(cfg).not.toHaveProperty("vault");
    expect(cfg.exit_after_auth).toBe(true);
  });

  it.each([
    ["an unknown format", `format = "yaml";`, /unknown format "yaml"/],
    ["a relative destination", `file = "run/x";`, /destination must be absolute/],
    ["a quote in a field", `field = "a\\"b";`, /has a quote, backslash or brace/],
    ["a bad env name", `format = "env:1X";`, /unknown format "env:1X"/],
  ])("refuses %s", (_what, override, message) => {
    expect(() =>
      agentConfig(`{ roleIdFile = "/r"; secretIdFile = "/s"; secrets = [ ({ file = "/run/x"; path = "ci/data/x"; field = "f"; format = "raw"; } // { ${override} }) ]; }`),
    ).toThrow(message);
  });
});

// ---- our NixOS modules, called as functions --------------------------------------------
// CI has no nixpkgs: test/support/nix-modules.nix calls a module with a STAND-IN lib and
// package set and returns the definitions it makes with nixpkgs' priority numbers. What an
// upstream module defines at the same option is cited in docs/upstream.md; each test states
// which definition must win.

const modules = join(root, "test", "support", "nix-modules.nix");
function moduleDefs(file: string, hostName: string, path: string[], extra = "", inventory = join(nixDir, "inventory.example.json")): { priority: number; value: any }[] {
  return evalJson(`
    let t = import ${modules}; inventory = t.readInventory ${inventory};
    in t.defsAt ${JSON.stringify(path).replace(/,/g, " ")} (t.call ({ file = ${join(nixDir, "modules", file)}; inherit inventory; hostName = "${hostName}"; } // { ${extra} }))`) as any;
}
const PLAIN = 100;
const MK_DEFAULT = 1000;

describe("modules/common.nix", () => {
  it("names a real host at plain priority, above the images' mkDefault \"\" (item 7)", () => {
    expect(moduleDefs("common.nix", "aws-metal-1", ["networking", "hostName"])).toEqual([{ priority: PLAIN, value: "aws-metal-1" }]);
    // Templates leave the name to the image (and the cloud).
    expect(moduleDefs("common.nix", "cache-x86_64", ["networking", "hostName"])).toEqual([]);
  });

  it("forces PermitRootLogin no over the images' plain prohibit-password (item 8)", () => {
    const [def] = moduleDefs("common.nix", "aws-metal-1", ["services", "openssh", "settings", "PermitRootLogin"]);
    expect(def.value).toBe("no");
    expect(def.priority).toBeLessThan(PLAIN);
  });

  it("turns off the wheel-login assertion and asserts a deploy key instead (item 1)", () => {
    expect(moduleDefs("common.nix", "cache-1", ["users", "allowNoPasswordLogin"])).toEqual([{ priority: PLAIN, value: true }]);
    const withKeys = moduleDefs("common.nix", "cache-1", ["assertions"]);
    expect(withKeys[0].value.map((a: any) => a.assertion)).toEqual([true]);
    const noKeys = moduleDefs("common.nix", "cache-1", ["assertions"], "authorizedKeys = [ ];");
    expect(noKeys[0].value[0]).toMatchObject({ assertion: false, message: expect.stringMatching(/sshAuthorizedKeys is empty/) });
  });

  it("lets the deploy user confirm a deploy-rs deploy by removing exactly its canary file (item 10)", () => {
    const [rules] = moduleDefs("common.nix", "cache-1", ["security", "sudo", "extraRules"]);
    const rm = rules.value[0].commands.map((c: any) => c.command).filter((c: string) => c.includes("/bin/rm "));
    expect(rm).toHaveLength(1);
    const [cmd, pattern] = rm[0].split(/ (?=\/tmp)/);
    expect(cmd).toBe("/run/current-system/sw/bin/rm");
    // The file deploy-rs' make_lock_path names: /tmp/deploy-rs-canary-<32-char store hash>.
    const fnmatch = (arg: string) =>
      execFileSync("python3", ["-c", "import fnmatch,sys; print(fnmatch.fnmatchcase(sys.argv[1], sys.argv[2]))", arg, pattern], { encoding: "utf8" }).trim();
    expect(fnmatch("/tmp/deploy-rs-canary-0c6wmm3khpgg6l6ja1kyczcxv3v4y8xr")).toBe("True");
    expect(fnmatch("/tmp/deploy-rs-canary-0c6wmm3khpgg6l6ja1kyczcxv3v4y8xr /etc/shadow")).toBe("False");
    expect(fnmatch("/tmp/deploy-rs-canary-../../etc/shadow")).toBe("False");
  });
});

describe("modules/vault-agent.nix", () => {
  it("leaves RuntimeDirectory to the upstream module and renders the inventory's files (item 2)", () => {
    const [unit] = moduleDefs("vault-agent.nix", "onprem-1", ["systemd", "services", "vault-agent-runner-fleet"]);
    expect(unit.value.serviceConfig).not.toHaveProperty("RuntimeDirectory");
    expect(unit.value.unitConfig.ConditionPathExists).toBe("/var/lib/runner-fleet/vault/secret-id");
    const [settings] = moduleDefs("vault-agent.nix", "onprem-1", ["services", "vault-agent", "instances", "runner-fleet", "settings"]);
    expect(settings.value.template.map((t: any) => t.destination)).toEqual(["/run/secrets/forgejo-runner-token"]);
    expect(settings.value.vault).toEqual({ address: "https://vault.example.com:8200" });
    // An image must not bake in the address of the inventory it happened to be built with.
    const [image] = moduleDefs("vault-agent.nix", "cache-x86_64", ["services", "vault-agent", "instances", "runner-fleet", "settings"]);
    expect(image.value).not.toHaveProperty("vault");
    // No secrets yet: one template, a marker with no secret in it, since OpenBao refuses an
    // agent with neither sink nor template (#22 item 4; run by test/vault-agent.test.ts).
    expect(image.value.template).toEqual([{ destination: "/run/vault-agent/runner-fleet-logged-in", contents: "logged in\n", perms: "0444" }]);
    expect(moduleDefs("vault-agent.nix", "onprem-1", ["systemd", "tmpfiles", "rules"])[0].value).toEqual(["d /run/secrets 0751 root root -"]);
  });
});

describe("modules/cloud-init.nix", () => {
  it("runs users-groups, so user-data's deploy user gets the stack's SSH keys", () => {
    const [mods] = moduleDefs("cloud-init.nix", "cache-1", ["services", "cloud-init", "settings", "cloud_init_modules"]);
    expect(mods.value).toContain("users-groups");
    // ...but not cc_ssh, which would replace the host keys the deploy side pins.
    const [config] = moduleDefs("cloud-init.nix", "cache-1", ["services", "cloud-init", "settings", "cloud_config_modules"]);
    expect(config.value).toEqual(["runcmd"]);
  });

  it("only defaults cloud-init networking off, so azure-common's plain true wins (item 9)", () => {
    expect(moduleDefs("cloud-init.nix", "cache-1", ["services", "cloud-init", "network", "enable"])).toEqual([{ priority: MK_DEFAULT, value: false }]);
  });
});

describe("modules/hardware", () => {
  const stub = `{ disko = { nixosModules.disko = "DISKO"; }; }`;
  const hardwareFor = (host: string) =>
    evalJson(`map (m: if builtins.isFunction m then "fn" else toString m) (import ${join(nixDir, "modules", "hardware")} ${stub} ${host})`) as string[];
  const base = `{ name = "x"; arch = "x86_64"; roles = [ ]; }`;

  it("template.nix sets grub devices below disk-image.nix's mkDefault, and no grub.device (item 19)", () => {
    expect(moduleDefs("hardware/template.nix", "cache-x86_64", ["boot", "loader", "grub", "device"])).toEqual([]);
    const [devices] = moduleDefs("hardware/template.nix", "cache-x86_64", ["boot", "loader", "grub", "devices"]);
    expect(devices.value).toEqual(["nodev"]);
    expect(devices.priority).toBeGreaterThan(MK_DEFAULT);
  });

  it("cloud-vm.nix is chosen from the host record, not from config (item 5)", () => {
    const fn = `import ${join(nixDir, "modules", "hardware", "cloud-vm.nix")}`;
    // The module function it returns takes no `config` argument at all.
    expect(evalJson(`builtins.attrNames (builtins.functionArgs (${fn} (${base} // { provider = "hetzner"; image = "nix"; })))`)).not.toContain("config");
  });

  const cloudVm = (host: string) => evalJson(`
      let
        lib = import ${join(root, "test", "support", "nixlib-standin.nix")};
        m = import ${join(nixDir, "modules", "hardware", "cloud-vm.nix")} (${base} // ${host});
        r = m { inherit lib; modulesPath = "/mp"; };
      in { imports = r.imports; config = r.config; }`) as any;

  it.each([
    ["hetzner", "/dev/sda"],
    ["digitalocean", "/dev/vda"],
  ])("a %s x86_64 host from our BIOS image boots grub from %s (item 20)", (provider, disk) => {
    const r = cloudVm(`{ provider = "${provider}"; image = "nix"; }`);
    expect(r.imports).toEqual(["/mp/profiles/qemu-guest.nix", "/mp/virtualisation/disk-image.nix"]);
    const [, fromImage] = r.config.contents;
    expect(fromImage.image).toEqual({ efiSupport: false });
    expect(fromImage.boot.loader.grub.devices).toEqual([disk]);
  });

  it("an aarch64 host from our image keeps the image's EFI boot: grub has no non-EFI target there (#22 item 3)", () => {
    const r = cloudVm(`{ provider = "hetzner"; image = "nix"; arch = "aarch64"; }`);
    const [, fromImage] = r.config.contents;
    expect(fromImage).toEqual({ image: { efiSupport: true } });
  });

  it("a stock host defines no image.* option, which only disk-image.nix declares, not even under a false mkIf (#22 item 5)", () => {
    for (const provider of ["hetzner", "digitalocean"]) {
      const r = cloudVm(`{ provider = "${provider}"; image = "stock"; }`);
      expect(r.imports).toEqual(["/mp/profiles/qemu-guest.nix"]);
      expect(JSON.stringify(r.config)).not.toMatch(/"image"/);
    }
  });

  it("templates give the raw and qcow2 images (BIOS and EFI) the virtio initrd drivers of qemu-guest.nix (#22 item 2)", () => {
    const [modules] = moduleDefs("hardware/template.nix", "cache-x86_64", ["image", "modules"]);
    for (const variant of ["raw", "qemu", "raw-efi", "qemu-efi"]) {
      expect(modules.value[variant], variant).toEqual({ imports: ["/modulesPath/profiles/qemu-guest.nix"] });
    }
    expect(modules.value.amazon).toEqual({ virtualisation: { "amazon-init": { enable: false } } });
  });

  it("gives stock cloud hosts disko and no disk-image module", () => {
    expect(hardwareFor(`(${base} // { provider = "hetzner"; image = "stock"; })`)).toEqual(["fn", "DISKO", join(nixDir, "modules", "hardware", "disko.nix")]);
  });

  it("installs an existing machine only on the disk the config names (issue 14 item 4)", () => {
    const existing = `(${base} // { name = "onprem-1"; provider = "existing"; image = "stock"; })`;
    expect(() => hardwareFor(existing)).toThrow(/hosts\.onprem-1: install is true but installDisk is not set/);
    expect(hardwareFor(`(${existing} // { installDisk = "/dev/nvme0n1"; })`)).toEqual([
      join(nixDir, "hosts", "onprem-1.nix"),
      "DISKO",
      join(nixDir, "modules", "hardware", "disko.nix"),
    ]);
    expect(hardwareFor(`(${existing} // { image = "nix"; })`)).toEqual([join(nixDir, "hosts", "onprem-1.nix")]);
    const inv = join(scratch, "install.json");
    const doc = JSON.parse(readFileSync(join(nixDir, "inventory.example.json"), "utf8"));
    doc.hosts["onprem-1"] = { ...doc.hosts["onprem-1"], image: "stock", installDisk: "/dev/nvme0n1" };
    writeFileSync(inv, JSON.stringify(doc));
    const [disk] = moduleDefs("hardware/disko.nix", "onprem-1", ["disko", "devices", "disk", "main", "device"], "", inv);
    expect(disk).toEqual({ priority: PLAIN, value: "/dev/nvme0n1" });
  });
});

describe("modules/roles/forgejo-runner.nix", () => {
  it("sets the module-wide package; instances have no package option (item 4)", () => {
    const defs = moduleDefs("roles/forgejo-runner.nix", "onprem-1", ["services", "gitea-actions-runner"]);
    const merged = Object.assign({}, ...defs.map((d) => d.value));
    // A package serialises to its store path.
    expect(merged.package).toMatch(/-act_runner$/);
    expect(merged.instances.forgejo).not.toHaveProperty("package");
    expect(merged.instances.forgejo).toMatchObject({ enable: true, tokenFile: "/run/secrets/forgejo-runner-token" });
  });

  it("the daemon starts without TOKEN, which act_runner would copy into host jobs; register still gets it (#24 item 10)", () => {
    const [def] = moduleDefs("roles/forgejo-runner.nix", "onprem-1", ["services", "gitea-actions-runner", "package", "text"]);
    const text = def.value as string;
    // The stand-in's forgejo-runner at a path of our own: a fake act_runner that prints what it got.
    const real = mkdtempSync(join(scratch, "act-runner-"));
    mkdirSync(join(real, "bin"));
    writeFileSync(join(real, "bin", "act_runner"), '#!/bin/sh\necho "args=$* token=${TOKEN:-unset} other=${OTHER:-unset}"\n', { mode: 0o755 });
    const script = text.replace("/nix/store/00000000000000000000000000000000-forgejo-runner", real);
    expect(script).not.toBe(text);
    const run = (...args: string[]) => spawnSync("bash", ["-euo", "pipefail", "-c", script, "act_runner", ...args], { env: { PATH: process.env.PATH, TOKEN: "PLANTED-registration", OTHER: "kept" }, encoding: "utf8" }).stdout.trim();
    expect(run("daemon", "--config", "/etc/x.yaml")).toBe("args=daemon --config /etc/x.yaml token=unset other=kept");
    expect(run("register", "--no-interactive", "--token", "PLANTED-registration")).toBe("args=register --no-interactive --token PLANTED-registration token=PLANTED-registration other=kept");
  });

  it("refuses a host with both runner roles, which one package cannot serve", () => {
    const inv = join(scratch, "both-runners.json");
    const doc = JSON.parse(readFileSync(join(nixDir, "inventory.example.json"), "utf8"));
    doc.hosts["onprem-1"].roles = ["forgejo-runner", "gitea-runner"];
    writeFileSync(inv, JSON.stringify(doc));
    const [asserts] = moduleDefs("roles/forgejo-runner.nix", "onprem-1", ["assertions"], "", inv);
    expect(asserts.value[0].assertion).toBe(false);
  });
});

describe("modules/secrets.nix: consumers start after the files exist (items 15, 16, 17)", () => {
  const unitsOf = (hostName: string, consumers: string[], inv?: string) =>
    Object.assign({}, ...moduleDefs("secrets.nix", hostName, ["systemd", "services"], `consumers = ${JSON.stringify(consumers).replace(/,/g, " ")};`, inv).map((d) => d.value));

  it("names each role's service as a consumer", () => {
    const consumersOf = (h: string) => moduleDefs("secrets.nix", h, ["runnerFleet", "secrets", "consumers"]).flatMap((d) => d.value);
    expect(consumersOf("cache-1")).toEqual(["harmonia"]);
    expect(consumersOf("onprem-1")).toEqual(["gitea-runner-forgejo"]);
    expect(consumersOf("aws-metal-1")).toEqual(["fireactions"]);
  });

  it("waits for every rendered file, then pulls in and orders each consumer after itself", () => {
    const units = unitsOf("aws-metal-1", ["fireactions"]);
    const wait = units["runner-fleet-secrets"];
    expect(wait.serviceConfig).toMatchObject({ Type: "oneshot", RemainAfterExit: true });
    expect(wait.after).toEqual(["vault-agent-runner-fleet.service"]);
    expect(wait.script).toContain("for f in /run/secrets/github-app-id /run/secrets/github-app-key.pem; do");
    expect(units.fireactions).toEqual({
      wantedBy: ["runner-fleet-secrets.service"],
      wants: ["runner-fleet-secrets.service"],
      after: ["runner-fleet-secrets.service"],
      unitConfig: { ConditionPathExists: "/var/lib/runner-fleet/vault/secret-id" },
    });
  });

  it("its wait script fails after the timeout when a file never appears, and passes once all exist", () => {
    const units = unitsOf("aws-metal-1", []);
    const dir = mkdtempSync(join(scratch, "secrets-"));
    const script = units["runner-fleet-secrets"].script
      .replaceAll("/run/secrets/", `${dir}/`)
      .replace(/\+ 300 \)\)/, "+ 1 ))");
    writeFileSync(join(dir, "github-app-id"), "1");
    const missing = spawnSync("bash", ["-euc", script], { encoding: "utf8" });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/github-app-key\.pem not rendered/);
    writeFileSync(join(dir, "github-app-key.pem"), "k");
    expect(spawnSync("bash", ["-euc", script]).status).toBe(0);
  });
});

describe("modules/bootstrap.nix", () => {
  const text = () =>
    evalJson(`
      let t = import ${modules}; inventory = t.readInventory ${join(nixDir, "inventory.example.json")};
        r = t.call { file = ${join(nixDir, "modules", "bootstrap.nix")}; inherit inventory; hostName = "aws-metal-1"; };
      in (builtins.head (builtins.filter (p: p.name == "runner-fleet-bootstrap") r.environment.systemPackages)).text`) as string;

  it("restarts the secrets wait after the agent, never fireactions directly (item 17)", () => {
    const t = text();
    expect(t).not.toMatch(/restart fireactions/);
    expect(t.indexOf("systemctl restart vault-agent-runner-fleet.service")).toBeLessThan(t.indexOf("systemctl restart runner-fleet-secrets.service"));
  });

  it("publishes the host key before waiting for secrets, with credentials on stdin only", () => {
    const t = text();
    expect(t).toContain('vault kv put -mount="$mount" "hosts/$name/ssh-host-key" public_key=-');
    expect(t.indexOf("ssh-host-key")).toBeLessThan(t.indexOf("systemctl restart vault-agent-runner-fleet.service"));
    expect(t).toMatch(/\| vault write -field=token "auth\/\$auth\/login" -/);
  });
});

describe("nix/lib names", () => {
  const inv = join(nixDir, "inventory.example.json");
  it.each(["defaults", "network", "meta", "cache-x86_64"])("refuses the reserved host name %s (item 23)", (name) => {
    const bad = join(scratch, `reserved-${name}.json`);
    const doc = JSON.parse(readFileSync(inv, "utf8"));
    doc.hosts[name] = { ...doc.hosts["cache-1"], name };
    writeFileSync(bad, JSON.stringify(doc));
    expect(() => evalLib(bad, "inventory.hosts")).toThrow(new RegExp(`hosts\\.${name}: "${name}" is (reserved by colmena|the name of an image template)`));
  });

  it("gives checks.<system> only that system's nodes (item 22)", () => {
    expect(evalLib(inv, `builtins.attrNames (fleet.forSystem "aarch64-linux" inventory).hosts`)).toEqual(["aws-metal-1"]);
    expect(evalLib(inv, `builtins.attrNames (fleet.forSystem "x86_64-linux" inventory).hosts`)).toEqual(["cache-1", "onprem-1"]);
  });
});

// runner-fleet-bootstrap's script, run for real with bash and jq against a recording stand-in
// for the `vault` CLI and systemctl (the real agent and Vault run in the e2e).
describe("runner-fleet-bootstrap, run", () => {
  const scriptText = () =>
    evalJson(`
      let t = import ${modules}; inventory = t.readInventory ${join(nixDir, "inventory.example.json")};
        r = t.call { file = ${join(nixDir, "modules", "bootstrap.nix")}; inherit inventory; hostName = "aws-metal-1"; };
      in (builtins.head (builtins.filter (p: p.name == "runner-fleet-bootstrap") r.environment.systemPackages)).text`) as string;

  function setup() {
    const dir = mkdtempSync(join(scratch, "bootstrap-"));
    const bin = join(dir, "bin");
    for (const d of ["bin", "etc/runner-fleet/vault", "state", "ssh"]) mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, "etc/runner-fleet/host.json"), JSON.stringify({ name: "aws-metal-1", stack: "ci", vault: { address: "https://vault.test:8200", mount: "ci", authMount: "approle" } }));
    writeFileSync(join(dir, "etc/runner-fleet/vault/role-id"), "role-1\n");
    writeFileSync(join(dir, "etc/runner-fleet/vault/wrapped-secret-id"), "wrap-token-1");
    writeFileSync(join(dir, "ssh/ssh_host_ed25519_key.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKey0 root@host\n");
    // Stand-in vault CLI: logs argv (and the token it was given) and answers like Vault would.
    writeFileSync(join(bin, "vault"), `#!/usr/bin/env bash
echo "argv: $* token=\${VAULT_TOKEN:-} addr=\${VAULT_ADDR:-}" >> "${dir}/vault.log"
case "$1 $2" in
  "write -field=creation_path") [ "$VAULT_TOKEN" = wrap-token-1 ] && [ ! -e "${dir}/unwrapped" ] && echo auth/approle/role/runner-fleet.ci.aws-metal-1/secret-id && exit 0; exit 2 ;;
  "unwrap -field=secret_id") [ "$VAULT_TOKEN" = wrap-token-1 ] && { [ -e "${dir}/unwrapped" ] && exit 2; touch "${dir}/unwrapped"; echo sid-1; exit 0; }; exit 2 ;;
  "write -field=token") in=$(jq -c . ); echo "login: $in" >> "${dir}/vault.log"; [ "$in" = '{"role_id":"role-1","secret_id":"sid-1"}' ] && echo tok-1 && exit 0; exit 2 ;;
  "kv get") [ -s "${dir}/published" ] && cat "${dir}/published" && exit 0; exit 2 ;;
  "kv put") cat > "${dir}/published"; exit 0 ;;
  "token revoke") exit 0 ;;
esac
exit 3
`, { mode: 0o755 });
    writeFileSync(join(bin, "systemctl"), `#!/usr/bin/env bash\necho "$*" >> "${dir}/systemctl.log"\n`, { mode: 0o755 });
    const script = scriptText()
      .replaceAll("/etc/runner-fleet", join(dir, "etc/runner-fleet"))
      .replaceAll("/var/lib/runner-fleet", join(dir, "state"))
      .replaceAll("/etc/ssh", join(dir, "ssh"));
    // stdin /dev/null, as systemd runs it (test/bootstrap-bao.test.ts says why).
    const run = () => spawnSync("bash", ["-euo", "pipefail", "-c", script], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
    return { dir, run };
  }

  it("unwraps once, publishes the host key with its own token, then restarts the agent and the secrets wait", () => {
    const { dir, run } = setup();
    const first = run();
    expect(first.stderr).toBe("");
    expect(first.status).toBe(0);
    expect(readFileSync(join(dir, "state/vault/secret-id"), "utf8")).toBe("sid-1");
    expect(statSync(join(dir, "state/vault/secret-id")).mode & 0o777).toBe(0o600);
    expect(existsSync(join(dir, "etc/runner-fleet/vault/wrapped-secret-id"))).toBe(false);
    expect(readFileSync(join(dir, "published"), "utf8")).toBe("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKey0");
    const log = readFileSync(join(dir, "vault.log"), "utf8");
    expect(log).toContain("argv: kv put -mount=ci hosts/aws-metal-1/ssh-host-key public_key=- token=tok-1 addr=https://vault.test:8200");
    expect(log).toContain("argv: token revoke -self token=tok-1");
    // Neither the secret_id nor the wrapping token is ever an argument.
    for (const line of log.split("\n").filter((l) => l.startsWith("argv:"))) {
      expect(line.replace(/ token=.*/, "")).not.toMatch(/sid-1|wrap-token-1/);
    }
    expect(readFileSync(join(dir, "systemctl.log"), "utf8")).toBe("restart vault-agent-runner-fleet.service\nrestart runner-fleet-secrets.service\n");
    expect(readFileSync(join(dir, "state/vault.env"), "utf8")).toBe("VAULT_ADDR=https://vault.test:8200\n");

    // A later boot: no unwrap (the token is spent), no second write of an unchanged key, and
    // no restart of services that already started in order (it would stop running jobs).
    const second = run();
    expect(second.status).toBe(0);
    const again = readFileSync(join(dir, "vault.log"), "utf8").slice(log.length);
    expect(again).not.toContain("unwrap");
    expect(again).not.toContain("kv put");
    expect(readFileSync(join(dir, "systemctl.log"), "utf8").split("\n")[2]).toBe("start vault-agent-runner-fleet.service runner-fleet-secrets.service");

    // A re-seed that moves the host to another Vault address restarts the agent again.
    writeFileSync(join(dir, "etc/runner-fleet/host.json"), JSON.stringify({ name: "aws-metal-1", vault: { address: "https://vault2.test:8200", mount: "ci" } }));
    expect(run().status).toBe(0);
    expect(readFileSync(join(dir, "systemctl.log"), "utf8").split("\n").slice(3, 5)).toEqual([
      "restart vault-agent-runner-fleet.service",
      "restart runner-fleet-secrets.service",
    ]);
  });

  it("fails without a stored secret_id or a wrapping token, before touching any service", () => {
    const { dir, run } = setup();
    rmSync(join(dir, "etc/runner-fleet/vault/wrapped-secret-id"));
    const r = run();
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/wrapped-secret-id is missing and no secret_id is stored/);
    expect(existsSync(join(dir, "systemctl.log"))).toBe(false);
  });
});

describe("nix/flake.nix outputs (stand-in inputs, example inventory)", () => {
  const flake = (expr: string) => evalJson(`let o = import ${join(root, "test", "support", "flake-standin.nix")} { }; in ${expr}`) as any;

  it("checks.<system> hold only that system's nodes, so no check needs another arch's builder (item 22)", () => {
    expect(flake("o.checks")).toEqual({ "aarch64-linux": { nodes: ["aws-metal-1"] }, "x86_64-linux": { nodes: ["cache-1", "onprem-1"] } });
  });

  it("builds -qcow2 from nixpkgs' qemu image variant and -raw from raw, the EFI ones on aarch64 (item 6, #22 item 3)", () => {
    expect(flake(`{ q = o.packages.x86_64-linux.cache-qcow2; r = o.packages.x86_64-linux.fireactions-raw; a = o.packages.x86_64-linux.fireactions-azure;
      qa = o.packages.aarch64-linux.cache-qcow2; ra = o.packages.aarch64-linux.fireactions-raw; }`)).toEqual({
      q: "image:qemu",
      r: "image:raw",
      a: "image:azure",
      qa: "image:qemu-efi",
      ra: "image:raw-efi",
    });
    expect(flake("builtins.attrNames o.packages.aarch64-linux")).not.toContain("fireactions-azure");
  });

  it("gives colmena's node for a host the modules of its nixosSystem and what lib.nixosSystem adds, so both build one system (#22 item 6)", () => {
    // colmena evaluates eval-config.nix with plain lib; mkSystem's own nixpkgs module (hostPlatform,
    // config) is what colmena sets from meta.nodeNixpkgs. A real evaluation compared the two
    // toplevels (docs/upstream.md, #22).
    const describe = "map (m: if builtins.isFunction m then \"fn\" else if builtins.isPath m then toString m else builtins.attrNames m)";
    const r = flake(`let n = o.nixosConfigurations.onprem-1; c = (builtins.head o.colmenaHive.onprem-1.imports).imports;
      k = builtins.length n.modules - 1; take = l: builtins.genList (builtins.elemAt l) k;
      in {
        system = ${describe} (take n.modules); colmena = ${describe} (take c);
        own = builtins.attrNames (builtins.elemAt n.modules k); extra = builtins.genList (i: builtins.elemAt c (i + k)) (builtins.length c - k); adds = n.adds; }`);
    expect(r.colmena).toEqual(r.system);
    expect(r.own).toEqual(["nixpkgs"]);
    expect(r.extra).toEqual([r.adds]);
    expect(r.adds.system.nixos.versionSuffix).toBe(".20260510.8fd9daa");
  });

  it("gives the deploy shell and deploy-tools the same tools, colmena and deploy-rs from the flake inputs", () => {
    const tools = ["deploy-rs", "colmena", "nixos-anywhere", "hcloud", "hcloud-upload-image", "azure-cli", "awscli2", "openssh", "coreutils"];
    for (const system of ["x86_64-linux", "aarch64-linux"]) {
      expect(flake(`map (p: p.name) o.devShells.${system}.deploy.packages`)).toEqual(tools);
      expect(flake(`map (p: p.name) o.packages.${system}.deploy-tools.paths`)).toEqual(tools);
    }
  });
});

describe("the e2e hosts' fireactions stand-in", () => {
  // test/e2e/host/systemctl restates the fireactions unit's preStart (nixpkgs cannot be built
  // here); this keeps the two from drifting apart, which once broke the e2e.
  const flags = (text: string) => [...new Set(text.match(/--[a-z][a-z-]*/g) ?? [])].sort();
  it("renders the config with exactly the flags roles/fireactions.nix passes", () => {
    const module = readFileSync(join(nixDir, "modules", "roles", "fireactions.nix"), "utf8");
    const preStart = /renderFlags = \[([\s\S]*?)\];/.exec(module)?.[1];
    const standIn = /render_fireactions\(\) \{([\s\S]*?)\n\}/.exec(readFileSync(join(root, "test", "e2e", "host", "systemctl"), "utf8"))?.[1];
    expect(preStart && standIn).toBeTruthy();
    expect(flags(standIn!)).toEqual(flags(preStart!));
  });
});
