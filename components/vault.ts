/**
 * Vault for the fleet: the KV v2 mount with every secret a host needs, and per host a policy, an
 * AppRole and a response-wrapped secret_id. User-data then carries only the role_id and the
 * wrapping token (DESIGN rule 4); the host unwraps it and vault-agent fetches the rest itself.
 */
import { isIP } from "node:net";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import * as vault from "@pulumi/vault";
import { SECRET_KEYS } from "./config";
import { durationSeconds as parseDuration } from "./config-values";
import type { FleetSecrets } from "./load";
import type { FleetModel, HostModel, SecretName } from "./model";
import { COMMAND_ENV, withOnlyEnv } from "./command-env";
import { kvPaths, policyFor } from "./vault-paths";

export interface FleetVaultArgs {
  /** The validated fleet model. */
  model: FleetModel;
  /** Secret config values to write into Vault (absent when listed in vault.externalSecrets). */
  secrets: FleetSecrets;
}

export interface HostVaultAccess {
  /** The host's AppRole role_id: an identifier, not a secret on its own. */
  roleId: pulumi.Output<string>;
  /** Secret: a response-wrapping token for the host's secret_id. */
  wrappedSecretId: pulumi.Output<string>;
  /** The KV secrets this program writes that the host reads: it must not boot before them. */
  secrets: vault.kv.SecretV2[];
}

// ---------------------------------------------------------------------------------------------
// Pure helpers

/** "90s" | "30m" | "2h" (the config's duration form) -> seconds, for inputs Vault takes as numbers. */
export function durationSeconds(duration: string): number {
  // The one duration parser is validation's; here a bad value is a program error, not input.
  const seconds = parseDuration(duration);
  if (seconds === undefined) throw new Error(`${JSON.stringify(duration)} is not a duration such as "90s", "30m" or "2h"`);
  return seconds;
}

/** Vault lowercases policy names; doing it here keeps the resource free of spurious diffs. */
export function policyName(stack: string, host: string): string {
  return `runner-fleet-${stack}-${host}`.toLowerCase();
}

export function roleName(stack: string, host: string): string {
  return `${stack}-${host}`;
}

/**
 * The CIDRs a host's secret_id and tokens are bound to. Only machines whose address is a known IP
 * (existing hosts) are bound: a cloud host's address does not exist until the instance does, and
 * the instance's user-data needs the wrapped secret_id first. Hostnames are not bound either (Vault
 * takes CIDRs only, and a name may resolve elsewhere later).
 */
export function boundCidrs(host: HostModel): string[] {
  if (host.provider !== "existing") return [];
  return [host.address, host.privateAddress]
    .filter((a): a is string => !!a && isIP(a) !== 0)
    .map((a) => (isIP(a) === 4 ? `${a}/32` : `${a}/128`));
}

/** The secrets this fleet writes (not external) and the hosts whose roles need them. */
export function secretsNeeded(model: FleetModel): Map<SecretName, string[]> {
  const byRole: Array<[SecretName, HostModel["roles"][number]]> = [
    ["githubApp", "fireactions"], ["giteaRunnerToken", "gitea-runner"], ["gitlabRunnerToken", "gitlab-runner"], ["cacheSigningKey", "cache"],
  ];
  const needed = new Map<SecretName, string[]>();
  for (const [secret, role] of byRole) {
    if (model.vault.externalSecrets.includes(secret)) continue;
    const hosts = model.hosts.filter((h) => h.roles.includes(role)).map((h) => h.name);
    if (hosts.length) needed.set(secret, hosts);
  }
  return needed;
}

/**
 * A command:local:Command that prints `bytes` random bytes as lowercase hex once and keeps them:
 * it has no triggers, and its `update` re-prints the previous stdout (PULUMI_COMMAND_STDOUT), so
 * even an edit to `create` in a later release keeps the secret. Replaces @pulumi/random's
 * RandomBytes so the fleet needs only the command and vault providers.
 */
