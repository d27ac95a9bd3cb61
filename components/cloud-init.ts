/**
 * cloud-init user-data for a host (`#cloud-config`): the facts file, the pools, the Vault
 * AppRole role_id and a wrapped secret_id, the deploy user's SSH keys, and one guarded bootstrap
 * step. Built as a plain object and serialised with `yaml`, never by string templates. The
 * document is printable ASCII whatever the input: strings outside it are written double-quoted
 * with escapes, and file contents outside it as base64, so no value can change the document's
 * structure (PyYAML reads U+0085 and U+2028 as line breaks and refuses C1 characters). Pure
 * functions only; fleet.ts feeds it the Vault outputs.
 *
 * No long-lived secret goes in here (DESIGN.md rule 4): instance metadata is readable by any
 * process on the host. The one exception is the explicit, warned opt-in
 * `unsafe.githubAppKeyInUserData`, and only on fireactions hosts.
 */
import { gzipSync } from "node:zlib";
import { stringify, type Scalar, type ScalarTag } from "yaml";
import type { Cloud, FleetModel, HostModel, Provider } from "./model";

export interface UserDataInput {
  /** The host the user-data is for. */
  host: HostModel;
  /** Fleet-wide settings. */
  model: FleetModel;
  /** The host's pools.json, as rendered by pools.ts. */
  poolsJson: string;
  /** The host's AppRole role_id. */
  roleId: string;
  /** A response-wrapping token for the host's secret_id (single use, short TTL). */
  wrappedSecretId: string;
  /** Only with unsafe.githubAppKeyInUserData. */
  githubAppPrivateKey?: string;
}

/** Where each file lands on the host (docs/contracts.md). */
export const PATHS = {
  hostJson: "/etc/runner-fleet/host.json",
  poolsJson: "/etc/runner-fleet/pools.json",
  roleId: "/etc/runner-fleet/vault/role-id",
  wrappedSecretId: "/etc/runner-fleet/vault/wrapped-secret-id",
  githubAppKey: "/etc/runner-fleet/github-app-key.pem",
} as const;

/** Installed by the NixOS images; absent on stock images, where nixos-anywhere comes later. */
export const BOOTSTRAP = "/run/current-system/sw/bin/runner-fleet-bootstrap";

/**
 * Largest user-data each cloud accepts, in bytes of the document before base64:
 * AWS 16 KiB, Hetzner 32 KiB, Azure and DigitalOcean 64 KiB. Existing machines have none.
 */
export const USER_DATA_LIMITS: Readonly<Record<Cloud, number>> = {
  aws: 16 * 1024,
  hetzner: 32 * 1024,
  azure: 64 * 1024,
  digitalocean: 64 * 1024,
};

/** The limit for a provider; undefined for existing machines (the document is not sent to a cloud). */
export function userDataLimit(provider: Provider): number | undefined {
  return provider === "existing" ? undefined : USER_DATA_LIMITS[provider];
}

/** The size clouds count: UTF-8 bytes of the document, before any base64. */
export function userDataSize(userData: string): number {
  return Buffer.byteLength(userData, "utf8");
}

/** True when the document fits the host's cloud (always, for existing machines). */
export function fitsUserDataLimit(provider: Provider, userData: string): boolean {
  const limit = userDataLimit(provider);
  return limit === undefined || userDataSize(userData) <= limit;
}

/** One `write_files` entry; keys in the order they are printed. */
export interface WriteFile {
  path: string;
  content: string;
  encoding?: "gz+b64" | "b64";
  owner: "root:root";
  permissions: "0600" | "0644";
}

/** /etc/runner-fleet/host.json: what the host needs to know about itself (docs/contracts.md). */
export function renderHostJson(host: HostModel, model: FleetModel): string {
  const facts = {
    name: host.name,
    stack: model.stack,
    provider: host.provider,
    arch: host.arch,
    roles: host.roles,
    tags: host.tags,
    vault: { address: model.vault.address, mount: model.vault.mount, authMount: model.vault.authMount },
    github: model.github ? { organization: model.github.organization, url: model.github.url } : null,
    forgejo: model.forgejo ? { url: model.forgejo.url } : null,
    gitea: model.gitea ? { url: model.gitea.url } : null,
  };
  return `${asciiJson(facts)}\n`;
}

/** JSON with every character outside printable ASCII escaped: the same value, in bytes YAML cannot misread. */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(/[^\x20-\x7e\n]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Printable ASCII and newlines: what `yaml` may write as it likes (plain, quoted or literal). */
const PLAIN_TEXT = /^[\x20-\x7e\n]*$/;

/** A YAML double-quoted scalar with every character outside printable ASCII escaped (YAML 1.1 escapes). */
export function escapedYamlString(value: string): string {
  let out = '"';
  for (const ch of value) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (code >= 0x20 && code <= 0x7e) out += ch;
    else if (code <= 0xff) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else if (code <= 0xffff) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else out += `\\U${code.toString(16).padStart(8, "0")}`;
  }
  return `${out}"`;
}

/**
 * Strings `yaml` would write raw although PyYAML reads them differently (line separators, C1
 * controls, lone surrogates): taken over by this tag, which writes them escaped.
 */
