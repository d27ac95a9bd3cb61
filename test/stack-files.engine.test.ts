/**
 * The committed stack files under the real Pulumi CLI (built by `npm run engine`): `stack init`,
 * `stack select` and `preview` work on them as committed. A preview stops first on the secrets
 * nobody has set, one actionable line each, and once they are set only on what this machine
 * lacks (the cloud providers' plugins), never on the files themselves.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { engineEnv, missingEngineBinaries } from "../engine/env";
import { ROOT } from "./support/fixtures";

const missing = missingEngineBinaries();
if (missing.length) console.warn(`skipped: the Pulumi engine is not built (no ${missing.join(", ")}); run npm run engine`);

/** A copy of the project as a user would clone it, so the CLI may write its stack files. */
function projectCopy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-cli-"));
  for (const f of ["Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml", "package.json", "tsconfig.json", "index.ts"]) {
    fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
  }
  for (const d of ["components", "nix"]) fs.cpSync(path.join(ROOT, d), path.join(dir, d), { recursive: true });
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  return dir;
}

describe.skipIf(missing.length > 0)("committed stack files under the real CLI", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const pulumi = (args: string[], input?: string) => {
    const r = spawnSync("pulumi", [...args, "--non-interactive"], { cwd: dir, env, input, encoding: "utf8", timeout: 240_000 });
    return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
  };

  beforeAll(() => {
    dir = projectCopy();
    const { VAULT_TOKEN: _t, VAULT_ADDR: _a, ...base } = process.env;
    env = engineEnv({ backendDir: path.join(dir, ".state"), pulumiHome: path.join(dir, ".pulumi-home"), base });
  });

  const secretsOf = { dev: { githubAppPrivateKey: "fireactions", cacheSigningKey: "cache" },
    prod: { githubAppPrivateKey: "fireactions", giteaRunnerToken: "gitea-runner", cacheSigningKey: "cache" } };
  for (const [stack, secrets] of Object.entries(secretsOf)) {
    it(`stack init and stack select take Pulumi.${stack}.yaml as committed`, () => {
      const committed = fs.readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8");
      const init = pulumi(["stack", "init", stack]);
      expect(init.code, init.out).toBe(0);
      const select = pulumi(["stack", "select", stack]);
      expect(select.code, select.out).toBe(0);
      // The CLI only adds its passphrase salt; every committed line is kept.
      const after = fs.readFileSync(path.join(dir, `Pulumi.${stack}.yaml`), "utf8");
      expect(after).toMatch(/^encryptionsalt: /m);
      expect(after.replace(/^encryptionsalt: .*\n/m, "")).toBe(committed);
    });

    it(`preview --stack ${stack} stops on each unset secret with the command that sets it, before any resource`, () => {
      const r = pulumi(["preview", "--stack", stack]);
      expect(r.code).not.toBe(0);
      for (const [key, role] of Object.entries(secrets)) {
        expect(r.out).toContain(`runner-fleet:${key}: not set; the ${role} role needs it: run pulumi config set --secret runner-fleet:${key}`);
      }
      expect(r.out).toContain(`invalid stack config (${Object.keys(secrets).length} problems)`);
      expect(r.out).not.toMatch(/decrypt|ciphertext|^\s+at /im);
      // Nothing but the stack itself: the program stopped before its first resource.
      expect(r.out).not.toContain("runner-fleet:index:Fleet");
    }, 240_000);
  }

  it("with the secrets set, preview gets past config and stops only on the missing cloud plugins", () => {
    const pem = "-----BEGIN RSA PRIVATE KEY-----\nCANARY-dev-app-key\n-----END RSA PRIVATE KEY-----\n";
    expect(pulumi(["config", "set", "--secret", "runner-fleet:githubAppPrivateKey", "--stack", "dev"], pem).code).toBe(0);
    expect(pulumi(["config", "set", "--secret", "runner-fleet:cacheSigningKey", "CANARY-cache-key", "--stack", "dev"]).code).toBe(0);
    const shown = pulumi(["config", "--stack", "dev"]);
    expect(shown.out).toMatch(/githubAppPrivateKey\s+\[secret\]/);
    expect(fs.readFileSync(path.join(dir, "Pulumi.dev.yaml"), "utf8")).not.toContain("CANARY");

    const r = pulumi(["preview", "--stack", "dev"]);
    expect(r.code).not.toBe(0);
    expect(r.out).not.toContain("invalid stack config");
    expect(r.out).not.toMatch(/decrypt|ciphertext/i);
    // The program got past its config and registered cloud resources: what stops it is the CLI
    // naming a cloud plugin and version this machine lacks (automatic downloads are off here).
    expect(r.out).toMatch(/no resource plugin 'pulumi-resource-(aws|azure-native|hcloud|digitalocean)' found in the workspace at version v\d+\.\d+\.\d+/);
    expect(r.out).not.toContain("CANARY");
  }, 240_000);
});