export function randomHexCommand(bytes: number): { create: string; update: string } {
  return {
    // -v: od must not fold repeated lines into "*".
    create: withOnlyEnv(COMMAND_ENV.plain, `od -An -v -N${bytes} -tx1 /dev/urandom | tr -d ' \\n'`),
    update: withOnlyEnv(COMMAND_ENV.plain, `test -n "$PULUMI_COMMAND_STDOUT" && printf '%s' "$PULUMI_COMMAND_STDOUT"`),
  };
}

/** A KV v2 document as a Pulumi secret: its values come from secret config or generated keys. */
function secretJson(fields: Record<string, pulumi.Input<string>>): pulumi.Output<string> {
  return pulumi.secret(pulumi.all(fields).apply((v) => JSON.stringify(v)));
}

// ---------------------------------------------------------------------------------------------
// The component

export class FleetVault extends pulumi.ComponentResource {
  /** Each host's policy name, by host (for operators; nothing secret). */
  readonly policyNames: Record<string, string> = {};
  /** Every KV secret this program writes, by KV name (for `dependsOn`: hosts boot after them). */
  readonly kvSecrets: Record<string, vault.kv.SecretV2> = {};
  private readonly hostAccess = new Map<string, HostVaultAccess>();

  constructor(name: string, args: FleetVaultArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:vault:FleetVault", name, {}, opts);
    const { model, secrets } = args;
    const stack = model.stack;

    // Validate before any child exists: the model is checked in config.ts, but this component
    // may be handed secrets that do not match it.
    if (!model.vault.address) throw new Error("FleetVault: runner-fleet:vault.address is required");
    const needed = secretsNeeded(model);
    for (const [secret, hosts] of needed) {
      if (!secrets[secret]) {
        throw new Error(`FleetVault: runner-fleet:${SECRET_KEYS[secret]} is required by host${hosts.length > 1 ? "s" : ""} ${hosts.join(", ")} (or list ${secret} in vault.externalSecrets)`);
      }
    }
    if (needed.has("githubApp") && !model.github?.appId) throw new Error("FleetVault: runner-fleet:github.appId is required by the fireactions role");

    // No token here: the provider reads VAULT_TOKEN from the environment, so it never lands in
    // config or state.
    const provider = new vault.Provider(name, { address: model.vault.address }, { parent: this });
    const child = { parent: this, provider };

    // Outputs of the created mounts (not the plain strings) so writes wait for the mounts.
    const mount: pulumi.Input<string> = model.vault.createMount
      ? new vault.Mount(`${name}-kv`, {
          path: model.vault.mount, type: "kv", options: { version: "2" },
          description: `runner-fleet ${stack}: CI runner secrets`,
        }, child).path
      : model.vault.mount;
    const backend: pulumi.Input<string> = model.vault.createAuthMount
      ? new vault.AuthBackend(`${name}-approle`, {
          type: "approle", path: model.vault.authMount, description: `runner-fleet ${stack}: CI runner hosts`,
        }, child).path
      : model.vault.authMount;

    const writeKv = (logical: string, kvName: string, fields: Record<string, pulumi.Input<string>>) =>
      (this.kvSecrets[kvName] = new vault.kv.SecretV2(logical, {
        mount, name: kvName, dataJson: secretJson(fields),
        // These secrets belong to this program: removing a host removes every version of them.
        deleteAllVersions: true,
      }, { ...child, additionalSecretOutputs: ["data", "dataJson"] }));

    // Shared GitHub App credentials, read by every fireactions host of the organization.
    let githubApp: vault.kv.SecretV2 | undefined;
    if (needed.has("githubApp") && model.github) {
      const org = model.github.organization;
      githubApp = writeKv(`${name}-github-app-${org.toLowerCase()}`, kvPaths.githubApp(org), {
        app_id: model.github.appId ?? "", private_key: secrets.githubApp!,
      });
    }

    for (const host of model.hosts) {
      const hostSecrets: vault.kv.SecretV2[] = githubApp && host.roles.includes("fireactions") ? [githubApp] : [];
      if (host.roles.includes("forgejo-runner")) {
        // Offline registration secret (40 hex), made once and kept in state: the Forgejo server
        // registers it and the runner creates its file from the same value. Secret from the
        // start (additionalSecretOutputs) and never echoed to the engine's log (logging none).
        const generated = new command.local.Command(`${host.name}-forgejo-runner-secret`, {
          ...randomHexCommand(20), logging: "none",
        }, { parent: this, additionalSecretOutputs: ["stdout"] });
        hostSecrets.push(writeKv(`${host.name}-forgejo-runner`, kvPaths.host(host.name, "forgejo-runner"), { token: generated.stdout }));
      }
      if (host.roles.includes("gitea-runner") && needed.has("giteaRunnerToken")) {
        hostSecrets.push(writeKv(`${host.name}-gitea-runner`, kvPaths.host(host.name, "gitea-runner"), { token: secrets.giteaRunnerToken! }));
      }
      if (host.roles.includes("gitlab-runner") && needed.has("gitlabRunnerToken")) {
        hostSecrets.push(writeKv(`${host.name}-gitlab-runner`, kvPaths.host(host.name, "gitlab-runner"), { token: secrets.gitlabRunnerToken! }));
      }
      if (host.roles.includes("cache") && needed.has("cacheSigningKey")) {
        hostSecrets.push(writeKv(`${host.name}-cache`, kvPaths.host(host.name, "cache"), { signing_key: secrets.cacheSigningKey! }));
      }

      // External secrets are still granted: the policy covers every file the host renders.
      const policy = new vault.Policy(`${host.name}-policy`, {
        name: policyName(stack, host.name), policy: policyFor(host, model),
      }, child);
      this.policyNames[host.name] = policyName(stack, host.name);

      const cidrs = boundCidrs(host);
      const bound = cidrs.length ? { secretIdBoundCidrs: cidrs, tokenBoundCidrs: cidrs } : {};
      const tokenTtl = durationSeconds(model.vault.tokenTtl);
      const role = new vault.approle.AuthBackendRole(`${host.name}-approle`, {
        backend,
        roleName: roleName(stack, host.name),
        tokenPolicies: [policy.name],
        tokenTtl,
        tokenMaxTtl: tokenTtl,
        secretIdTtl: durationSeconds(model.vault.secretIdTtl),
        // Unlimited uses: vault-agent logs in again with the secret_id file on every restart and
        // token expiry, so a single-use secret_id would lock the host out after its first restart.
        // What travels in user-data is the wrapping token, and that one is single use.
        secretIdNumUses: 0,
        ...bound,
      }, child);

      const secretId = new vault.approle.AuthBackendRoleSecretId(`${host.name}-secret-id`, {
        backend,
        roleName: role.roleName,
        wrappingTtl: model.vault.wrapTtl,
        // Without the wrapped accessor a fresh secret_id is made whenever the wrapping token has
        // expired or been used, i.e. on nearly every run, and user-data would change each time.
        withWrappedAccessor: true,
        metadata: JSON.stringify({ host: host.name, stack }),
        ...(cidrs.length ? { cidrLists: cidrs } : {}),
      }, { ...child, additionalSecretOutputs: ["secretId", "wrappingToken"] });

      this.hostAccess.set(host.name, { roleId: role.roleId, wrappedSecretId: pulumi.secret(secretId.wrappingToken), secrets: hostSecrets });
    }

    this.registerOutputs({ policyNames: this.policyNames });
  }

  /** The role_id and wrapped secret_id a host's user-data carries. */
  access(host: string): HostVaultAccess {
    const access = this.hostAccess.get(host);
    if (!access) throw new Error(`FleetVault: no Vault access for unknown host ${JSON.stringify(host)}`);
    return access;
  }
}