const ESCAPED_STRING: ScalarTag = {
  tag: "tag:yaml.org,2002:str",
  default: true,
  identify: (value: unknown) => typeof value === "string" && !PLAIN_TEXT.test(value),
  stringify: (item: Scalar) => escapedYamlString(String(item.value)),
  // Serialising only; parsing keeps yaml's own string tag.
  resolve: (text: string) => text,
};

/** The App key is allowed only under the opt-in, and only where fireactions mints runner configs. */
function appKeyAllowed(host: HostModel, model: FleetModel): boolean {
  return model.unsafe.githubAppKeyInUserData && host.roles.includes("fireactions");
}

function file(path: string, content: string, secret: boolean): WriteFile {
  return { path, content, owner: "root:root", permissions: secret ? "0600" : "0644" };
}

/** The files cloud-init writes, uncompressed. */
export function userDataFiles(input: UserDataInput): WriteFile[] {
  const { host, model } = input;
  const files = [
    file(PATHS.hostJson, renderHostJson(host, model), false),
    file(PATHS.poolsJson, input.poolsJson, false),
    // role_id alone grants nothing, but it is half a credential: keep it root-only.
    file(PATHS.roleId, input.roleId, true),
    file(PATHS.wrappedSecretId, input.wrappedSecretId, true),
  ];
  if (input.githubAppPrivateKey !== undefined) files.push(file(PATHS.githubAppKey, input.githubAppPrivateKey, true));
  return files;
}

/**
 * gzip, then base64. The gzip header's OS byte depends on the platform zlib was built for, so it is
 * pinned (255, "unknown"): the same content gives the same bytes wherever the plan runs.
 */
export function gzipBase64(content: string): string {
  const gz = gzipSync(Buffer.from(content, "utf8"), { level: 9 });
  gz[9] = 255;
  return gz.toString("base64");
}

/** A file whose content is not printable ASCII goes in as base64: its bytes cannot touch the YAML. */
function plainOrBase64(entry: WriteFile): WriteFile {
  if (entry.encoding || PLAIN_TEXT.test(entry.content)) return entry;
  return { path: entry.path, content: Buffer.from(entry.content, "utf8").toString("base64"), encoding: "b64", owner: entry.owner, permissions: entry.permissions };
}

function compressed(entry: WriteFile): WriteFile {
  return { path: entry.path, content: gzipBase64(entry.content), encoding: "gz+b64", owner: entry.owner, permissions: entry.permissions };
}

/** The #cloud-config document for a list of files. */
function serialise(input: UserDataInput, files: WriteFile[]): string {
  const doc = {
    // Only the deploy user, never the distro's default one. No password and a locked one: NixOS
    // images declare the same user, and cloud-init then only adds the keys.
    users: [
      {
        name: input.model.deploy.sshUser,
        lock_passwd: true,
        ssh_authorized_keys: input.model.ssh.authorizedKeys,
      },
    ],
    write_files: files.map(plainOrBase64),
    // `if` rather than `&&`: on stock images the line must succeed doing nothing.
    runcmd: [`if [ -x ${BOOTSTRAP} ]; then ${BOOTSTRAP}; fi`],
  };
  // YAML 1.1 because cloud-init reads with PyYAML: strings such as "no" or "0600" get quoted.
  // lineWidth 0: never fold a line; literal blocks keep JSON and PEM contents readable.
  return `#cloud-config\n${stringify(doc, { version: "1.1", lineWidth: 0, blockQuote: "literal", customTags: (tags) => [ESCAPED_STRING, ...tags] })}`;
}

function validate(input: UserDataInput): void {
  const { host, model } = input;
  const at = `user-data for host ${host.name}`;
  if (!input.roleId) throw new Error(`${at}: the Vault role_id is empty`);
  if (!input.wrappedSecretId) throw new Error(`${at}: the wrapped Vault secret_id is empty`);
  if (model.ssh.authorizedKeys.length === 0) throw new Error(`${at}: no SSH authorized keys (runner-fleet:ssh.authorizedKeys)`);
  if (input.githubAppPrivateKey !== undefined && !appKeyAllowed(host, model)) {
    throw new Error(`${at}: the GitHub App key may go into user-data only with unsafe.githubAppKeyInUserData on a fireactions host`);
  }
}

/**
 * Renders a host's user-data. When the plain document is over the cloud's limit, the largest
 * files are gzip+base64 encoded one at a time (pools.json first, usually) until it fits; a
 * document that fits is never compressed, so it stays readable in `plan --out`.
 */
export function renderUserData(input: UserDataInput): string {
  validate(input);
  const { host } = input;
  const files = userDataFiles(input);
  let doc = serialise(input, files);
  const limit = userDataLimit(host.provider);
  if (limit === undefined || userDataSize(doc) <= limit) return doc;

  const largestFirst = files
    .map((f, i) => ({ f, i }))
    .sort((a, b) => b.f.content.length - a.f.content.length || (a.f.path < b.f.path ? -1 : 1));
  for (const { f, i } of largestFirst) {
    const packed = compressed(f);
    if (packed.content.length >= f.content.length) continue;
    files[i] = packed;
    doc = serialise(input, files);
    if (userDataSize(doc) <= limit) return doc;
  }
  throw new Error(`user-data for host ${host.name} is ${userDataSize(doc)} bytes, over the ${host.provider} limit of ${limit} bytes even compressed`);
}
