/**
 * Where `npm run engine` puts the real Pulumi CLI, its plugins and OpenBao, and the environment
 * that runs them with no network: no update check, no plugin downloads, a file:// backend and a
 * passphrase secrets provider.
 */
import * as fs from "node:fs";
import * as path from "node:path";

const ROOT = path.resolve(__dirname, "..");

/** Binaries `npm run engine` writes into engineBinDir(). */
export const ENGINE_BINARIES = [
  "pulumi", "pulumi-language-nodejs", "pulumi-resource-command", "pulumi-resource-vault", "bao",
] as const;

/** The cache directory: RUNNER_FLEET_ENGINE_DIR, else `<repo>/.engine`. */
export function engineDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.RUNNER_FLEET_ENGINE_DIR || path.join(ROOT, ".engine"));
}

/** The directory holding pulumi, the language host, the providers and bao. */
export function engineBinDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(engineDir(env), "bin");
}

/** Plugin cache laid out as `pulumi plugin install` would: `<home>/plugins/resource-<name>-v<version>/`. */
export function enginePluginsDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(engineDir(env), "pulumi-home", "plugins");
}

/** The binaries that are missing, so callers can skip with a reason; empty when the engine is built. */
export function missingEngineBinaries(env: NodeJS.ProcessEnv = process.env): string[] {
  return ENGINE_BINARIES.filter((b) => !fs.existsSync(path.join(engineBinDir(env), b)));
}

export interface EngineEnvOptions {
  /** Directory of the file:// state backend; created if missing. Default `<engine>/backend`. */
  backendDir?: string;
  /** PULUMI_HOME; the engine's plugin cache is linked into it. Default `<engine>/pulumi-home`. */
  pulumiHome?: string;
  /** Passphrase of the stack's secrets provider. Default "runner-fleet-test". */
  passphrase?: string;
  /** Environment to extend. Default process.env. */
  base?: NodeJS.ProcessEnv;
}

/**
 * The environment for running the engine's `pulumi`. Providers come from the plugin cache at
 * the versions package.json pins (PULUMI_IGNORE_AMBIENT_PLUGINS), the language host from next
 * to `pulumi`, so a version mismatch fails instead of silently using whatever is on PATH.
 */
export function engineEnv(opts: EngineEnvOptions = {}): NodeJS.ProcessEnv {
  const base = opts.base ?? process.env;
  const home = path.resolve(opts.pulumiHome ?? path.join(engineDir(base), "pulumi-home"));
  const backend = path.resolve(opts.backendDir ?? path.join(engineDir(base), "backend"));
  fs.mkdirSync(backend, { recursive: true });
  linkPlugins(enginePluginsDir(base), path.join(home, "plugins"));
  return {
    ...base,
    PATH: [engineBinDir(base), base.PATH ?? ""].filter(Boolean).join(path.delimiter),
    PULUMI_HOME: home,
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_IGNORE_AMBIENT_PLUGINS: "true",
    PULUMI_BACKEND_URL: `file://${backend}`,
    PULUMI_CONFIG_PASSPHRASE: opts.passphrase ?? "runner-fleet-test",
  };
}

/**
 * Makes every plugin of the engine's cache visible in another PULUMI_HOME. The plugin
 * directories are real (the CLI lists only directories, not links to them); their binaries are
 * links to the engine's.
 */
function linkPlugins(from: string, to: string): void {
  if (path.resolve(from) === path.resolve(to) || !fs.existsSync(from)) return;
  for (const plugin of fs.readdirSync(from)) {
    fs.mkdirSync(path.join(to, plugin), { recursive: true });
    for (const file of fs.readdirSync(path.join(from, plugin))) {
      const target = path.join(to, plugin, file);
      if (!fs.existsSync(target)) fs.symlinkSync(fs.realpathSync(path.join(from, plugin, file)), target);
    }
  }
}
