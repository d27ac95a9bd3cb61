/**
 * Reads the stack's config from the Pulumi runtime and builds the validated fleet model. Bad
 * config ends the program here, before any resource exists, with every problem on its own line.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { parse as parseYaml } from "yaml";
import { buildFleetModel, ConfigError, PROJECT, SECRET_KEYS } from "./config";
import type { FleetModel, SecretName } from "./model";

/** Secret config values, as Pulumi secrets; absent when not set (e.g. kept only in Vault). */
export type FleetSecrets = Partial<Record<SecretName, pulumi.Output<string>>>;

/**
 * Set by the offline plan and tests: images need only a hash, not a built file. A preview
 * uploads nothing either, so it needs no file; `pulumi up` does.
 */
export const OFFLINE_ENV = "RUNNER_FLEET_OFFLINE";

function parseValue(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/**
 * This project's keys from a flat config map ("runner-fleet:hosts" -> JSON text), without the
 * prefix and with object values parsed: what buildFleetModel takes.
 */
export function projectConfig(all: Record<string, string>): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(all)) {
    if (key.startsWith(`${PROJECT}:`)) raw[key.slice(PROJECT.length + 1)] = parseValue(value);
  }
  return raw;
}

/**
 * This project's keys (without the prefix) whose value is a Pulumi secret. The SDK knows them
 * (PULUMI_CONFIG_SECRET_KEYS, read by its internal isConfigSecret); allConfig() alone hands
 * secure values over decrypted, as plain strings.
 */
export function secureConfigKeys(all: Record<string, string>): Set<string> {
  const runtime = pulumi.runtime as unknown as { isConfigSecret?: (key: string) => boolean };
  const isSecret = runtime.isConfigSecret ?? ((key: string) => {
    try {
      const keys: unknown = JSON.parse(process.env.PULUMI_CONFIG_SECRET_KEYS ?? "[]");
      return Array.isArray(keys) && keys.includes(key);
    } catch {
      return false;
    }
  });
  return new Set(Object.keys(all).filter((k) => k.startsWith(`${PROJECT}:`) && isSecret(k)).map((k) => k.slice(PROJECT.length + 1)));
}

/**
 * `runner-fleet:hostsFile`: hosts kept in a YAML (or JSON) file of the project, `name: host` as
 * under `hosts`, merged into them. The Node.js language host hands the program its whole stack
 * config in one environment variable (PULUMI_CONFIG), and Linux caps one such string at 128 KiB
 * (MAX_ARG_STRLEN): a few hundred hosts inline already exceed it, and node then cannot start.
 * A relative path starts at the project directory. Returns `raw` with the file's hosts merged
 * and hostsFile removed; a problem is a ConfigError with the key path.
 */
export function mergeHostsFile(raw: Record<string, unknown>, baseDir: string): Record<string, unknown> {
  if (raw.hostsFile === undefined) return raw;
  const { hostsFile, ...rest } = raw;
  const key = `${PROJECT}:hostsFile`;
  if (typeof hostsFile !== "string" || hostsFile === "") throw new ConfigError([`${key}: must be a path to a YAML file of hosts`]);
  const file = path.resolve(baseDir, hostsFile);
  let parsed: unknown;
  try {
    parsed = parseYaml(fs.readFileSync(file, "utf8"));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError([`${key}: cannot read ${hostsFile}: ${e.code ?? (e.message.split("\n")[0] || "not YAML")}`]);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new ConfigError([`${key}: ${hostsFile} must be a map of host name -> host, as runner-fleet:hosts`]);
  const inline = rest.hosts ?? {};
  if (typeof inline !== "object" || inline === null || Array.isArray(inline)) return raw; // the schema reports hosts itself
  const twice = Object.keys(parsed).filter((name) => Object.prototype.hasOwnProperty.call(inline, name));
  if (twice.length) throw new ConfigError(twice.map((name) => `${key}: host ${name} is also in ${PROJECT}:hosts`));
  return { ...rest, hosts: { ...inline, ...parsed } };
}

/**
 * Problems with the deploy machine's environment, as config problems are reported. VAULT_NAMESPACE
 * is refused: the Vault provider would honour it, but hosts log in with their AppRole at the root
 * namespace (bootstrap, vault-agent and host.json carry no namespace), so their roles would not
 * be found and every host would be locked out.
 */
export function environmentProblems(env: NodeJS.ProcessEnv): string[] {
  const problems: string[] = [];
  if (env.VAULT_NAMESPACE) {
    problems.push(`VAULT_NAMESPACE: Vault namespaces are not supported (hosts log in at the root namespace); unset it and point runner-fleet:vault.address at a root-namespace mount`);
  }
  return problems;
}

export function loadFleet(): { model: FleetModel; secrets: FleetSecrets } {
  const all = pulumi.runtime.allConfig();
  const baseDir = path.resolve(__dirname, "..");
  const inline = projectConfig(all);
  const secretKeysSet = new Set(Object.values(SECRET_KEYS).filter((k) => inline[k] !== undefined && inline[k] !== ""));
  let model: FleetModel;
  try {
    // The environment's problems first, then the config's: every problem at once.
    const envProblems = environmentProblems(process.env);
    try {
      model = buildFleetModel(mergeHostsFile(inline, baseDir), {
        stack: pulumi.getStack(),
        secretsSet: secretKeysSet,
        awsRegion: all["aws:region"],
        azureLocation: all["azure-native:location"],
        baseDir,
        requireImageFiles: process.env[OFFLINE_ENV] !== "1" && !pulumi.runtime.isDryRun(),
        secureKeys: secureConfigKeys(all),
      });
    } catch (err) {
      if (err instanceof ConfigError && envProblems.length) throw new ConfigError([...envProblems, ...err.problems]);
      throw err;
    }
    if (envProblems.length) throw new ConfigError(envProblems);
  } catch (err) {
    if (err instanceof ConfigError) {
      // RunError ends the program with this message alone: no stack trace, no source dump.
      throw new pulumi.RunError(`invalid stack config (${err.problems.length} problem${err.problems.length === 1 ? "" : "s"}):\n${err.problems.join("\n")}`);
    }
    throw err;
  }
  const config = new pulumi.Config(PROJECT);
  const secrets: FleetSecrets = {};
  for (const [name, key] of Object.entries(SECRET_KEYS) as Array<[SecretName, string]>) {
    if (secretKeysSet.has(key)) secrets[name] = config.requireSecret(key);
  }
  return { model, secrets };
}
