// nix/ wiring of the drain (#19): pool edits reload fireactions instead of restarting it, a
// switch restarts no runner unit (restartIfChanged = false) and runner-fleet-restart-changed
// restarts the stale ones afterwards (fireactions after a drain), forgejo/gitea runners stop
// gracefully with their own shutdown_timeout. Evaluated with the module stand-ins of
// test/support (nixpkgs cannot be reached here), and the generated scripts run under bash.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(__dirname, "..");
const nixDir = join(root, "nix");
const modules = join(root, "test", "support", "nix-modules.nix");
const example = join(nixDir, "inventory.example.json");
let scratch = "";
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "drain-nix-"));
});
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function evalJson(expr: string): any {
  const out = execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], {
    encoding: "utf8", env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" },
  });
  return JSON.parse(out);
}
const call = (file: string, host: string, inventory = example) =>
  `(let t = import ${modules}; inventory = t.readInventory ${inventory}; in t.call { file = ${join(nixDir, "modules", file)}; inherit inventory; hostName = "${host}"; })`;
const program = (name: string) =>
  evalJson(`(builtins.head (builtins.filter (p: p.name == "${name}") ${call("bootstrap.nix", "aws-metal-1")}.environment.systemPackages)).text`) as string;
/** The value under a mkIf/mkMerge at `path` (first true branch). */
const at = (file: string, host: string, path: string[], inventory = example) =>
  evalJson(`(let t = import ${modules}; in map (d: d.value) (t.defsAt ${JSON.stringify(path).replace(/,/g, " ")} ${call(file, host, inventory)}))`) as any[];

describe("pool edits reload fireactions", () => {
  it("runner-fleet-apply-pools reloads (reload-or-restart), never restarts, a running fireactions", () => {
    const t = program("runner-fleet-apply-pools");
    expect(t).toContain("systemctl reload-or-restart fireactions.service");
    expect(t).not.toMatch(/systemctl restart fireactions/);
  });

  it("the pools path unit reloads too", () => {
    const [svc] = at("bootstrap.nix", "aws-metal-1", ["systemd", "services", "runner-fleet-pools"]);
    expect(svc.serviceConfig.ExecStart).toMatch(/\/bin\/systemctl reload-or-restart fireactions\.service$/);
  });

  it("fireactions' ExecReload renders with the start's flags, then runner-fleet-drain --reload", () => {
    const [unit] = at("roles/fireactions.nix", "aws-metal-1", ["systemd", "services", "fireactions"]);
    expect(unit.restartIfChanged).toBe(false);
    const [preStart] = at("roles/fireactions.nix", "aws-metal-1", ["services", "fireactions", "preStart"]);
    expect(preStart).toMatch(/render-fireactions-config\S* --pools \/etc\/runner-fleet\/pools\.json .* --kernel \S+vmlinux --api-password-file \/run\/fireactions-api\/password$/);
    expect(unit.serviceConfig.ExecReload).toBe(`/nix/store/00000000000000000000000000000000-runner-fleet-drain.nix/bin/runner-fleet-drain.nix --config /run/fireactions/config.yaml --reload -- ${preStart}`);
    expect(unit.serviceConfig.ExecStartPre.join("\n")).toMatch(/readlink -f \/etc\/systemd\/system\/fireactions\.service > \/run\/runner-fleet\/units\/fireactions/);
  });
});

