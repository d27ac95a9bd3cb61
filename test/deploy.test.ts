/**
 * The deploy step (issue 7): command lines per tool, what triggers a redeploy, rolling waves,
 * first installs on stock images only, readiness timeouts, and pool edits pushed in place.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { containsSecret, installMocks, reveal } from "../scripts/mock-runtime";
import { baseConfig, mockConfig, modelFrom, planJson, SSH_KEY } from "./support/fixtures";

/** Three hosts: an image host (fireactions), a stock Hetzner host and an existing machine activating on boot. */
function fleetConfig(): Record<string, any> {
  const cfg = baseConfig();
  cfg.hosts = {
    alpha: { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["large", "small"] },
    beta: { provider: "hetzner", serverType: "ccx33", location: "fsn1", roles: ["forgejo-runner"] },
    gamma: { provider: "existing", address: "192.0.2.10", arch: "x86_64", vcpus: 16, memoryMib: 32768, kvm: true, roles: ["fireactions"], pools: ["medium"], boot: true },
  };
  return cfg;
}

const { resources } = installMocks({ stack: "test", ...mockConfig(fleetConfig()) });

const cmd = await import("../components/deploy-commands");
const pulumi = await import("@pulumi/pulumi");
const { FleetDeploy } = await import("../components/deploy");
const { buildInventory, renderInventoryJson } = await import("../components/inventory");
const { renderPoolsJson } = await import("../components/pools");
const { userDataFiles } = await import("../components/cloud-init");

// ---------------------------------------------------------------------------------------------
// Pure command builders

const switchArgs = {
  tool: "deploy-rs" as const, host: "alpha", address: "203.0.113.7", flake: "./nix", sshUser: "deploy",
  boot: false, confirmTimeout: 30, activationTimeout: 240, switchTimeoutMinutes: 30,
};

describe("switch command lines", () => {
  it("deploy-rs: one node per invocation, magic rollback with a confirm timeout, --impure for nix", () => {
    expect(cmd.deployToolCommand(switchArgs)).toBe(
      "deploy --skip-checks --hostname 203.0.113.7 --ssh-user deploy --magic-rollback true --auto-rollback true " +
        "--confirm-timeout 30 --activation-timeout 240 ./nix#alpha -- --impure",
    );
  });

  it("deploy-rs --boot: magic rollback off (nothing to confirm), no confirm timeout", () => {
    const line = cmd.deployToolCommand({ ...switchArgs, boot: true });
    expect(line).toBe(
      "deploy --skip-checks --hostname 203.0.113.7 --ssh-user deploy --magic-rollback false --auto-rollback true " +
        "--activation-timeout 240 --boot ./nix#alpha -- --impure",
    );
  });

  it("colmena: switch or boot, this host only, impure, from the flake directory", () => {
    expect(cmd.deployToolCommand({ ...switchArgs, tool: "colmena" })).toBe("cd ./nix && colmena apply switch --on alpha --impure");
    expect(cmd.deployToolCommand({ ...switchArgs, tool: "colmena", boot: true })).toBe("cd ./nix && colmena apply boot --on alpha --impure");
  });

  it("wraps the tool in a timeout and keeps the inventory off the command line", () => {
    const line = cmd.switchCommand(switchArgs);
    expect(line).toContain("timeout 30m sh -c 'deploy --skip-checks");
    expect(line).toContain('cat > "$inventory"');
    expect(line).not.toMatch(/"version"|"hosts"/);
  });
});

