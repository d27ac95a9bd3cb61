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
const { COMMAND_ENV, envScrubLine } = await import("../components/command-env");
const { buildInventory, renderInventoryJson } = await import("../components/inventory");
const { renderPoolsJson } = await import("../components/pools");
const { userDataFiles } = await import("../components/cloud-init");

// ---------------------------------------------------------------------------------------------
// Pure command builders

const switchArgs = {
  tool: "deploy-rs" as const, host: "alpha", address: "203.0.113.7", flake: "./nix", sshUser: "deploy",
  arch: "x86_64", remoteBuild: "auto" as const,
  boot: false, confirmTimeout: 30, activationTimeout: 240, switchTimeoutMinutes: 30,
};
type SwitchArgs = Parameters<typeof cmd.switchCommand>[0];
/** A pinned host key for the fakes (any well-formed line). */
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTestsOnlyHostKeyForTestsOnly0";

describe("switch command lines", () => {
  it("deploy-rs: one node per invocation, by name with pinned ssh options, magic rollback with a confirm timeout, --impure", () => {
    expect(cmd.deployToolCommand(switchArgs)).toBe(
      'deploy --skip-checks --hostname alpha --ssh-user deploy --ssh-opts "$ssh_opts" $remote_build --magic-rollback true --auto-rollback true ' +
        "--confirm-timeout 30 --activation-timeout 240 './nix#\"alpha\"' -- --impure",
    );
  });

  it("deploy-rs --boot: magic rollback off (nothing to confirm), no confirm timeout", () => {
    const line = cmd.deployToolCommand({ ...switchArgs, boot: true });
    expect(line).toBe(
      'deploy --skip-checks --hostname alpha --ssh-user deploy --ssh-opts "$ssh_opts" $remote_build --magic-rollback false --auto-rollback true ' +
        "--activation-timeout 240 --boot './nix#\"alpha\"' -- --impure",
    );
  });

  it("deploy-rs: the node name is a quoted Nix string, so a name starting with a digit parses", () => {
    expect(cmd.deployToolCommand({ ...switchArgs, host: "1runner" })).toContain(`'./nix#"1runner"'`);
  });

  it("colmena: switch or boot, this host only, build placement, impure, from the flake directory", () => {
    expect(cmd.deployToolCommand({ ...switchArgs, tool: "colmena" })).toBe("cd ./nix && colmena apply switch --on alpha $remote_build --impure");
    expect(cmd.deployToolCommand({ ...switchArgs, tool: "colmena", boot: true })).toBe("cd ./nix && colmena apply boot --on alpha $remote_build --impure");
  });

  it("wraps the tool in a timeout and keeps the inventory off the command line", () => {
    const line = cmd.switchCommand(switchArgs);
    expect(line).toContain("timeout 30m sh -c 'deploy --skip-checks");
    expect(line).toContain('cat > "$work/inventory.json"');
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
    env: { ...process.env, RF_HOST_KEY: HOST_KEY, ...env, PATH: `${path.join(dir, "bin")}:${process.env.PATH}`, OUT: dir },
  });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout, dir };
}

// The post-switch check: `nix eval` gives the built toplevel, the host's links point at it.
const SYSTEM = "/nix/store/0000000000000000000000000000000a-nixos-system-alpha";
const postSwitchFakes = {
  nix: `echo "nix $*" >> "$OUT/nix.log"; case "$1" in eval) echo "${SYSTEM} /k/bzImage /i/initrd /m";; build) echo ${SYSTEM};; esac; exit 0`,
  ssh: `echo "$*" | sed 's/.*deploy@alpha //' >> "$OUT/ssh.log"; case "$*" in *readlink*) echo "\${FAKE_HAVE:-${SYSTEM}}";; *restart-changed*) exit \${FAKE_DRAIN:-0};; esac`,
};

const BOOTED = "for l in kernel initrd kernel-modules; do readlink -f /run/booted-system/$l || echo -; done";