describe("fireactions' API asks for basic auth (#24 item 12)", () => {
  const script = join(nixDir, "pkgs", "runner-fleet-api-password.sh");

  it("a oneshot writes the per-boot password, and a switch never restarts it (that would restart fireactions)", () => {
    const [unit] = at("fireactions-api-auth.nix", "aws-metal-1", ["systemd", "services", "runner-fleet-api-password"]);
    expect(unit.restartIfChanged).toBe(false);
    expect(unit.serviceConfig).toEqual({
      Type: "oneshot", RemainAfterExit: true,
      ExecStart: "/nix/store/00000000000000000000000000000000-runner-fleet-api-password.nix/bin/runner-fleet-api-password.nix /run/fireactions-api/password",
    });
    expect(unit.requires ?? []).toEqual([]); // nothing it needs can fail
    // Not on hosts without the role.
    expect(at("fireactions-api-auth.nix", "onprem-1", ["systemd", "services", "runner-fleet-api-password"])).toEqual([]);
    expect(readFileSync(join(nixDir, "modules", "roles", "fireactions.nix"), "utf8")).toMatch(/imports = \[ \.\.\/scaler\.nix \.\.\/fireactions-api-auth\.nix \];/);
  });

  it("fireactions and the scaler order after it and Require= it; the renderer gets the file", () => {
    const [fa] = at("roles/fireactions.nix", "aws-metal-1", ["systemd", "services", "fireactions"]);
    expect(fa.requires).toEqual(["runner-fleet-api-password.service"]);
    expect(fa.after).toEqual(["runner-fleet-api-password.service"]);
    const [preStart] = at("roles/fireactions.nix", "aws-metal-1", ["services", "fireactions", "preStart"]);
    expect(preStart).toContain("--api-password-file /run/fireactions-api/password");
    expect(fa.serviceConfig.ExecReload).toContain("--api-password-file /run/fireactions-api/password");
  });

  it("runner-fleet-api-password.sh: 0600 in a 0700 directory, kept while it exists, new when gone", () => {
    const file = join(scratch, "pw", "sub", "password");
    const run = () => spawnSync("bash", ["-euo", "pipefail", script, file], { encoding: "utf8" });
    const first = run();
    expect([first.status, first.stderr]).toEqual([0, ""]);
    const pw = readFileSync(file, "utf8");
    expect(pw).toMatch(/^[A-Za-z0-9_-]{43}\n$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(scratch, "pw", "sub")).mode & 0o777).toBe(0o700);
    expect(run().status).toBe(0);
    expect(readFileSync(file, "utf8")).toBe(pw);
    writeFileSync(file, "");
    expect(run().status).toBe(0);
    expect(readFileSync(file, "utf8")).not.toBe(pw); // an empty file is replaced, never kept
    expect(readdirSync(join(scratch, "pw", "sub"))).toEqual(["password"]);
  });
});

describe("forgejo/gitea runners stop gracefully", () => {
  it("shutdown_timeout is deploy.drainTimeoutMinutes, systemd waits longer, a switch does not restart it", () => {
    const inv = join(scratch, "inv.json");
    const doc = JSON.parse(readFileSync(example, "utf8"));
    doc.drain = { timeoutMinutes: 45, proceedOnTimeout: false };
    writeFileSync(inv, JSON.stringify(doc));
    const runner = Object.assign({}, ...at("roles/forgejo-runner.nix", "onprem-1", ["services", "gitea-actions-runner", "instances"], inv));
    expect(runner.forgejo.settings.runner).toEqual({ capacity: 4, shutdown_timeout: "45m" });
    const unit = Object.assign({}, ...at("roles/forgejo-runner.nix", "onprem-1", ["systemd", "services", "gitea-runner-forgejo"], inv));
    expect(unit.restartIfChanged).toBe(false);
    expect(unit.serviceConfig.TimeoutStopSec).toBe("47min");
    // Without the key (an older inventory): 60 minutes.
    const dflt = Object.assign({}, ...at("roles/forgejo-runner.nix", "onprem-1", ["services", "gitea-actions-runner", "instances"]));
    expect(dflt.forgejo.settings.runner.shutdown_timeout).toBe("60m");
  });
});