/** Runs a built command with fake tools first on PATH; returns exit code, stderr and what the fakes saw. */
function runWithFakes(command: string, fakes: Record<string, string>, stdin: string, env: Record<string, string> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-deploy-"));
  fs.mkdirSync(path.join(dir, "bin"));
  for (const [name, body] of Object.entries(fakes)) {
    fs.writeFileSync(path.join(dir, "bin", name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  }
  const r = spawnSync("/bin/sh", ["-c", command], {
    input: stdin, encoding: "utf8",
    env: { ...process.env, ...env, PATH: `${path.join(dir, "bin")}:${process.env.PATH}`, OUT: dir },
  });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout, dir };
}

describe("switch command, executed with a fake deploy", () => {
  const fakeDeploy = 'cp "$RUNNER_FLEET_INVENTORY" "$OUT/seen.json"; echo "$@" > "$OUT/args"; exit ${FAKE_EXIT:-0}';

  it("hands the tool the inventory from stdin through RUNNER_FLEET_INVENTORY and removes it after", () => {
    const r = runWithFakes(cmd.switchCommand(switchArgs), { deploy: fakeDeploy }, '{"version":1}\n');
    expect(r.code).toBe(0);
    expect(fs.readFileSync(path.join(r.dir, "seen.json"), "utf8")).toBe('{"version":1}\n');
    expect(fs.readFileSync(path.join(r.dir, "args"), "utf8")).toContain("--hostname 203.0.113.7");
  });

  it("a failed deploy exits 1 naming the host", () => {
    const r = runWithFakes(cmd.switchCommand(switchArgs), { deploy: fakeDeploy }, "{}", { FAKE_EXIT: "101" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("deploy of alpha failed");
  });
});

describe("first install", () => {
  const args = {
    host: "beta", address: "203.0.113.9", flake: "./nix", sshUser: "deploy",
    installTimeoutMinutes: 45, readyTimeoutMinutes: 20,
  };

  it("runs nixos-anywhere under a timeout, impure, keeping host keys and the host's files", () => {
    const line = cmd.installCommand(args);
    expect(line).toContain(
      'timeout 45m nixos-anywhere --flake ./nix#beta --option pure-eval false --copy-host-keys --extra-files "$work/files" root@203.0.113.9',
    );
    expect(line).toContain("install of beta failed");
  });

  // Fake ssh: the deploy user answers only once "installed"; root streams a tar of a fixture /etc.
  const fakeSsh = [
    'for a in "$@"; do last="$a"; case "$a" in deploy@*) who=deploy;; root@*) who=root;; esac; done',
    'if [ "$who" = deploy ]; then [ -e "$OUT/installed" ] || [ -n "$FAKE_NIXOS" ]; exit $?; fi',
    'if [ -n "$FAKE_NO_FACTS" ]; then exit 0; fi',
    'tar -C "$FIXTURE" -cf - runner-fleet',
  ].join("\n");
  const fakeAnywhere = [
    'while [ $# -gt 0 ]; do case "$1" in --extra-files) files="$2"; shift;; esac; shift; done',
    'cp -rp "$files" "$OUT/extra"; cp "$RUNNER_FLEET_INVENTORY" "$OUT/inventory"; touch "$OUT/installed"',
  ].join("\n");

  function fixture(): string {
    const etc = fs.mkdtempSync(path.join(os.tmpdir(), "rf-etc-"));
    fs.mkdirSync(path.join(etc, "runner-fleet", "vault"), { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(etc, "runner-fleet", "host.json"), '{"name":"beta"}\n');
    fs.writeFileSync(path.join(etc, "runner-fleet", "vault", "wrapped-secret-id"), "hvs.wrapped-test", { mode: 0o600 });
    return etc;
  }

  it("carries /etc/runner-fleet (wrapped secret_id included, 0600 kept) into --extra-files", () => {
    const r = runWithFakes(cmd.installCommand(args), { ssh: fakeSsh, "nixos-anywhere": fakeAnywhere }, '{"version":1}\n', { FIXTURE: fixture() });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const wrapped = path.join(r.dir, "extra", "etc", "runner-fleet", "vault", "wrapped-secret-id");
    expect(fs.readFileSync(wrapped, "utf8")).toBe("hvs.wrapped-test");
    expect(fs.statSync(wrapped).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(path.join(r.dir, "inventory"), "utf8")).toBe('{"version":1}\n');
  });

  it("lays the files over the new root with the host's directory modes", () => {
    const r = runWithFakes(cmd.installCommand(args), { ssh: fakeSsh, "nixos-anywhere": fakeAnywhere }, "{}", { FIXTURE: fixture() });
    expect(r.code).toBe(0);
    const mode = (rel: string) => fs.statSync(path.join(r.dir, "extra", rel)).mode & 0o777;
    expect([mode("."), mode("etc")]).toEqual([0o755, 0o755]);
  });

  it("never reinstalls a host that already runs NixOS", () => {
    const r = runWithFakes(cmd.installCommand(args), { ssh: fakeSsh, "nixos-anywhere": fakeAnywhere }, "{}", { FIXTURE: fixture(), FAKE_NIXOS: "1" });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("beta already runs NixOS: install skipped");
    expect(fs.existsSync(path.join(r.dir, "installed"))).toBe(false);
  });

  it("stops, naming the host, when cloud-init left no facts on a cloud host", () => {
    const r = runWithFakes(cmd.installCommand(args), { ssh: fakeSsh, "nixos-anywhere": fakeAnywhere }, "{}", { FIXTURE: fixture(), FAKE_NO_FACTS: "1" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no /etc/runner-fleet/host.json on beta");
    expect(fs.existsSync(path.join(r.dir, "installed"))).toBe(false);
  });
});

describe("seed files (existing machines)", () => {
  const model = modelFrom(fleetConfig());
  const seed = (wrapped = "hvs.wrapped-1", pools = "[]\n") => seedJsonFor("gamma", model, pools, wrapped);

  it("carries exactly cloud-init's files, with their modes and contents", () => {
    const files = JSON.parse(seed()).files;
    expect(files.map((f: any) => [f.path, f.mode])).toEqual([
      ["/etc/runner-fleet/host.json", "0644"],
      ["/etc/runner-fleet/pools.json", "0644"],
      ["/etc/runner-fleet/vault/role-id", "0600"],
      ["/etc/runner-fleet/vault/wrapped-secret-id", "0600"],
    ]);
    expect(JSON.parse(files[0].content).name).toBe("gamma");
    expect(files[3].content).toBe("hvs.wrapped-1");
  });

  it("the trigger ignores a new wrapped token and pool edits, and follows host facts and role_id", () => {
    const h0 = cmd.seedTriggerHash(seed("hvs.wrapped-1"));
    expect(cmd.seedTriggerHash(seed("hvs.wrapped-2"))).toBe(h0);
    expect(cmd.seedTriggerHash(seed("hvs.wrapped-1", '[{"name":"x"}]\n'))).toBe(h0);
    const doc = JSON.parse(seed());
    doc.files[0].content = doc.files[0].content.replace('"gamma"', '"gamma2"');
    expect(cmd.seedTriggerHash(JSON.stringify(doc))).not.toBe(h0);
    doc.files[0].content = JSON.parse(seed()).files[0].content;
    doc.files[2].content = "role-other";
    expect(cmd.seedTriggerHash(JSON.stringify(doc))).not.toBe(h0);
  });

  it("refuses files the host would refuse: outside /etc/runner-fleet/, .., executable, encoded", () => {
    const file = { path: "/etc/runner-fleet/host.json", content: "{}", owner: "root:root" as const, permissions: "0644" as const };
    expect(() => cmd.renderSeedJson([{ ...file, path: "/etc/sudoers" }])).toThrow(/files\[0\]: "\/etc\/sudoers" is not under \/etc\/runner-fleet\//);
    expect(() => cmd.renderSeedJson([{ ...file, path: "/etc/runner-fleet/../shadow" }])).toThrow(/\.\. component/);
    expect(() => cmd.renderSeedJson([file, file])).toThrow(/files\[1\]: .*appears twice/);
    expect(() => cmd.renderSeedJson([{ ...file, encoding: "gz+b64" }])).toThrow(/encoded/);
    expect(() => cmd.parseSeedJson(JSON.stringify({ files: [{ path: file.path, mode: "0755", content: "" }] }))).toThrow(/executable/);
  });

  it("without pools: every file but pools.json, same bytes; a pool edit no longer changes it", () => {
    const full = JSON.parse(seed()).files;
    const trimmed = JSON.parse(cmd.seedWithoutPools(seed())).files;
    expect(trimmed).toEqual(full.filter((f: any) => f.path !== "/etc/runner-fleet/pools.json"));
    expect(trimmed.length).toBe(full.length - 1);
    expect(cmd.seedWithoutPools(seed("hvs.wrapped-1", '[{"name":"x"}]\n'))).toBe(cmd.seedWithoutPools(seed("hvs.wrapped-1")));
    expect(cmd.seedTriggerHash(cmd.seedWithoutPools(seed()))).toBe(cmd.seedTriggerHash(seed()));
  });

  it("the seed command: sudo -n the host's runner-fleet-seed under a timeout, failure names the host", () => {
    expect(cmd.seedCommand("gamma", 10)).toBe(
      "timeout 10m sudo -n /run/current-system/sw/bin/runner-fleet-seed || { echo 'seeding gamma failed' >&2; exit 1; }",
    );
  });

  it("the deploy user's sudo rules (nix/lib/deploy-sudo.json, read by common.nix) allow the commands the deploy step sudoes", () => {
    const { commands } = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "nix", "lib", "deploy-sudo.json"), "utf8"));
    for (const line of [cmd.seedCommand("gamma"), cmd.poolsCommand("gamma")]) {
      const program = /sudo -n (\S+)/.exec(line)![1];
      expect(commands).toContain(program);
    }
  });
});

describe("first install of an existing machine: files from the seed, not the machine", () => {
  const model = modelFrom(fleetConfig());
  const seed = seedJsonFor("gamma", model, "[]\n", "hvs.wrapped-test");
  const args = {
    host: "gamma", address: "192.0.2.10", flake: "./nix", sshUser: "deploy",
    installTimeoutMinutes: 45, readyTimeoutMinutes: 20, filesFrom: "stdin" as const,
  };
  // root answers nothing but records that it was asked: only nixos-anywhere (faked) may use it.
  const fakeSsh = [
    'for a in "$@"; do case "$a" in deploy@*) who=deploy;; root@*) who=root;; esac; done',
    'if [ "$who" = deploy ]; then [ -e "$OUT/installed" ]; exit $?; fi',
    'echo "$@" >> "$OUT/root-ssh"; exit 1',
  ].join("\n");
  const fakeAnywhere = [
    'while [ $# -gt 0 ]; do case "$1" in --extra-files) files="$2"; shift;; esac; shift; done',
    'cp -rp "$files" "$OUT/extra"; cp "$RUNNER_FLEET_INVENTORY" "$OUT/inventory"; touch "$OUT/installed"',
  ].join("\n");

  it("the command copies nothing off the machine", () => {
    const line = cmd.installCommand(args);
    expect(line).not.toContain("tar -C /etc");
    expect(line).toContain('--extra-files "$work/files" root@192.0.2.10');
  });

  it("hands nixos-anywhere the seed's files (same bytes and modes) and the inventory after them", () => {
    const r = runWithFakes(cmd.installCommand(args), { ssh: fakeSsh, "nixos-anywhere": fakeAnywhere }, cmd.installStdin(seed, '{"version":1}\n'));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(fs.existsSync(path.join(r.dir, "root-ssh"))).toBe(false);
    const extra = path.join(r.dir, "extra");
    for (const f of cmd.parseSeedJson(seed)) {
      const file = path.join(extra, f.path);
      expect(fs.readFileSync(file, "utf8")).toBe(f.content);
      expect(fs.statSync(file).mode & 0o777).toBe(parseInt(f.mode, 8));
    }
    expect(fs.readFileSync(path.join(extra, "etc/runner-fleet/vault/wrapped-secret-id"), "utf8")).toBe("hvs.wrapped-test");
    // Laid over the new root: directories as the host has them (tar gives existing ones these modes).
    const mode = (rel: string) => fs.statSync(path.join(extra, rel)).mode & 0o777;
    expect([mode("."), mode("etc"), mode("etc/runner-fleet"), mode("etc/runner-fleet/vault")]).toEqual([0o755, 0o755, 0o755, 0o700]);
    expect(fs.readFileSync(path.join(r.dir, "inventory"), "utf8")).toBe('{"version":1}\n');
  });

  it("stops, naming the host, when the seed carries no host facts", () => {
    const noFacts = JSON.stringify({ files: JSON.parse(seed).files.slice(1) });
    const r = runWithFakes(cmd.installCommand(args), { ssh: fakeSsh, "nixos-anywhere": fakeAnywhere }, cmd.installStdin(noFacts, "{}"));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("install of gamma: the seed files carry no /etc/runner-fleet/host.json");
    expect(fs.existsSync(path.join(r.dir, "installed"))).toBe(false);
  });

  it("still skips a machine that already runs NixOS", () => {
    const r = runWithFakes(cmd.installCommand(args), { ssh: `${fakeSsh.split("\n")[0]}\n[ "$who" = deploy ] && exit 0; exit 1`, "nixos-anywhere": fakeAnywhere }, cmd.installStdin(seed, "{}"));
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("gamma already runs NixOS: install skipped");
    expect(fs.existsSync(path.join(r.dir, "installed"))).toBe(false);
  });
});

describe("content addresses", () => {
  it("the flake hash follows every source file and ignores result links", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-flake-"));
    fs.mkdirSync(path.join(dir, "modules"));
    fs.writeFileSync(path.join(dir, "flake.nix"), "{ }\n");
    fs.writeFileSync(path.join(dir, "modules", "a.nix"), "{ }\n");
    const h0 = cmd.hashFlakeSources(dir);
    fs.symlinkSync("/nix/store/x-image", path.join(dir, "result-image-x86_64"));
    expect(cmd.hashFlakeSources(dir)).toBe(h0);
    fs.writeFileSync(path.join(dir, "modules", "a.nix"), "{ x = 1; }\n");
    expect(cmd.hashFlakeSources(dir)).not.toBe(h0);
  });

  it("a host's inventory is the shared fields plus its own entry only", () => {
    const model = modelFrom(fleetConfig());
    const addrs = { alpha: { public: "203.0.113.1", private: null }, beta: { public: "203.0.113.2", private: null }, gamma: { public: "192.0.2.10", private: null } };
    const forAlpha = (a: typeof addrs) => renderInventoryJson(buildInventory(model, a, ["alpha"]));
    const alpha = JSON.parse(forAlpha(addrs));
    expect(Object.keys(alpha.hosts)).toEqual(["alpha"]);
    expect(alpha.sshAuthorizedKeys).toEqual([SSH_KEY]);
    // The whole inventory holds the same entry for alpha.
    expect(alpha.hosts.alpha).toEqual(buildInventory(model, addrs).hosts.alpha);
    // Another host moving changes nothing for alpha; alpha moving does.
    expect(forAlpha({ ...addrs, beta: { public: "203.0.113.99", private: null } })).toBe(forAlpha(addrs));
    expect(forAlpha({ ...addrs, alpha: { public: "203.0.113.98", private: null } })).not.toBe(forAlpha(addrs));
  });
});

describe("readiness", () => {
  it("the default dial limit gives up after ~7.5 s, as the reference says", () => {
    expect(cmd.dialBackoffMs(10)).toBeGreaterThan(7000);
    expect(cmd.dialBackoffMs(10)).toBeLessThan(8000);
  });

  it("the dial limit spans the ready timeout, and not one error more", () => {
    for (const minutes of [1, 20, 60]) {
      const limit = cmd.dialErrorLimitFor(minutes);
      expect(cmd.dialBackoffMs(limit)).toBeGreaterThanOrEqual(minutes * 60_000);
      expect(cmd.dialBackoffMs(limit - 1)).toBeLessThan(minutes * 60_000);
    }
    // 10 delays ramp up to the cap (11.3 s), 238 more of 5 s reach 20 min: 248 waits, 249 errors.
    expect(cmd.dialErrorLimitFor(20)).toBe(249);
  });

  it("waits for cloud-init and systemd under a timeout that names the host", () => {
    const line = cmd.readinessCommand("beta", 20);
    expect(line).toMatch(/^timeout 20m sh -c '/);
    expect(line).toContain("cloud-init status --wait");
    expect(line).toContain("systemctl is-system-running --wait");
    expect(line).toContain("beta did not become ready within 20 minutes");
  });
});

describe("waves", () => {
  it("chunks hosts in order by batch size", () => {
    expect(cmd.deployWaves(["a", "b", "c"], 1)).toEqual([["a"], ["b"], ["c"]]);
    expect(cmd.deployWaves(["a", "b", "c"], 2)).toEqual([["a", "b"], ["c"]]);
    expect(cmd.deployWaves(["a", "b", "c"], 5)).toEqual([["a", "b", "c"]]);
    expect(() => cmd.deployWaves(["a"], 0)).toThrow(/batchSize/);
  });
});

// ---------------------------------------------------------------------------------------------
// Resource wiring under mocks

interface Captured {
  type: string;
  name: string;
  opts: Record<string, any>;
}

/** A host's seed document with fake Vault ids, from cloud-init's own file list. */
function seedJsonFor(name: string, model: ReturnType<typeof modelFrom>, poolsJson: string, wrappedSecretId = `hvs.wrapped-${name}`): string {
  const host = model.hosts.find((h) => h.name === name)!;
  return cmd.renderSeedJson(userDataFiles({ host, model, poolsJson, roleId: `role-${name}`, wrappedSecretId }));
}

/** Builds a FleetDeploy over stable fake host outputs; captures every child's options. */
async function deployFor(cfg: Record<string, any>, componentName: string) {
  const model = modelFrom(cfg);
  const addrs: Record<string, { public: string; private: null }> = {};
  model.hosts.forEach((h, i) => (addrs[h.name] = { public: h.provider === "existing" ? h.address : `203.0.113.${10 + i}`, private: null }));
  const hosts = model.hosts.map((h) => ({
    name: h.name, provider: h.provider, arch: h.arch, sshUser: model.deploy.sshUser,
    publicAddress: pulumi.output(addrs[h.name].public), privateAddress: pulumi.output(undefined),
    identity: pulumi.output(`id-${h.name}`),
  }));
  const poolsJson = Object.fromEntries(model.hosts.map((h) => [h.name, renderPoolsJson(h.pools.map((p) => model.pools[p]))]));
  // Existing machines get their user-data files through the seed, as fleet.ts builds them.
  const seedFiles = Object.fromEntries(model.hosts.filter((h) => h.provider === "existing").map((h) => [h.name, pulumi.secret(seedJsonFor(h.name, model, poolsJson[h.name]))]));
  const captured: Captured[] = [];
  const deploy = new FleetDeploy(componentName, {
    model, hosts, poolsJson, seedFiles,
  }, {
    transformations: [(a) => {
      captured.push({ type: a.type, name: a.name, opts: a.opts as Record<string, any> });
      return undefined;
    }],
  });
  // Let every registration reach the mock monitor.
  await new Promise<void>((r) => pulumi.all(Object.values(deploy.switches).map((s) => s.urn)).apply(() => r()));
  await new Promise((r) => setTimeout(r, 50));
  return { model, deploy, captured };
}

const recorded = (name: string) => {
  const r = resources.find((x) => x.name === name);
  if (!r) throw new Error(`no resource ${name}`);
  return { ...r, inputs: reveal(r.inputs) as Record<string, any> };
};

describe("FleetDeploy under mocks", async () => {
  const cfg = fleetConfig();
  cfg.deploy = { tool: "deploy-rs", batchSize: 1, readyTimeoutMinutes: 15 };
  const { captured, deploy } = await deployFor(cfg, "deploy");
  const opt = (name: string) => captured.find((c) => c.name === name);

  it("creates ready/install/switch/pools per host as the host needs", () => {
    const names = captured.filter((c) => c.type.startsWith("command:")).map((c) => c.name).sort();
    expect(names).toEqual([
      "alpha-pools", "alpha-ready", "alpha-switch",
      "beta-install", "beta-ready", "beta-switch",
      "gamma-pools", "gamma-ready", "gamma-seed", "gamma-switch",
    ]);
    expect(deploy.waves).toEqual([["alpha"], ["beta"], ["gamma"]]);
  });

  it("installs the stock host only, once per machine", () => {
    const install = recorded("beta-install");
    expect(install.type).toBe("command:local:Command");
    expect(install.inputs.triggers).toEqual(["id-beta"]);
    expect(install.inputs.create).toContain("nixos-anywhere --flake ./nix#beta");
    expect(opt("beta-install")?.opts.additionalSecretOutputs).toEqual(["stdout", "stderr"]);
    expect(resources.some((r) => r.name === "alpha-install" || r.name === "gamma-install")).toBe(false);
  });

  it("readiness: root on a stock image, the deploy user elsewhere; dial limit and timeout from readyTimeoutMinutes", () => {
    const beta = recorded("beta-ready").inputs;
    const alpha = recorded("alpha-ready").inputs;
    expect(beta.connection).toMatchObject({ host: "203.0.113.11", user: "root", dialErrorLimit: cmd.dialErrorLimitFor(15) });
    expect(alpha.connection.user).toBe("deploy");
    expect(alpha.connection.privateKey).toBeUndefined();
    expect(alpha.triggers).toEqual(["id-alpha"]);
    expect(alpha.create).toMatch(/^timeout 15m /);
    expect(opt("alpha-ready")?.opts.customTimeouts).toEqual({ create: "15m" });
  });

  it("switch triggers: the flake hash and the host's own inventory entry; the inventory comes on stdin", () => {
    const alpha = recorded("alpha-switch").inputs;
    const gamma = recorded("gamma-switch").inputs;
    expect(alpha.triggers[0]).toBe(deploy.flakeHash);
    expect(alpha.triggers[1]).toBe(cmd.sha256(alpha.stdin));
    expect(Object.keys(JSON.parse(alpha.stdin).hosts)).toEqual(["alpha"]);
    expect(alpha.create).not.toContain("--boot");
    expect(gamma.create).toContain("--boot ./nix#gamma");
    expect(gamma.create).toContain("--magic-rollback false");
  });

  it("pools: pushed to fireactions hosts over stdin, keyed on the pools.json hash, after the switch", () => {
    const pools = recorded("alpha-pools").inputs;
    expect(pools.create).toContain("sudo -n /run/current-system/sw/bin/runner-fleet-apply-pools");
    expect(pools.triggers).toEqual([cmd.sha256(pools.stdin)]);
    expect(JSON.parse(pools.stdin).map((p: any) => p.name)).toEqual(["large", "small"]);
    expect(pools.connection.user).toBe("deploy");
    expect(resources.some((r) => r.name === "beta-pools")).toBe(false);
  });

  const urnsOf = async (name: string) => {
    const deps = (opt(name)?.opts.dependsOn ?? []) as any[];
    const urns = await Promise.all(deps.map((d) => new Promise<string>((r) => d.urn.apply(r))));
    return urns.map((u) => u.split("::").pop()!).sort();
  };

  it("seed: existing machines only, as the deploy user, secret stdin, nothing logged", () => {
    const raw = resources.find((r) => r.name === "gamma-seed")!;
    expect(raw.type).toBe("command:remote:Command");
    expect(containsSecret(raw.inputs.stdin)).toBe(true);
    expect(JSON.stringify(raw.inputs.create)).not.toContain("hvs.");
    const seed = recorded("gamma-seed").inputs;
    expect(seed.create).toContain("sudo -n /run/current-system/sw/bin/runner-fleet-seed");
    expect(seed.connection).toMatchObject({ host: "192.0.2.10", user: "deploy" });
    expect(seed.logging).toBe("none");
    // remote.Command adds "connection" of its own.
    expect(opt("gamma-seed")?.opts.additionalSecretOutputs).toEqual(expect.arrayContaining(["stdout", "stderr"]));
    const files = JSON.parse(seed.stdin).files;
    expect(files.find((f: any) => f.path === "/etc/runner-fleet/vault/wrapped-secret-id").content).toBe("hvs.wrapped-gamma");
    // gamma runs fireactions: its pools push delivers pools.json, so a pool edit leaves the seed alone.
    expect(files.map((f: any) => f.path)).not.toContain("/etc/runner-fleet/pools.json");
    expect(files.map((f: any) => f.path)).toContain("/etc/runner-fleet/host.json");
    expect(resources.some((r) => r.name === "alpha-seed" || r.name === "beta-seed")).toBe(false);
  });

  it("seed triggers: the machine and the non-secret files' hash (readable); other changes run a no-op", () => {
    const raw = resources.find((r) => r.name === "gamma-seed")!;
    const seed = recorded("gamma-seed").inputs;
    expect(seed.triggers).toEqual(["id-gamma", cmd.seedTriggerHash(seed.stdin)]);
    expect(containsSecret(raw.inputs.triggers)).toBe(false);
    expect(seed.update).toBe("true");
  });

  it("seed runs after the host's switch, and its pools push after the seed", async () => {
    expect(await urnsOf("gamma-seed")).toEqual(["gamma-switch"]);
    expect(await urnsOf("gamma-pools")).toEqual(["gamma-seed", "gamma-switch"]);
    expect(await urnsOf("alpha-pools")).toEqual(["alpha-switch"]);
  });

  it("a cloud stock install still copies the files off the machine; its stdin is the inventory only", () => {
    const raw = resources.find((r) => r.name === "beta-install")!;
    expect(recorded("beta-install").inputs.create).toContain("tar -C /etc -cf - runner-fleet");
    expect(containsSecret(raw.inputs.stdin)).toBe(false);
  });
});

describe("existing machine with install: true, under mocks", async () => {
  const cfg = baseConfig();
  cfg.hosts = {
    delta: { provider: "existing", address: "192.0.2.20", arch: "x86_64", vcpus: 8, memoryMib: 16384, roles: ["forgejo-runner"], install: true },
  };
  const { model } = await deployFor(cfg, "deploy-delta");

  it("installs with the seed's files on a secret stdin, then seeds after the switch", () => {
    const raw = resources.find((r) => r.name === "delta-install")!;
    expect(containsSecret(raw.inputs.stdin)).toBe(true);
    const install = recorded("delta-install").inputs;
    expect(install.create).not.toContain("tar -C /etc");
    expect(install.create).toContain("base64 --decode");
    const [files, inventory] = [install.stdin.slice(0, install.stdin.indexOf("\n\n")), install.stdin.slice(install.stdin.indexOf("\n\n") + 2)];
    const seed = recorded("delta-seed").inputs.stdin;
    expect(`${files}\n\n${inventory}`).toBe(cmd.installStdin(seed, inventory));
    expect(seed).toBe(seedJsonFor("delta", model, "[]\n"));
    expect(files).toContain(Buffer.from("hvs.wrapped-delta").toString("base64"));
    expect(Object.keys(JSON.parse(inventory).hosts)).toEqual(["delta"]);
    expect(recorded("delta-ready").inputs.connection.user).toBe("root");
  });
});

describe("FleetDeploy refuses seed files that do not match the machines", () => {
  const model = modelFrom(fleetConfig());
  const hosts = model.hosts.map((h) => ({
    name: h.name, provider: h.provider, arch: h.arch, sshUser: "deploy",
    publicAddress: pulumi.output("203.0.113.50"), privateAddress: pulumi.output(undefined), identity: pulumi.output(`id-${h.name}`),
  }));
  const poolsJson = Object.fromEntries(model.hosts.map((h) => [h.name, "[]\n"]));
  const build = (name: string, seedFiles: Record<string, any>) =>
    () => new FleetDeploy(name, { model, hosts, poolsJson, seedFiles });

  it("an existing machine without seed files, and seed files for a cloud host", () => {
    expect(build("bad-1", {})).toThrow(/host gamma: no seed files/);
    expect(build("bad-2", { gamma: pulumi.output("{}"), alpha: pulumi.output("{}") })).toThrow(/host alpha: seed files for a aws host/);
  });
});

describe("wave ordering", async () => {
  // Distinct fleets so the three components' URNs never collide.
  function named(prefix: string, batchSize: number | "all") {
    const cfg = fleetConfig();
    cfg.hosts = Object.fromEntries(Object.entries(cfg.hosts).map(([k, v]) => [`${prefix}${k}`, v]));
    cfg.deploy = { tool: "colmena", batchSize: batchSize === "all" ? 3 : batchSize };
    return cfg;
  }
  const deps = async (prefix: string, batch: number | "all") => {
    // dependsOn holds resources; name them by their URN.
    const { captured } = await deployFor(named(prefix, batch), `deploy-${prefix}`);
    const out: Record<string, string[]> = {};
    for (const c of captured.filter((c) => c.name.endsWith("-switch"))) {
      const urns = await Promise.all(((c.opts.dependsOn ?? []) as any[]).map((d) => new Promise<string>((r) => d.urn.apply(r))));
      out[c.name] = urns.map((u) => u.split("::").pop()!).sort();
    }
    return out;
  };

  it("batch 1: each switch waits for the previous host's", async () => {
    expect(await deps("b1", 1)).toEqual({
      "b1alpha-switch": ["b1alpha-ready"],
      "b1beta-switch": ["b1alpha-switch", "b1beta-install", "b1beta-ready"],
      "b1gamma-switch": ["b1beta-switch", "b1gamma-ready"],
    });
  });

  it("batch 2: the second wave waits for both of the first", async () => {
    expect(await deps("b2", 2)).toEqual({
      "b2alpha-switch": ["b2alpha-ready"],
      "b2beta-switch": ["b2beta-install", "b2beta-ready"],
      "b2gamma-switch": ["b2alpha-switch", "b2beta-switch", "b2gamma-ready"],
    });
  });

  it("batch = all: one wave, all in parallel", async () => {
    expect(await deps("ba", "all")).toEqual({
      "baalpha-switch": ["baalpha-ready"],
      "babeta-switch": ["babeta-install", "babeta-ready"],
      "bagamma-switch": ["bagamma-ready"],
    });
  });
});


// ---------------------------------------------------------------------------------------------
// End to end: a pool edit touches only that host's pool push

describe("pool edit in place (real plan, twice)", () => {
  it("changes beta's pools push and nothing that deploys or belongs to another host", async () => {
    const cfg = baseConfig();
    cfg.hosts = {
      alpha: { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["large", "small"] },
      beta: { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["medium"] },
    };
    const edited = structuredClone(cfg);
    edited.pools.medium = { size: "medium", maxRunners: 4 };
    const [before, after] = [await planJson(cfg), await planJson(edited)];
    const inputsOf = (doc: typeof before) => new Map(doc.resources.map((r) => [r.urn, JSON.stringify(r.inputs)]));
    const a = inputsOf(before);
    const b = inputsOf(after);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    const changed = [...a.keys()].filter((urn) => a.get(urn) !== b.get(urn)).map((urn) => urn.split("::").slice(-2).join("::"));
    expect(changed).toContain("command:remote:Command::beta-pools");
    // Only beta's pool push among commands; nothing named for alpha; no switch, install or readiness.
    expect(changed.filter((c) => c.startsWith("command:"))).toEqual(["command:remote:Command::beta-pools"]);
    expect(changed.filter((c) => /::alpha/.test(c))).toEqual([]);
    // Whatever else moved is beta's machine (its user-data carries pools.json), nothing else.
    for (const c of changed) expect(c).toMatch(/::beta/);
  }, 120_000);
});