describe("switch command, executed with a fake deploy", () => {
  // One argument per line, so the test sees exactly what deploy-rs would get.
  const fakeDeploy = 'cp "$RUNNER_FLEET_INVENTORY" "$OUT/seen.json"; cp "$RUNNER_FLEET_INVENTORY" "$OUT/inv-path"; echo "$RUNNER_FLEET_INVENTORY" > "$OUT/inv-path"; printf "%s\\n" "$@" > "$OUT/args"; exit ${FAKE_EXIT:-0}';
  const fakeColmena = 'printf "%s\\n" "$@" > "$OUT/args"; pwd > "$OUT/pwd"; cp "$SSH_CONFIG_FILE" "$OUT/ssh_config"';
  const fakeUname = (m: string) => `[ "$1" = -m ] && echo ${m}`;
  const run = (args: Partial<SwitchArgs>, fakes: Record<string, string>, env: Record<string, string> = {}) =>
    runWithFakes(cmd.switchCommand({ ...switchArgs, ...args }), { ...postSwitchFakes, ...fakes }, '{"version":1}\n', { RF_HOST_KEY: HOST_KEY, ...env });
  const argsOf = (dir: string) => fs.readFileSync(path.join(dir, "args"), "utf8").trimEnd().split("\n");

  it("no output line over pulumi-command's 64 KiB scanner limit reaches the provider; the whole output is in the host's log (#24 item 6)", () => {
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-log-"));
    // deploy prints a 100,000-byte line on stdout and a 70,000-byte one on stderr, then fails.
    const noisy = 'printf "start\\n"; head -c 100000 /dev/zero | tr "\\0" a; printf "\\nafter\\n"; head -c 70000 /dev/zero | tr "\\0" b >&2; printf "\\n" >&2; exit ${FAKE_EXIT:-0}';
    for (const exit of ["0", "3"]) {
      const r = run({ logDir }, { deploy: noisy }, { FAKE_EXIT: exit });
      const lines = [...r.stdout.split("\n"), ...r.stderr.split("\n")];
      expect(Math.max(...lines.map((l) => Buffer.byteLength(l)))).toBeLessThan(cmd.MAX_OUTPUT_LINE + 200);
      expect(r.stdout).toContain("start\n");
      expect(r.stdout).toContain(`start\n${"a".repeat(cmd.MAX_OUTPUT_LINE)} [line of 100000 bytes cut; whole in ${logDir}/alpha-switch.out.log]\nafter\n`);
      expect(r.stderr).toContain(`${"b".repeat(cmd.MAX_OUTPUT_LINE)} [line of 70000 bytes cut; whole in ${logDir}/alpha-switch.err.log]\n`);
      expect(fs.readFileSync(path.join(logDir, "alpha-switch.out.log"), "utf8")).toContain(`start\n${"a".repeat(100000)}\nafter\n`);
      expect(fs.readFileSync(path.join(logDir, "alpha-switch.err.log"), "utf8")).toContain(`${"b".repeat(70000)}\n`);
      // The script's own result is kept: success, or the failure naming the host.
      if (exit === "0") expect(r.code).toBe(0);
      else {
        expect(r.code).toBe(1);
        expect(r.stderr).toContain("deploy of alpha failed");
      }
    }
    for (const f of ["alpha-switch.out.log", "alpha-switch.err.log"]) expect(fs.statSync(path.join(logDir, f)).mode & 0o777).toBe(0o600);
  });

  it("hands the tool the inventory from stdin through RUNNER_FLEET_INVENTORY and removes it after", () => {
    const r = run({}, { deploy: fakeDeploy });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(fs.readFileSync(path.join(r.dir, "seen.json"), "utf8")).toBe('{"version":1}\n');
    expect(fs.existsSync(fs.readFileSync(path.join(r.dir, "inv-path"), "utf8").trim())).toBe(false);
  });

  it("deploy-rs gets the host by name, the address and the pinned key in one --ssh-opts, single-spaced", () => {
    const r = run({ address: "2001:db8::7" }, { deploy: fakeDeploy });
    const args = argsOf(r.dir);
    expect(args.slice(0, 3)).toEqual(["--skip-checks", "--hostname", "alpha"]);
    const opts = args[args.indexOf("--ssh-opts") + 1];
    // deploy-rs splits on single spaces: an empty word would reach ssh.
    expect(opts.split(" ").every((w) => w.length > 0)).toBe(true);
    expect(opts).toContain("-o HostName=2001:db8::7 -o HostKeyAlias=alpha");
    expect(opts).toContain("-o StrictHostKeyChecking=yes");
    expect(opts).toMatch(/-o UserKnownHostsFile=\/\S+\/known_hosts/);
    expect(args).toContain('./nix#"alpha"');
  });

  it("remoteBuild auto: --remote-build only when the host's arch is not the deploy machine's; always/never force it", () => {
    const flags = (arch: string, remoteBuild: "auto" | "always" | "never", here: string) =>
      argsOf(run({ arch, remoteBuild }, { deploy: fakeDeploy, uname: fakeUname(here) }).dir).includes("--remote-build");
    expect(flags("aarch64", "auto", "x86_64")).toBe(true);
    expect(flags("x86_64", "auto", "x86_64")).toBe(false);
    expect(flags("aarch64", "auto", "arm64")).toBe(false);
    expect(flags("x86_64", "always", "x86_64")).toBe(true);
    expect(flags("aarch64", "never", "x86_64")).toBe(false);
  });

  it("after the switch the host must run the built system: a deploy that rolled back and exited 0 fails with both paths", () => {
    const ok = run({}, { deploy: fakeDeploy });
    expect(ok.code, ok.stderr).toBe(0);
    // One evaluation per switch gives the toplevel and the boot files (the reboot check's).
    const evals = fs.readFileSync(path.join(ok.dir, "nix.log"), "utf8").trim().split("\n");
    expect(evals).toHaveLength(1);
    expect(evals[0]).toContain(`nix eval --raw --impure ./nix#nixosConfigurations."alpha" --apply h: let c = h.config; in "\${c.system.build.toplevel} `);
    const rolledBack = run({}, { deploy: fakeDeploy }, { FAKE_HAVE: "/nix/store/0000000000000000000000000000000b-nixos-system-alpha-old" });
    expect(rolledBack.code).toBe(1);
    expect(rolledBack.stderr.trim()).toBe(
      `alpha: /run/current-system is /nix/store/0000000000000000000000000000000b-nixos-system-alpha-old, not the system it was given (${SYSTEM}): the deploy did not take (rolled back?)`,
    );
    // colmena is checked the same way.
    const colmena = run({ tool: "colmena", flake: "." }, { colmena: fakeColmena }, { FAKE_HAVE: "/nix/store/x-old" });
    expect(colmena.code).toBe(1);
    expect(colmena.stderr).toMatch(/^alpha: \/run\/current-system is \/nix\/store\/x-old, not the system it was given/);
  });

  it("then restarts the changed runner units after a drain with deploy.drainTimeoutMinutes; a timeout fails the step", () => {
    const r = run({ drainTimeoutMinutes: 25 }, { deploy: fakeDeploy });
    const calls = fs.readFileSync(path.join(r.dir, "ssh.log"), "utf8").trim().split("\n");
    expect(calls).toEqual([BOOTED, "readlink -f /run/current-system", "readlink -f /nix/var/nix/profiles/system", "sudo -n /run/current-system/sw/bin/runner-fleet-restart-changed --timeout-minutes 25"]);
    const proceed = run({ drainProceedOnTimeout: true }, { deploy: fakeDeploy });
    expect(fs.readFileSync(path.join(proceed.dir, "ssh.log"), "utf8")).toContain("--timeout-minutes 60 --proceed-on-timeout");
    const timedOut = run({}, { deploy: fakeDeploy }, { FAKE_DRAIN: "3" });
    expect(timedOut.code).toBe(1);
  });

  it("boot checks the system profile only and restarts nothing now; test checks the running system only", () => {
    const boot = run({ boot: true }, { deploy: fakeDeploy });
    expect(fs.readFileSync(path.join(boot.dir, "ssh.log"), "utf8").trim()).toBe("readlink -f /nix/var/nix/profiles/system");
    const trial = run({ trial: true, tool: "colmena", flake: "." }, { colmena: fakeColmena });
    expect(argsOf(trial.dir)).toEqual(["apply", "test", "--on", "alpha", "--no-build-on-target", "--impure"]);
    expect(fs.readFileSync(path.join(trial.dir, "ssh.log"), "utf8").trim().split("\n")).toEqual([
      "readlink -f /run/current-system", "sudo -n /run/current-system/sw/bin/runner-fleet-restart-changed --timeout-minutes 60",
    ]);
  });

  it("a new kernel, initrd or modules: says which host reboots and why, boots, drains and reboots, waits for the new system", () => {
    const rebootFakes = {
      nix: `case "$*" in *--apply*) echo "${SYSTEM} /k/bzImage /i/initrd /m-new";; *) echo ${SYSTEM};; esac`,
      ssh: [
        `echo "$*" | sed 's/.*deploy@alpha //' >> "$OUT/ssh.log"`,
        'case "$*" in',
        '  *booted-system/\$l*) printf "/k/bzImage\\n/i/initrd\\n/m-old\\n";;',
        `  *profiles/system*) echo ${SYSTEM};;`,
        '  *runner-fleet-reboot*) exit ${FAKE_REBOOT:-255};;',
        `  *"readlink -f /run/booted-system"*) n=$(cat "$OUT/n" 2>/dev/null || echo 0); echo $((n + 1)) > "$OUT/n"; [ "$n" -ge 1 ] && echo ${SYSTEM} || echo /old;;`,
        "esac",
      ].join("\n"),
      sleep: "exit 0",
    };
    const r = run({}, { deploy: fakeDeploy, ...rebootFakes });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("alpha: reboots: its kernel modules differ from /run/booted-system");
    expect(r.stdout).toContain(`alpha: rebooted into ${SYSTEM}`);
    expect(argsOf(r.dir)).toContain("--boot");
    const calls = fs.readFileSync(path.join(r.dir, "ssh.log"), "utf8").trim().split("\n");
    expect(calls).toContain("sudo -n /run/current-system/sw/bin/runner-fleet-reboot --timeout-minutes 60");
    expect(calls.some((c) => c.includes("restart-changed"))).toBe(false); // a fresh boot restarts everything anyway

    // The drain timed out: nothing reboots, the wave fails.
    const stuck = run({}, { deploy: fakeDeploy, ...rebootFakes }, { FAKE_REBOOT: "3" });
    expect(stuck.code).toBe(1);
    expect(fs.readFileSync(path.join(stuck.dir, "ssh.log"), "utf8")).not.toMatch(/readlink -f \/run\/booted-system$/m);
  });

  it("deploy-rs has no test activation: the toplevel is built, copied over the pinned ssh, and switched with `test`", () => {
    const r = run({ trial: true, boot: true }, { deploy: "echo deploy-rs must not run >&2; exit 9" });
    expect(r.code, r.stderr).toBe(0);
    const nix = fs.readFileSync(path.join(r.dir, "nix.log"), "utf8");
    expect(nix).toContain(`nix build --no-link --print-out-paths --impure ./nix#nixosConfigurations."alpha".config.system.build.toplevel`);
    expect(nix).toContain("nix copy --to ssh://deploy@alpha");
    expect(fs.readFileSync(path.join(r.dir, "ssh.log"), "utf8").split("\n")[0]).toBe(`sudo -n ${SYSTEM}/bin/switch-to-configuration test`);
  });

  it("colmena: --build-on-target or --no-build-on-target, and an ssh_config pinning the key for name and address", () => {
    const on = run({ tool: "colmena", arch: "aarch64", flake: "." }, { colmena: fakeColmena, uname: fakeUname("x86_64") });
    expect(on.stderr).toBe("");
    expect(argsOf(on.dir)).toEqual(["apply", "switch", "--on", "alpha", "--build-on-target", "--impure"]);
    const config = fs.readFileSync(path.join(on.dir, "ssh_config"), "utf8");
    expect(config).toContain("Host alpha 203.0.113.7\n  HostName 203.0.113.7\n  HostKeyAlias alpha\n");
    expect(config).toContain("StrictHostKeyChecking yes");
    const off = run({ tool: "colmena", arch: "x86_64", flake: "." }, { colmena: fakeColmena, uname: fakeUname("x86_64") });
    expect(argsOf(off.dir)).toContain("--no-build-on-target");
  });

  it("refuses to run without a well-formed pinned host key", () => {
    for (const key of ["", "ssh-ed25519 AAAA$(touch /tmp/x)", "not-a-key AAAA"]) {
      const r = run({}, { deploy: fakeDeploy }, { RF_HOST_KEY: key });
      expect(r.code, key).toBe(1);
      expect(r.stderr).toMatch(/alpha: (no pinned SSH host key|the pinned SSH host key is not one OpenSSH key line)/);
      expect(fs.existsSync(path.join(r.dir, "args"))).toBe(false);
    }
  });

  it("a failed deploy exits 1 naming the host", () => {
    const r = run({}, { deploy: fakeDeploy }, { FAKE_EXIT: "101" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("deploy of alpha failed");
  });
});

describe("first install", () => {
  const args = {
    host: "beta", address: "203.0.113.9", flake: "./nix", sshUser: "deploy", arch: "x86_64", remoteBuild: "auto" as const,
    installTimeoutMinutes: 45, readyTimeoutMinutes: 20,
  };

  it("runs nixos-anywhere under a timeout, impure, keeping host keys and the host's files, through the pinning ssh", () => {
    const line = cmd.installCommand(args);
    expect(line).toContain(
      'PATH="$work/bin:$PATH" timeout 45m nixos-anywhere --flake ./nix#beta --option pure-eval false --build-on auto --copy-host-keys --extra-files "$work/files" root@beta',
    );
    expect(line).toContain("install of beta failed");
    expect(line).not.toContain("StrictHostKeyChecking=no");
    expect(cmd.installCommand({ ...args, remoteBuild: "always" })).toContain("--build-on remote");
    expect(cmd.installCommand({ ...args, remoteBuild: "never" })).toContain("--build-on local");
    // nixos-anywhere quotes the attribute itself: the bare name, even one starting with a digit.
    expect(cmd.installCommand({ ...args, host: "1runner" })).toContain("--flake ./nix#1runner ");
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
    const restart = cmd.postSwitchLines({ ...switchArgs }).at(-1)!.replace("ssh $ssh_opts deploy@alpha ", "");
    for (const line of [cmd.seedCommand("gamma"), cmd.poolsCommand("gamma"), cmd.retireCommand("gamma", 5, false), restart]) {
      const program = /sudo -n (\S+)/.exec(line)![1];
      expect(commands).toContain(program);
    }
  });
});

describe("first install of an existing machine: files from the seed, not the machine", () => {
  const model = modelFrom(fleetConfig());
  const seed = seedJsonFor("gamma", model, "[]\n", "hvs.wrapped-test");
  const args = {
    host: "gamma", address: "192.0.2.10", flake: "./nix", sshUser: "deploy", arch: "x86_64", remoteBuild: "auto" as const,
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
    expect(line).toContain('--extra-files "$work/files" root@gamma');
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

  it("in a git work tree the flake hash is over tracked files only: untracked files and an uncommitted lock change nothing", () => {
    const repo = fs.mkdtempSync(path.join(os.tmpdir(), "rf-flake-git-"));
    const git = (...a: string[]) => {
      const r = spawnSync("git", ["-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.org", ...a], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(r.stderr);
    };
    git("init", "-q");
    const dir = path.join(repo, "nix");
    fs.mkdirSync(path.join(dir, "modules"), { recursive: true });
    fs.writeFileSync(path.join(dir, "flake.nix"), "{ }\n");
    fs.writeFileSync(path.join(dir, "modules", "a.nix"), "{ }\n");
    fs.writeFileSync(path.join(repo, "README"), "outside the flake\n");
    git("add", "-A");
    git("commit", "-qm", "init");
    const h0 = cmd.hashFlakeSources(dir);
    // What a first local `nix eval` or an editor leaves behind is not what the flake sees.
    fs.writeFileSync(path.join(dir, "flake.lock"), '{"nodes":{}}\n');
    fs.writeFileSync(path.join(dir, "notes.txt"), "scratch\n");
    fs.symlinkSync("/nix/store/x-image", path.join(dir, "result"));
    expect(cmd.hashFlakeSources(dir)).toBe(h0);
    // A committed (tracked) lock is a source.
    git("add", "nix/flake.lock");
    const h1 = cmd.hashFlakeSources(dir);
    expect(h1).not.toBe(h0);
    // An edit to a tracked file counts before it is committed (Nix copies the work tree's bytes).
    fs.writeFileSync(path.join(dir, "modules", "a.nix"), "{ x = 1; }\n");
    expect(cmd.hashFlakeSources(dir)).not.toBe(h1);
    expect(cmd.gitTrackedFiles(dir)?.sort()).toEqual(["flake.lock", "flake.nix", "modules/a.nix"]);
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
  it("the default dial limit (10) makes 11 dials with 10 waits: ~11.3 s, not the reference's ~7.5 s", () => {
    // pulumi-command stops once dials > dialErrorLimit (connection.go reachedDialingErrorLimit).
    expect(cmd.dialBackoffMs(10)).toBeGreaterThan(11_000);
    expect(cmd.dialBackoffMs(10)).toBeLessThan(11_500);
  });

  it("the dial limit spans the ready timeout, and not one error more", () => {
    for (const minutes of [1, 20, 60]) {
      const limit = cmd.dialErrorLimitFor(minutes);
      expect(cmd.dialBackoffMs(limit)).toBeGreaterThanOrEqual(minutes * 60_000);
      expect(cmd.dialBackoffMs(limit - 1)).toBeLessThan(minutes * 60_000);
    }
    // 10 delays ramp up to the cap (11.3 s), 238 more of 5 s reach 20 min: 248 waits, which is
    // limit 248 (249 dials), not 249.
    expect(cmd.dialErrorLimitFor(20)).toBe(248);
  });

  it("waits for cloud-init and systemd under a timeout that names the host", () => {
    const line = cmd.readinessCommand("beta", 20);
    expect(line).toMatch(/^timeout 20m sh -c '/);
    expect(line).toContain("cloud-init status --wait");
    expect(line).toContain("systemctl is-system-running --wait");
    expect(line).toContain("beta did not become ready within 20 minutes");
  });
});

describe("deploy settings in config (checked before any resource)", () => {
  const existing = (extra: Record<string, any>) => ({ provider: "existing", address: "192.0.2.30", arch: "x86_64", vcpus: 8, memoryMib: 16384, roles: ["forgejo-runner"], ...extra });
  const problemsOf = (cfg: Record<string, any>): string[] => {
    try {
      modelFrom(cfg);
      return [];
    } catch (err) {
      return (err as { problems?: string[] }).problems ?? [String(err)];
    }
  };
  const withHost = (host: Record<string, any>, deploy?: Record<string, any>) => {
    const cfg = baseConfig();
    cfg.hosts = { onprem: host };
    if (deploy) cfg.deploy = deploy;
    return cfg;
  };

  it("install: true without installDisk is refused by key path; with it the disk reaches the inventory", () => {
    expect(problemsOf(withHost(existing({ install: true })))).toEqual([
      "runner-fleet:hosts.onprem.installDisk: is required with install: true: nixos-anywhere partitions this disk with disko (e.g. /dev/disk/by-id/...), wiping it",
    ]);
    expect(problemsOf(withHost(existing({ install: true, installDisk: "/dev/../etc/passwd" })))[0]).toMatch(/^runner-fleet:hosts\.onprem\.installDisk: /);
    const model = modelFrom(withHost(existing({ install: true, installDisk: "/dev/disk/by-id/nvme-x" })));
    const inv = buildInventory(model, { onprem: { public: "192.0.2.30", private: null } });
    expect(inv.hosts.onprem).toMatchObject({ installDisk: "/dev/disk/by-id/nvme-x", remoteBuild: "auto" });
  });

  it("an existing machine's hostKey is pinned as `type base64`; without one the deploy warns that it trusts first use", () => {
    const pinned = modelFrom(withHost(existing({ hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMS2h8BA5KkfTs1AVBW+KzNVWOGAqW5r1NAY25uvw+QP root@onprem" })));
    expect(pinned.hosts[0]).toMatchObject({ hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMS2h8BA5KkfTs1AVBW+KzNVWOGAqW5r1NAY25uvw+QP" });
    expect(pinned.warnings.join("\n")).not.toMatch(/hostKey/);
    expect(modelFrom(withHost(existing({}))).warnings).toContain(
      "hosts.onprem.hostKey: not set; the deploy trusts the key 192.0.2.30 offers on first contact. Set it (cat /etc/ssh/ssh_host_ed25519_key.pub on the machine) to pin it",
    );
    expect(problemsOf(withHost(existing({ hostKey: "AAAA not a key" }))))
      .toEqual(["runner-fleet:hosts.onprem.hostKey: must be an SSH host public key line: ssh-ed25519 or ecdsa-sha2-nistp256/384/521, then the key"]);
    expect(problemsOf(withHost(existing({ hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedKey0" }))))
      .toEqual(["runner-fleet:hosts.onprem.hostKey: the key blob is not base64"]);
  });

  it("remoteBuild is auto by default and one of auto/always/never; colmena refuses an IPv6 address", () => {
    expect(modelFrom(withHost(existing({}))).deploy.remoteBuild).toBe("auto");
    expect(modelFrom(withHost(existing({}), { remoteBuild: "always" })).deploy.remoteBuild).toBe("always");
    expect(problemsOf(withHost(existing({}), { remoteBuild: "sometimes" }))[0]).toMatch(/^runner-fleet:deploy\.remoteBuild: /);
    expect(problemsOf(withHost(existing({ address: "2001:db8::30" }), { tool: "colmena" }))).toEqual([
      "runner-fleet:hosts.onprem.address: colmena cannot deploy to an IPv6 address (it builds ssh-ng://user@<address> without brackets); use a DNS name or deploy-rs",
    ]);
    expect(problemsOf(withHost(existing({ address: "2001:db8::30" }), { tool: "deploy-rs" }))).toEqual([]);
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
      "alpha-host-key", "alpha-pools", "alpha-ready", "alpha-retire", "alpha-switch",
      "beta-host-key", "beta-host-key-check", "beta-install", "beta-ready", "beta-retire", "beta-switch",
      "gamma-host-key", "gamma-host-key-check", "gamma-pools", "gamma-ready", "gamma-retire", "gamma-seed", "gamma-switch",
    ]);
    expect(deploy.waves).toEqual([["alpha"], ["beta"], ["gamma"]]);
  });

  it("every local command sees only the environment it needs: no Vault token outside the Vault read, no Pulumi or cloud secrets (#24 item 13)", () => {
    const locals = resources.filter((r) => r.type === "command:local:Command").map((r) => ({ name: r.name, create: (reveal(r.inputs) as Record<string, any>).create as string }));
    expect(locals.length).toBeGreaterThan(5);
    for (const { name, create } of locals) {
      const profile = /host-key-check$/.test(name) || (/host-key$/.test(name) && create.includes("RF_VAULT_ADDR")) ? COMMAND_ENV.vaultRead : COMMAND_ENV.deploy;
      expect(create.split("\n")[0], name).toBe(envScrubLine(profile));
    }
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
    // alpha switches live unless its kernel changed (then it boots: the reboot path).
    expect(alpha.create).toMatch(/if \[ "\$reboot" = yes \]; then\n.*--boot/);
    expect(alpha.create.split("\nelse\n")[1]).not.toContain("--boot");
    expect(gamma.create).not.toContain("$reboot");
    expect(gamma.create).toContain(`--boot '\\''./nix#"gamma"'\\''`);
    expect(gamma.create).toContain("--magic-rollback false");
  });

  it("host keys: from Vault for an image host, scanned once for a stock host and an existing machine without hostKey", () => {
    const alpha = recorded("alpha-host-key").inputs;
    expect(alpha.create).toContain("exec node -e");
    expect(alpha.create).toContain('"ci/data/hosts/alpha/ssh-host-key"');
    expect(alpha.create).not.toMatch(/VAULT_TOKEN=|X-Vault-Token: /);
    expect(alpha.environment).toEqual({ RF_VAULT_ADDR: "https://vault.example.org:8200" });
    expect(alpha.triggers).toEqual(["id-alpha"]);
    expect(recorded("beta-host-key").inputs.create).toContain("ssh-keyscan -T 10 -t ed25519 203.0.113.11");
    expect(recorded("gamma-host-key").inputs.create).toContain("ssh-keyscan -T 10 -t ed25519 192.0.2.10");
    // After its install the stock host's own published key must be the one it was installed with.
    const check = recorded("beta-host-key-check").inputs;
    expect(check.create).toContain('"ci/data/hosts/beta/ssh-host-key"');
    expect(check.environment.RF_EXPECT_KEY).toBe(recorded("beta-ready").inputs.connection.hostKey);
    // An existing machine trusted on first use is checked likewise, once its seed has bootstrapped it.
    expect(recorded("gamma-host-key-check").inputs.environment.RF_EXPECT_KEY).toBe(recorded("gamma-ready").inputs.connection.hostKey);
    expect(resources.some((r) => r.name === "alpha-host-key-check")).toBe(false);
  });

  it("the first-use check runs after the seed on an existing machine, and the pool push waits for it", async () => {
    const urns = async (name: string) => Promise.all(((opt(name)?.opts.dependsOn ?? []) as any[]).map((d) => new Promise<string>((r) => d.urn.apply(r))));
    expect((await urns("gamma-host-key-check")).map((u) => u.split("::").pop())).toEqual(["gamma-seed"]);
    expect((await urns("gamma-pools")).map((u) => u.split("::").pop())).toContain("gamma-host-key-check");
  });

  it("every SSH connection pins the host's key: remote commands' hostKey, local commands' RF_HOST_KEY", () => {
    for (const host of ["alpha", "beta", "gamma"]) {
      const key = recorded(`${host}-ready`).inputs.connection.hostKey;
      expect(key, host).toMatch(/\S/);
      expect(recorded(`${host}-switch`).inputs.environment, host).toEqual({ RF_HOST_KEY: key });
    }
    expect(recorded("beta-install").inputs.environment).toEqual({ RF_HOST_KEY: recorded("beta-ready").inputs.connection.hostKey });
    for (const name of ["alpha-pools", "gamma-pools", "gamma-seed"]) {
      expect(recorded(name).inputs.connection.hostKey, name).toBe(recorded(`${name.split("-")[0]}-ready`).inputs.connection.hostKey);
    }
  });

  it("no command gets its previous output in the environment (a deploy log can exceed exec's limit, and outputs may be secret)", () => {
    const commands = resources.filter((r) => r.type.startsWith("command:") && /^(alpha|beta|gamma)-/.test(r.name));
    expect(commands.length).toBe(18);
    for (const r of commands) expect((reveal(r.inputs) as Record<string, unknown>).addPreviousOutputInEnv, r.name).toBe(false);
  });

  it("retire: nothing on create; on delete (removal, destroy, the old machine of a replacement) it drains the host first", () => {
    const retire = recorded("alpha-retire").inputs;
    expect(retire.create).toBe("true");
    expect(retire.delete).toBe(cmd.retireCommand("alpha", 60, false));
    expect(retire.delete).toBe("timeout 61m sudo -n /run/current-system/sw/bin/runner-fleet-retire --timeout-minutes 60 || { echo 'alpha: draining before removal failed; the machine was not removed' >&2; exit 1; }");
    expect(retire.triggers).toEqual(["id-alpha"]);
    expect(retire.connection).toMatchObject({ host: "203.0.113.10", user: "deploy" });
    expect(opt("alpha-retire")?.opts.customTimeouts).toEqual({ delete: "62m" });
  });

  it("the switch waits for the drain too: its timeout covers switch and drain", () => {
    expect(opt("alpha-switch")?.opts.customTimeouts).toEqual({ create: "92m", update: "92m" });
    const create = recorded("alpha-switch").inputs.create as string;
    expect(create).toContain("runner-fleet-restart-changed --timeout-minutes 60");
    expect(recorded("gamma-switch").inputs.create).not.toContain("runner-fleet-restart-changed"); // boot: nothing restarts now
  });

  it("pools: pushed to fireactions hosts over stdin, replaced only with the machine, after the switch", () => {
    const pools = recorded("alpha-pools").inputs;
    expect(pools.create).toContain("sudo -n /run/current-system/sw/bin/runner-fleet-apply-pools");
    // A pool edit changes stdin alone: an update, which runs create again (#24 item 17).
    expect(pools.triggers).toEqual(["id-alpha"]);
    expect(pools.update).toBeUndefined();
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
    expect(await urnsOf("gamma-pools")).toEqual(["gamma-host-key-check", "gamma-seed", "gamma-switch"]);
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
    delta: { provider: "existing", address: "192.0.2.20", arch: "x86_64", vcpus: 8, memoryMib: 16384, roles: ["forgejo-runner"], install: true, installDisk: "/dev/disk/by-id/nvme-test" },
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
      "b1gamma-switch": ["b1beta-host-key-check", "b1beta-switch", "b1gamma-ready"],
    });
  });

  it("batch 2: the second wave waits for both of the first", async () => {
    expect(await deps("b2", 2)).toEqual({
      "b2alpha-switch": ["b2alpha-ready"],
      "b2beta-switch": ["b2beta-install", "b2beta-ready"],
      "b2gamma-switch": ["b2alpha-switch", "b2beta-host-key-check", "b2beta-switch", "b2gamma-ready"],
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
