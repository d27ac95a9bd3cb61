// The gitlab-runner role: config checks, its Vault path, policy and rendered token file, and
// nix/modules/roles/gitlab-runner.nix evaluated with nix-instantiate as the other roles are.
// No gitlab-runner binary is available here (Debian has none; the Go module is not fetched),
// so its settings are checked against the cited nixpkgs module and gitlab-runner source.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildInventory } from "../components/inventory";
import { policyFor, secretFilesFor } from "../components/vault-paths";
import { baseConfig, configProblems, existingHost, modelFrom, ROOT } from "./support/fixtures";

let scratch = "";
beforeAll(() => { scratch = fs.mkdtempSync(path.join(os.tmpdir(), "gitlab-runner-")); });
afterAll(() => { if (scratch) fs.rmSync(scratch, { recursive: true, force: true }); });

function gitlabConfig(): Record<string, any> {
  const cfg = baseConfig();
  cfg.gitlab = { url: "https://gitlab.example.org" };
  cfg.hosts.gl = existingHost("192.0.2.30", ["gitlab-runner"]);
  return cfg;
}

const problemsOf = configProblems;

describe("gitlab-runner config", () => {
  it("needs gitlab.url and the gitlabRunnerToken secret, each by key path", () => {
    const cfg = gitlabConfig();
    delete cfg.gitlab;
    const problems = problemsOf(cfg, ["githubAppPrivateKey"]);
    expect(problems).toContain("runner-fleet:gitlab: is required by the gitlab-runner role (url)");
    expect(problems.join("\n")).toMatch(/^runner-fleet:gitlabRunnerToken: not set; the gitlab-runner role needs it: run pulumi config set --secret runner-fleet:gitlabRunnerToken/m);
    // Kept only in Vault: listed as external, nothing else is asked.
    const external = gitlabConfig();
    external.vault.externalSecrets = ["gitlabRunnerToken"];
    expect(problemsOf(external, ["githubAppPrivateKey"])).toEqual([]);
  });

  it("refuses an http or credential-carrying gitlab.url", () => {
    const cfg = gitlabConfig();
    cfg.gitlab.url = "http://gitlab.example.org";
    expect(problemsOf(cfg)).toEqual([expect.stringMatching(/^runner-fleet:gitlab\.url: must use https/)]);
    cfg.gitlab.url = "https://u:p@gitlab.example.org";
    expect(problemsOf(cfg)).toEqual([expect.stringMatching(/^runner-fleet:gitlab\.url: must not carry credentials/)]);
  });

  it("reads its token from <mount>/hosts/<host>/gitlab-runner into a CI_SERVER_TOKEN= file, and its policy reads exactly that", () => {
    const model = modelFrom(gitlabConfig());
    const host = model.hosts.find((h) => h.name === "gl")!;
    expect(secretFilesFor(host, model)).toEqual([
      { file: "/run/secrets/gitlab-runner-token", path: "ci/data/hosts/gl/gitlab-runner", field: "token", format: "env:CI_SERVER_TOKEN" },
    ]);
    const policy = policyFor(host, model);
    expect(policy).toContain('path "ci/data/hosts/gl/gitlab-runner" {');
    expect(policy).toContain('path "ci/metadata/hosts/gl/gitlab-runner" {');
    expect(policy).not.toMatch(/hosts\/metal/);
    const inv = buildInventory(model, { gl: { public: "192.0.2.30", private: null }, metal: { public: "203.0.113.1", private: null } });
    expect(inv.gitlab).toEqual({ url: "https://gitlab.example.org" });
  });
});

// ---------------------------------------------------------------------------------------------
// nix/

function nixEval(expr: string): any {
  const out = execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], {
    encoding: "utf8", env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" },
  });
  return JSON.parse(out);
}

function inventoryFile(withGitlab = true, drainMinutes = 45): string {
  const model = modelFrom(gitlabConfig());
  const inv: any = buildInventory(model, { gl: { public: "192.0.2.30", private: null }, metal: { public: "203.0.113.1", private: null } });
  inv.drain.timeoutMinutes = drainMinutes;
  if (!withGitlab) delete inv.gitlab;
  const file = path.join(scratch, `inventory-${withGitlab}-${drainMinutes}.json`);
  fs.writeFileSync(file, JSON.stringify(inv));
  return file;
}

const modules = path.join(ROOT, "test/support/nix-modules.nix");
function defs(file: string, hostName: string, at: string[], inventory = inventoryFile()): Array<{ priority: number; value: any }> {
  return nixEval(`
    let t = import ${modules}; inventory = t.readInventory ${inventory};
    in t.defsAt [ ${at.map((p) => JSON.stringify(p)).join(" ")} ] (t.call { file = ${path.join(ROOT, "nix/modules", file)}; inherit inventory; hostName = "${hostName}"; })`);
}

describe("nix/modules/roles/gitlab-runner.nix", () => {
  it("runs a shell executor that registers with the token file and gitlab.url", () => {
    const [{ value: runner }] = defs("roles/gitlab-runner.nix", "gl", ["services", "gitlab-runner"]);
    expect(runner.enable).toBe(true);
    expect(runner.settings).toEqual({ concurrent: 4 });
    expect(runner.services.nix).toEqual({
      executor: "shell",
      description: "gl",
      // A quoted absolute path: never copied into the store (the upstream module warns on one).
      authenticationTokenConfigFile: "/run/secrets/gitlab-runner-token",
      registrationFlags: ["--url https://gitlab.example.org"],
    });
    // The job's shell can build with the host's Nix.
    expect(runner.extraPackages.map((p: string) => p.replace(/^\/nix\/store\/[0-9a-z]{32}-/, ""))).toEqual(["bash", "coreutils", "curl", "gawk", "git", "gnused", "nix"]);
  });

  it("stops gracefully: SIGQUIT and deploy.drainTimeoutMinutes before systemd kills it", () => {
    const [{ value: runner }] = defs("roles/gitlab-runner.nix", "gl", ["services", "gitlab-runner"], inventoryFile(true, 45));
    expect(runner.gracefulTermination).toBe(true);
    expect(runner.gracefulTimeout).toBe("45min");
    const [{ value: unit }] = defs("roles/gitlab-runner.nix", "gl", ["systemd", "services", "gitlab-runner"]);
    expect(unit.restartIfChanged).toBe(false);
    expect(unit.reloadIfChanged).toEqual({ _type: "override", priority: 50, content: false });
    expect(unit.serviceConfig.ExecStartPre.join("\n")).toContain("/etc/systemd/system/gitlab-runner.service");
  });

  it("is off on other hosts, and warns without gitlab.url", () => {
    expect(defs("roles/gitlab-runner.nix", "metal", ["services", "gitlab-runner"])).toEqual([]);
    const [{ value: warnings }] = defs("roles/gitlab-runner.nix", "gl", ["warnings"], inventoryFile(false));
    expect(warnings).toEqual(["runner-fleet: inventory has no gitlab.url; gl's runner cannot register"]);
  });

  it("starts after its token is rendered, and restart-changed and retire treat it as a runner", () => {
    const consumers = defs("secrets.nix", "gl", ["runnerFleet", "secrets", "consumers"]);
    expect(consumers.flatMap((d) => d.value)).toEqual(["gitlab-runner"]);
    const bootstrap = fs.readFileSync(path.join(ROOT, "nix/modules/bootstrap.nix"), "utf8");
    expect(bootstrap).toMatch(/runnerUnits = \[[^\]]*"gitlab-runner"[^\]]*\]/);
  });
});
