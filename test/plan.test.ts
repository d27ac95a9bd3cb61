/**
 * `npm run plan` end to end: the real command on the committed stacks and on broken configs.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { baseConfig, runPlan, writeStackFile, type PlanDoc, type PlanResult } from "./support/fixtures";

describe("plan --stack dev (human output)", () => {
  let result: PlanResult;
  beforeAll(async () => {
    result = await runPlan(["--stack", "dev"]);
  });

  it("exits 0 with a host table, resource counts and warnings", () => {
    expect(result.code, result.stderr).toBe(0);
    const out = result.stdout;
    expect(out).toMatch(/^HOST\s+PROVIDER\s+TYPE\s+ARCH\s+KVM\s+ROLES\s+POOLS\s+RUNNERS\s+vCPU used\/avail\s+MiB used\/avail$/m);
    // One row per host with its provider, type, arch and KVM verdict.
    expect(out).toMatch(/^aws-nested-1\s+aws\s+c8i\.xlarge\s+x86_64\s+yes\s+fireactions\s+small\s+2\s+2\/3\s+2048\/6144$/m);
    expect(out).toMatch(/^hz-cache-1\s+hetzner\s+cx22\s+x86_64\s+no\s+cache\s+-\s+0\b/m);
    expect(out).toMatch(/^lab-1\s+existing\s+/m);
    // dev deploys its five hosts in one wave (batchSize 5).
    expect(out).toMatch(/^deploy: deploy-rs, 1 wave of up to 5/m);
    expect(out).toMatch(/^ {2}1\. aws-nested-1, az-1, do-forgejo-1, hz-cache-1, lab-1$/m);
    expect(out).toMatch(/^\d+ resources:$/m);
    expect(out).toMatch(/^runner-fleet:index:Fleet\s+1$/m);
    expect(out).toMatch(/^warnings/m);
  });
});

describe("plan --stack prod --json", () => {
  let doc: PlanDoc;
  let raw: string;
  let stderr: string;
  beforeAll(async () => {
    const result = await runPlan(["--stack", "prod", "--json"]);
    expect(result.code, result.stderr).toBe(0);
    raw = result.stdout;
    stderr = result.stderr;
    doc = JSON.parse(raw);
  });

  it("lists every resource with urn, type, name and inputs", () => {
    expect(doc.resources.length).toBeGreaterThan(5);
    for (const r of doc.resources) {
      expect(Object.keys(r).sort()).toEqual(["inputs", "name", "type", "urn"]);
      expect(r.urn).toMatch(/^urn:pulumi:prod::runner-fleet::/);
      expect(r.urn.endsWith(`::${r.name}`)).toBe(true);
    }
    expect(new Set(doc.resources.map((r) => r.urn)).size).toBe(doc.resources.length);
  });

  it("exports the inventory and shows secret outputs only as [secret]", () => {
    const inventory = JSON.parse(doc.outputs.inventory);
    expect(Object.keys(inventory.hosts)).toContain("onprem-1");
    expect(doc.outputs.userData).toBe("[secret]");
    expect(doc.outputs.deployWaves).toEqual([["aws-metal-arm-1", "aws-metal-x86-1"], ["aws-nested-1", "az-1"], ["cache-1", "do-gitea-1"], ["forgejo-1", "onprem-1"]]);
  });

  it("names each secret the stack file does not set, and uses a marked placeholder for it", () => {
    for (const key of ["githubAppPrivateKey", "giteaRunnerToken", "cacheSigningKey"]) {
      expect(stderr).toContain(`note: runner-fleet:${key} is not set in Pulumi.prod.yaml; this offline plan uses a marked placeholder. Before pulumi preview or up: pulumi config set --secret runner-fleet:${key}\n`);
    }
    // Placeholders are secrets like real values: the plan shows none of them.
    expect(raw).not.toContain("[placeholder for");
  });
});

describe("plan --out", () => {
  it("writes user-data, pools.json per host and inventory.json", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-out-"));
    const result = await runPlan(["--stack", "prod", "--out", dir]);
    expect(result.code, result.stderr).toBe(0);
    const inventory = JSON.parse(fs.readFileSync(path.join(dir, "inventory.json"), "utf8"));
    const hosts = Object.keys(inventory.hosts);
    expect(hosts.length).toBe(8);
    for (const host of hosts) {
      const userData = fs.readFileSync(path.join(dir, "hosts", host, "user-data.yaml"), "utf8");
      expect(userData.startsWith("#cloud-config\n")).toBe(true);
      const pools = JSON.parse(fs.readFileSync(path.join(dir, "hosts", host, "pools.json"), "utf8"));
      expect(Array.isArray(pools)).toBe(true);
      expect(pools.length > 0).toBe(inventory.hosts[host].roles.includes("fireactions"));
    }
  });
});

describe("plan with bad config", () => {
  it("exits 1 listing every problem by key path, without a stack trace", async () => {
    const cfg = baseConfig();
    cfg.hosts.metal.pools = ["gigantic"];
    cfg.hosts.hz = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["fireactions"], pools: ["small"] };
    cfg.vault.mount = "/bad//";
    const result = await runPlan(["--config", writeStackFile(cfg)]);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    const lines = result.stderr.trim().split("\n");
    expect(lines[0]).toMatch(/^invalid stack config \(\d+ problems?\):$/);
    for (const line of lines.slice(1)) expect(line).toMatch(/^runner-fleet:[\w.[\]-]+: \S/);
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });

  it("reports schema problems the same way", async () => {
    const cfg = baseConfig();
    cfg.hosts.metal.provider = "gcp";
    cfg.typo = true;
    const result = await runPlan(["--config", writeStackFile(cfg)]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("runner-fleet:hosts.metal.provider: must be one of aws, azure, hetzner, digitalocean, existing");
    expect(result.stderr).toContain("runner-fleet:typo: unknown key");
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });

  it("refuses VAULT_NAMESPACE in one line, listed with the config's own problems (#24 item 4)", async () => {
    const cfg = baseConfig();
    cfg.vault.mount = "/bad//";
    const result = await runPlan(["--config", writeStackFile(cfg)], { ...process.env, VAULT_NAMESPACE: "team-a" });
    expect(result.code).toBe(1);
    const lines = result.stderr.trim().split("\n");
    expect(lines[0]).toMatch(/^invalid stack config \(2 problems\):$/);
    expect(lines[1]).toMatch(/^VAULT_NAMESPACE: Vault namespaces are not supported \(hosts log in at the root namespace\)/);
    expect(lines[2]).toMatch(/^runner-fleet:vault\.mount: /);
    // Alone, it is still refused; unset, the same stack plans.
    const good = writeStackFile(baseConfig());
    const alone = await runPlan(["--config", good], { ...process.env, VAULT_NAMESPACE: "team-a" });
    expect(alone.code).toBe(1);
    expect(alone.stderr.trim().split("\n")).toEqual([expect.stringMatching(/problem\):$/), expect.stringMatching(/^VAULT_NAMESPACE: /)]);
    const { VAULT_NAMESPACE: _, ...without } = process.env;
    expect((await runPlan(["--config", good], without)).code).toBe(0);
  });

  it("rejects a missing stack and bad arguments with usage", async () => {
    const missing = await runPlan(["--stack", "nosuch"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/Pulumi\.nosuch\.yaml: no such stack file/);
    const both = await runPlan(["--stack", "dev", "--config", "x.yaml"]);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/usage: npm run plan/);
  });
});
