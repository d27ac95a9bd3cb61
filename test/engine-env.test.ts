/**
 * engine/env.ts: the environment the real-engine suites and `npm run e2e` run the CLI in.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { engineBinDir, engineEnv, missingEngineBinaries } from "../engine/env";

function fakeEngine(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-engine-"));
  fs.mkdirSync(path.join(dir, "bin"));
  const plugin = path.join(dir, "pulumi-home", "plugins", "resource-vault-v7.8.0");
  fs.mkdirSync(plugin, { recursive: true });
  fs.writeFileSync(path.join(dir, "bin", "pulumi-resource-vault"), "#!/bin/sh\n", { mode: 0o755 });
  fs.symlinkSync("../../../bin/pulumi-resource-vault", path.join(plugin, "pulumi-resource-vault"));
  return dir;
}

describe("engineEnv", () => {
  it("puts the engine first on PATH, turns off downloads and ambient plugins, and uses a file backend", () => {
    const dir = fakeEngine();
    const base = { PATH: "/usr/bin:/bin", RUNNER_FLEET_ENGINE_DIR: dir, KEEP: "me" };
    const env = engineEnv({ base, backendDir: path.join(dir, "state"), passphrase: "pw" });
    expect(engineBinDir(base)).toBe(path.join(dir, "bin"));
    expect(env.PATH).toBe(`${path.join(dir, "bin")}:/usr/bin:/bin`);
    expect(env).toMatchObject({
      KEEP: "me",
      PULUMI_HOME: path.join(dir, "pulumi-home"),
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_IGNORE_AMBIENT_PLUGINS: "true",
      PULUMI_BACKEND_URL: `file://${path.join(dir, "state")}`,
      PULUMI_CONFIG_PASSPHRASE: "pw",
    });
    expect(fs.statSync(path.join(dir, "state")).isDirectory()).toBe(true);
  });

  it("gives another PULUMI_HOME the engine's plugins as real directories the CLI will list", () => {
    const dir = fakeEngine();
    const home = path.join(dir, "other-home");
    const base = { PATH: "", RUNNER_FLEET_ENGINE_DIR: dir };
    engineEnv({ base, pulumiHome: home, backendDir: path.join(dir, "state") });
    engineEnv({ base, pulumiHome: home, backendDir: path.join(dir, "state") }); // twice: idempotent
    const plugin = path.join(home, "plugins", "resource-vault-v7.8.0");
    expect(fs.lstatSync(plugin).isDirectory()).toBe(true);
    expect(fs.realpathSync(path.join(plugin, "pulumi-resource-vault"))).toBe(fs.realpathSync(path.join(dir, "bin", "pulumi-resource-vault")));
  });

  it("names the binaries a build has not produced", () => {
    const dir = fakeEngine();
    expect(missingEngineBinaries({ RUNNER_FLEET_ENGINE_DIR: dir })).toEqual(["pulumi", "pulumi-language-nodejs", "pulumi-resource-command", "bao"]);
  });
});
