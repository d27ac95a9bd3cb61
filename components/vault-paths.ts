/**
 * Where each secret lives in Vault (KV v2), and which files vault-agent renders from it on a
 * host. The scheme is shared by the Vault writes, the per-host policies and `nix/` (through
 * inventory.json), so it is defined once, here.
 */
import type { FleetModel, HostModel, Role } from "./model";

/** KV v2 secret name (path under the mount, without `data/`). */
export const kvPaths = {
  githubApp: (organization: string) => `shared/github-app/${organization}`,
  host: (host: string, role: Exclude<Role, "fireactions">) => `hosts/${host}/${role}`,
  /** Where a host publishes its own SSH host public key (field `public_key`); the deploy pins it. */
  sshHostKey: (host: string) => `hosts/${host}/ssh-host-key`,
  /**
   * A registry mirror upstream's login (fields `username`, `password`), fleet-wide like the
   * GitHub App: one account per upstream, written by the user with `bao kv put`, never config.
   */
  registryMirror: (upstream: string) => `shared/registry-mirror/${upstream}`,
};

/** Where vault-agent renders an upstream's login; runner-fleet-registry-mirror.py reads it. */
export const REGISTRY_CREDENTIALS_DIR = "/run/secrets/registry-mirror";

/** The KV v2 API path (`<mount>/data/...`) of a host's published SSH host key. */
export function sshHostKeyApiPath(host: string, model: Pick<FleetModel, "vault">): string {
  return `${model.vault.mount}/data/${kvPaths.sshHostKey(host)}`;
}

export interface SecretFile {
  /** Where vault-agent writes it on the host. */
  file: string;
  /** The API path vault-agent reads: `<mount>/data/<name>`. */
  path: string;
  field: string;
  /** raw: the value; env:NAME: one line NAME=<value>. */
  format: "raw" | `env:${string}`;
}

/** The files a host's roles need, in a stable order. */
export function secretFilesFor(host: HostModel, model: Pick<FleetModel, "vault" | "github">): SecretFile[] {
  const data = (name: string) => `${model.vault.mount}/data/${name}`;
  const files: SecretFile[] = [];
  if (host.roles.includes("fireactions") && model.github) {
    const app = data(kvPaths.githubApp(model.github.organization));
    files.push({ file: "/run/secrets/github-app-id", path: app, field: "app_id", format: "raw" });
    files.push({ file: "/run/secrets/github-app-key.pem", path: app, field: "private_key", format: "raw" });
  }
  if (host.roles.includes("forgejo-runner")) {
    files.push({ file: "/run/secrets/forgejo-runner-token", path: data(kvPaths.host(host.name, "forgejo-runner")), field: "token", format: "env:TOKEN" });
  }
  if (host.roles.includes("gitea-runner")) {
    files.push({ file: "/run/secrets/gitea-runner-token", path: data(kvPaths.host(host.name, "gitea-runner")), field: "token", format: "env:TOKEN" });
  }
  if (host.roles.includes("gitlab-runner")) {
    // nixpkgs' gitlab-runner module reads an EnvironmentFile with CI_SERVER_URL and CI_SERVER_TOKEN
    // (docs/upstream.md); the URL is in host.json, so the file carries the token alone.
    files.push({ file: "/run/secrets/gitlab-runner-token", path: data(kvPaths.host(host.name, "gitlab-runner")), field: "token", format: "env:CI_SERVER_TOKEN" });
  }
  if (host.registryMirror?.enable) {
    for (const [upstream, u] of Object.entries(host.registryMirror.upstreams).sort(([a], [b]) => a.localeCompare(b))) {
      if (!u.credentials) continue;
      const login = data(kvPaths.registryMirror(upstream));
      for (const field of ["username", "password"]) files.push({ file: `${REGISTRY_CREDENTIALS_DIR}/${upstream}/${field}`, path: login, field, format: "raw" });
    }
  }
  if (host.roles.includes("cache")) {
    files.push({ file: "/run/secrets/cache-signing-key", path: data(kvPaths.host(host.name, "cache")), field: "signing_key", format: "raw" });
  }
  return files;
}

/** The KV v2 API paths one host reads: `<mount>/data/<name>` and `<mount>/metadata/<name>`. */
export function hostKvPaths(host: HostModel, model: Pick<FleetModel, "vault" | "github">): { data: string[]; metadata: string[] } {
  const dataPrefix = `${model.vault.mount}/data/`;
  const names = [...new Set(secretFilesFor(host, model).map((f) => f.path))].map((p) => {
    if (!p.startsWith(dataPrefix)) throw new Error(`host ${host.name}: secret path ${p} is not under ${dataPrefix}`);
    return p.slice(dataPrefix.length);
  });
  return {
    data: names.map((n) => `${dataPrefix}${n}`),
    metadata: names.map((n) => `${model.vault.mount}/metadata/${n}`),
  };
}

/**
 * The Vault ACL policy of one host: `read` on exactly the KV paths its files come from, no glob,
 * no `list`, so a host can neither read nor discover another host's secrets. The metadata paths
 * let vault-agent see versions of those same secrets and nothing else. One path is writable: the
 * host's own SSH host key (create/update to publish it, read to check it), which the deploy pins.
 */
export function policyFor(host: HostModel, model: Pick<FleetModel, "vault" | "github" | "stack">): string {
  const { data, metadata } = hostKvPaths(host, model);
  const lines = [`# runner-fleet stack ${model.stack}: what host ${host.name} may read, and nothing else.`];
  const rule = (path: string, capabilities: string[]) => {
    // Paths come from validated names; refuse anything that could widen or break the rule.
    // ":" is a registry's port (shared/registry-mirror/host:5000); not a glob in Vault ACLs (only * and +).
    if (!/^[A-Za-z0-9_./:-]+$/.test(path) || path.includes("..")) throw new Error(`host ${host.name}: refusing to write policy for path ${JSON.stringify(path)}`);
    lines.push(`path "${path}" {`, `  capabilities = [${capabilities.map((c) => `"${c}"`).join(", ")}]`, `}`);
  };
  for (const path of [...data, ...metadata]) rule(path, ["read"]);
  lines.push(`# Its own SSH host key: published by the host, pinned by the deploy.`);
  rule(sshHostKeyApiPath(host.name, model), ["create", "update", "read"]);
  return `${lines.join("\n")}\n`;
}
