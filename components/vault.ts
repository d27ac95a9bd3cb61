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
import { normalCidr, durationSeconds as parseDuration } from "./config-values";
import { deployWaves } from "./deploy-commands";
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

/** The role's inputs a cloud host's binding (FleetVault.bindAddresses) owns instead. */
export const BINDING_FIELDS = ["tokenBoundCidrs", "secretIdBoundCidrs"];

export interface HostVaultAccess {
  /** The host's AppRole role_id: an identifier, not a secret on its own. */
  roleId: pulumi.Output<string>;
  /** Secret: a response-wrapping token for the host's secret_id. */
  wrappedSecretId: pulumi.Output<string>;
  /** The KV secrets this program writes that the host reads: it must not boot before them. */
  secrets: vault.kv.SecretV2[];
  /** The host's AppRole, which bindAddresses binds once its machine exists. */
  role: vault.approle.AuthBackendRole;
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

/** Vault's default system max TTL (768h): a longer child token is capped to it anyway. */
export const MAX_CHILD_TOKEN_SECONDS = 768 * 3600;
const DAY_SECONDS = 86_400;

/**
 * The Vault provider's `maxLeaseTtlSeconds`: the TTL of the one child token it creates the first
 * time it needs a client, never renewed (terraform-provider-vault internal/provider/meta.go). The
 * engine runs the deletes of replaced and removed resources at the end of an `up`, so the token
 * must outlive the whole rollout, not the default 1200 s. Bound: every wave one after the other,
 * each host's chain of step timeouts (host key, ready, install, switch with its drain, seed, key
 * check, pools push), then the retire drains; rounded up to whole days (cloud machines' own
 * creation has no timeout of ours), at most 768h.
 */
export function providerMaxLeaseTtlSeconds(model: Pick<FleetModel, "hosts" | "deploy">): number {
  const d = model.deploy;
  const chain = (h: HostModel) =>
    (d.readyTimeoutMinutes + 1) + d.readyTimeoutMinutes
    + (h.image === "stock" ? d.installTimeoutMinutes + d.readyTimeoutMinutes + 7 : 0)
    + (d.switchTimeoutMinutes + d.drainTimeoutMinutes + 2) + 11 + (d.readyTimeoutMinutes + 1) + 11;
  const waves = deployWaves(model.hosts, d.batchSize);
  const minutes = waves.reduce((sum, wave) => sum + Math.max(0, ...wave.map(chain)), 0) + d.drainTimeoutMinutes + 2;
  const days = Math.max(1, Math.ceil((minutes * 60) / DAY_SECONDS));
  return Math.min(days * DAY_SECONDS, MAX_CHILD_TOKEN_SECONDS);
}

/**
 * A stack name in a Vault object name. Vault lowercases policy names, and Pulumi stack names may
 * hold capitals and `_`: `_` becomes `__` and a capital becomes `_` and its lowercase, so two stacks never
 * map to one name (`Ci` -> `_ci`, `_ci` -> `__ci`).
 */
export function vaultStackName(stack: string): string {
  return stack.replace(/_/g, "__").replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/**
 * A host's policy and AppRole name: `runner-fleet.<stack>.<host>`. Host names cannot contain `.`
 * (config-schema.ts Name), so the last `.` always ends the stack name: stack `ci` with host
 * `eu-a` and stack `ci-eu` with host `a` get different names. Pre-#24 names joined both with
 * `-` and could collide; `legacy` keeps them for stacks whose hosts were bootstrapped with them.
 */
export function vaultNames(stack: string, host: string, legacy = false): { policy: string; role: string } {
  if (legacy) return { policy: `runner-fleet-${stack}-${host}`.toLowerCase(), role: `${stack}-${host}` };
  const name = `runner-fleet.${vaultStackName(stack)}.${host}`;
  return { policy: name, role: name };
}

/** Whether vault.legacyNames keeps this host's pre-#24 names. */
export function usesLegacyNames(model: Pick<FleetModel, "vault">, host: string): boolean {
  const legacy = model.vault.legacyNames;
  return legacy === true || (Array.isArray(legacy) && legacy.includes(host));
}

/** Vault lowercases policy names; the names here are lowercase already, so no spurious diffs. */
export function policyName(stack: string, host: string, legacy = false): string {
  return vaultNames(stack, host, legacy).policy;
}

export function roleName(stack: string, host: string, legacy = false): string {
  return vaultNames(stack, host, legacy).role;
}

/** An IP as the /32 or /128 CIDR of that one address, a CIDR as itself; undefined for anything else (a hostname). */
export function hostCidr(address: string | undefined): string | undefined {
  if (!address) return undefined;
  // A network the machine owns whole (Hetzner's IPv6 /64): kept as a CIDR, in Vault's form.
  const network = normalCidr(address);
  if ("normal" in network) {
    const [ip, prefix] = network.normal.split("/");
    return network.family === 4 ? network.normal : `${canonicalIpv6(ip)}/${prefix}`;
  }
  if (isIP(address) === 0) return undefined;
  return isIP(address) === 4 ? `${address}/32` : `${canonicalIpv6(address)}/128`;
}

/** RFC 5952 form (lowercase, longest zero run as ::), the form Vault's Go net.IP prints. */
function canonicalIpv6(address: string): string {
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

/** Whether a host's AppRole is bound to its addresses: every host but vault.unboundHosts (NAT). */
export function bindsAddresses(model: Pick<FleetModel, "vault">, host: string): boolean {
  return !model.vault.unboundHosts.includes(host);
}

/**
 * The CIDRs an existing machine's role (so its secret_id and tokens) is bound to at creation: its
 * configured IPs. Hostnames are not bound (Vault takes CIDRs only, and a name may resolve
 * elsewhere later). Cloud hosts get none here: their address exists only after the machine,
 * whose user-data needs the wrapped secret_id first; roleBindingJson binds them afterwards.
 */
export function boundCidrs(host: HostModel): string[] {
  if (host.provider !== "existing") return [];
  return [host.address, host.privateAddress].map(hostCidr).filter((c): c is string => !!c);
}

/**
 * What a cloud host's role binding writes to `auth/<mount>/role/<role>` once the machine exists:
 * `secret_id_bound_cidrs` and `token_bound_cidrs` of its IP addresses, or both empty (which clears
 * them) when the host is not bound. A role write changes only the fields it is given, so the rest
 * of the role stays as the AuthBackendRole wrote it. Written as Vault reads it back, so the
 * endpoint's read-back data is this string and a second run has nothing to do: keys sorted (the
 * provider re-marshals data_json), token CIDRs of one address without their /32 or /128 (Vault's
 * sockaddr prints them so), secret_id CIDRs as given (Vault stores those strings).
 */
export function roleBindingJson(addresses: ReadonlyArray<string | undefined>, bind = true): string {
  const cidrs = bind ? [...new Set(addresses.map(hostCidr).filter((c): c is string => !!c))] : [];
  return JSON.stringify({ secret_id_bound_cidrs: cidrs, token_bound_cidrs: cidrs.map((c) => c.replace(/\/(32|128)$/, "")) });
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
  private readonly model: FleetModel;
  private readonly provider: vault.Provider;

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
    // config or state. Its child token must last the whole `up` (providerMaxLeaseTtlSeconds).
    const provider = new vault.Provider(name, {
      address: model.vault.address, maxLeaseTtlSeconds: providerMaxLeaseTtlSeconds(model),
    }, { parent: this });
    const child = { parent: this, provider };
    this.model = model;
    this.provider = provider;

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
      const names = vaultNames(stack, host.name, usesLegacyNames(model, host.name));
      const policy = new vault.Policy(`${host.name}-policy`, {
        name: names.policy, policy: policyFor(host, model),
      }, child);
      this.policyNames[host.name] = names.policy;

      const cidrs = bindsAddresses(model, host.name) ? boundCidrs(host) : [];
      const bound = cidrs.length ? { secretIdBoundCidrs: cidrs, tokenBoundCidrs: cidrs } : {};
      const tokenTtl = durationSeconds(model.vault.tokenTtl);
      const role = new vault.approle.AuthBackendRole(`${host.name}-approle`, {
        backend,
        roleName: names.role,
        tokenPolicies: [policy.name],
        tokenTtl,
        tokenMaxTtl: tokenTtl,
        secretIdTtl: durationSeconds(model.vault.secretIdTtl),
        // Unlimited uses: vault-agent logs in again with the secret_id file on every restart and
        // token expiry, so a single-use secret_id would lock the host out after its first restart.
        // What travels in user-data is the wrapping token, and that one is single use.
        secretIdNumUses: 0,
        ...bound,
      }, {
        ...child,
        // A cloud host's CIDRs are written by bindAddresses after its machine exists. Upstream's
        // Update sends only changed fields and its Read copies both lists back from Vault, so
        // without this the next diff (config: none, state: bound) would clear them.
        ...(host.provider === "existing" ? {} : { ignoreChanges: BINDING_FIELDS }),
      });

      const secretId = new vault.approle.AuthBackendRoleSecretId(`${host.name}-secret-id`, {
        backend,
        roleName: role.roleName,
        // Both explicit: upstream's Read writes ttl and num_uses back from Vault, and the bridge
        // diffs the config against that state. Unset, a non-zero secretIdTtl read back would
        // force a new secret_id (ttl is ForceNew) on every up, destroying the host's one.
        ttl: durationSeconds(model.vault.secretIdTtl),
        numUses: 0,
        wrappingTtl: model.vault.wrapTtl,
        // Without the wrapped accessor a fresh secret_id is made whenever the wrapping token has
        // expired or been used, i.e. on nearly every run, and user-data would change each time.
        withWrappedAccessor: true,
        metadata: JSON.stringify({ host: host.name, stack }),
        // No CIDR list of its own: the role's secret_id_bound_cidrs, checked at every login, binds
        // it. A list here is ForceNew, so a change of binding (vault.unboundHosts, a new address)
        // would re-issue the secret_id and destroy the host's one, and a host that has unwrapped
        // keeps its old one (runner-fleet-seed never replaces it): locked out.
      }, {
        ...child, additionalSecretOutputs: ["secretId", "wrappingToken"],
        // All four only shape the secret_id made at creation: a new vault.wrapTtl or secretIdTtl
        // applies to new secret_ids instead of re-issuing (and destroying) every one. The bridge
        // drops ignored keys from its config-vs-state diff too, so a stack made before ttl was
        // set (state ttl read back, no ttl input) keeps its secret_ids as well, and one made when
        // existing machines' secret_ids carried cidrLists keeps those.
        ignoreChanges: ["wrappingTtl", "ttl", "numUses", "cidrLists"],
      });

      this.hostAccess.set(host.name, { roleId: role.roleId, wrappedSecretId: pulumi.secret(secretId.wrappingToken), secrets: hostSecrets, role });
    }

    this.registerOutputs({ policyNames: this.policyNames });
  }

  /**
   * Binds a cloud host's AppRole to its machine's addresses (#24 item 9): its
   * `secret_id_bound_cidrs` and `token_bound_cidrs` become the machine's public and private IPs,
   * written after the machine exists (its user-data needs the role first). A replaced machine's
   * new addresses update the binding. Vault checks the role's list at every login, so the
   * unwrapped secret_id is useless from anywhere else, and so are the tokens it yields. A host in
   * vault.unboundHosts gets both lists emptied instead. Never deleted: the path is the role
   * itself, which its AuthBackendRole deletes.
   */
  bindAddresses(host: string, addresses: pulumi.Input<string | undefined>[], machine: pulumi.Resource[]): vault.generic.Endpoint {
    const { role } = this.access(host);
    const bind = bindsAddresses(this.model, host);
    return new vault.generic.Endpoint(`${host}-approle-binding`, {
      path: role.id,
      dataJson: pulumi.all(addresses).apply((a) => roleBindingJson(a, bind)),
      // Read back only these two fields of the role, so drift in them shows on a refresh.
      ignoreAbsentFields: true,
      // Upstream's delete is a DELETE of the path: that would delete the role.
      disableDelete: true,
    }, { parent: this, provider: this.provider, dependsOn: machine });
  }

  /** The role_id and wrapped secret_id a host's user-data carries. */
  access(host: string): HostVaultAccess {
    const access = this.hostAccess.get(host);
    if (!access) throw new Error(`FleetVault: no Vault access for unknown host ${JSON.stringify(host)}`);
    return access;
  }
}