describe("runner-fleet-restart-changed", () => {
  // Run the script as generated, with fake systemctl/readlink targets under a scratch root.
  function run(state: { active: string[]; unitFiles: Record<string, string>; started: Record<string, string> }, drainRc = 0) {
    const dir = mkdtempSync(join(scratch, "rc-"));
    const bin = join(dir, "bin");
    mkdirSync(bin);
    const log = join(dir, "calls.log");
    writeFileSync(join(bin, "systemctl"), `#!/bin/bash\necho "systemctl $*" >> ${log}\nif [ "$1" = is-active ]; then case " ${state.active.join(" ")} " in *" \${3%.service} "*) exit 0;; *) exit 3;; esac; fi\nexit 0\n`);
    writeFileSync(join(bin, "runner-fleet-drain"), `#!/bin/bash\necho "runner-fleet-drain $*" >> ${log}\nexit ${drainRc}\n`);
    for (const f of ["systemctl", "runner-fleet-drain"]) chmodSync(join(bin, f), 0o755);
    const etc = join(dir, "etc", "systemd", "system");
    const units = join(dir, "run", "units");
    mkdirSync(etc, { recursive: true });
    mkdirSync(units, { recursive: true });
    for (const [u, target] of Object.entries(state.unitFiles)) {
      writeFileSync(join(dir, target), "");
      symlinkSync(join(dir, target), join(etc, `${u}.service`));
    }
    for (const [u, target] of Object.entries(state.started)) writeFileSync(join(units, u), `${join(dir, target)}\n`);
    const text = program("runner-fleet-restart-changed").replaceAll("/etc/systemd/system/", `${etc}/`).replaceAll("/run/runner-fleet/units", units);
    const r = spawnSync("bash", ["-euo", "pipefail", "-c", text, "restart-changed", "--timeout-minutes", "7"], {
      encoding: "utf8", env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    });
    let calls = "";
    try { calls = readFileSync(log, "utf8"); } catch { /* none */ }
    return { code: r.status, out: r.stdout, calls: calls.split("\n").filter((l) => l && !l.includes("is-active")) };
  }

  it("restarts nothing when every running unit started from its current file", () => {
    const r = run({ active: ["fireactions"], unitFiles: { fireactions: "u1" }, started: { fireactions: "u1" } });
    expect(r.code).toBe(0);
    expect(r.calls).toEqual([]);
  });

  it("drains, then restarts a changed fireactions; restarts a changed forgejo runner directly", () => {
    const r = run({ active: ["fireactions", "gitea-runner-forgejo"], unitFiles: { fireactions: "u2", "gitea-runner-forgejo": "g2" }, started: { fireactions: "u1", "gitea-runner-forgejo": "g1" } });
    expect(r.code).toBe(0);
    expect(r.calls).toEqual([
      "runner-fleet-drain --timeout-minutes 7 -- systemctl restart fireactions.service",
      "systemctl restart gitea-runner-forgejo.service",
    ]);
  });

  it("a failed drain fails the command and restarts nothing else of fireactions", () => {
    const r = run({ active: ["fireactions"], unitFiles: { fireactions: "u2" }, started: { fireactions: "u1" } }, 3);
    expect(r.code).toBe(3);
    expect(r.calls).toEqual(["runner-fleet-drain --timeout-minutes 7 -- systemctl restart fireactions.service"]);
  });

  it("leaves stopped units alone (a start will use the new file)", () => {
    const r = run({ active: [], unitFiles: { fireactions: "u2" }, started: { fireactions: "u1" } });
    expect(r.calls).toEqual([]);
  });
});

describe("runner units want runner-fleet-secrets, so its restart does not stop them", () => {
  // systemd passes a restart (and a stop) of a unit on to the units that Require it, not to
  // those that only Want it (docs/upstream.md): a re-seed restarts runner-fleet-secrets.
  // The consumers the module itself names for the host's roles, fed back as the option's value
  // (the module stand-ins evaluate one file, not the option merge).
  const units = (host: string) => {
    const consumers = at("secrets.nix", host, ["runnerFleet", "secrets", "consumers"]).flat();
    const file = join(nixDir, "modules", "secrets.nix");
    return Object.assign({}, ...evalJson(`(let t = import ${modules}; inventory = t.readInventory ${example}; in map (d: d.value)
      (t.defsAt [ "systemd" "services" ] (t.call { file = ${file}; inherit inventory; hostName = "${host}"; consumers = ${JSON.stringify(consumers).replace(/,/g, " ")}; })))`));
  };

  it("fireactions and the forgejo runner: Wants= (and After=), never Requires=", () => {
    for (const [host, unit] of [["aws-metal-1", "fireactions"], ["onprem-1", "gitea-runner-forgejo"]]) {
      const u = units(host)[unit];
      expect(u, `${host}: ${unit}`).toBeDefined();
      expect(u.wants).toEqual(["runner-fleet-secrets.service"]);
      expect(u.after).toEqual(["runner-fleet-secrets.service"]);
      expect(u).not.toHaveProperty("requires");
      expect(u).not.toHaveProperty("bindsTo");
      expect(u).not.toHaveProperty("partOf");
    }
  });

  it("harmonia, which runs no jobs, keeps Requires= (a secrets restart brings it the new cache key)", () => {
    const u = units("cache-1").harmonia;
    expect(u.requires).toEqual(["runner-fleet-secrets.service"]);
    expect(u).not.toHaveProperty("wants");
  });
});

describe("the scaler's lock", () => {
  it("exists from boot (tmpfiles), root-owned and world-readable: the scaler, a DynamicUser, opens it read-only", () => {
    const rules = at("scaler.nix", "aws-metal-1", ["systemd", "tmpfiles", "rules"]).flat();
    expect(rules).toContain("f /run/runner-fleet/scale.lock 0644 root root -");
  });
});
