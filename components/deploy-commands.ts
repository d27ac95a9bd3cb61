/**
 * Pure builders for the deploy step: the shell command of every remote step, the content
 * addresses that decide when a host is redeployed, and the rolling waves. No Pulumi here, so
 * all of it is tested directly (test/deploy.test.ts).
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { WriteFile } from "./cloud-init";
import type { DeployTool } from "./model";

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Quotes one word for POSIX sh (host names and addresses are safe already; flakes may not be). */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./#-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The command's failure message names the host, so a stopped rollout says where it stopped. */
function orFail(what: string): string {
  return `|| { echo ${shellQuote(what)} >&2; exit 1; }`;
}

// ---------------------------------------------------------------------------------------------
// Content addresses

/** `nix build` result links (result, result-image-x86_64...) and VCS/direnv state are not sources. */
function skipEntry(entry: fs.Dirent): boolean {
  if (entry.name === ".git" || entry.name === ".direnv") return true;
  return entry.isSymbolicLink() && /^result(-.*)?$/.test(entry.name);
}

/** Every file under `dir` except skipEntry's, relative to `dir`, sorted. */
function walkFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      if (skipEntry(entry)) continue;
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(relPath);
      else if (entry.isSymbolicLink() || entry.isFile()) out.push(relPath);
    }
  };
  walk("");
  return out;
}

/**
 * The files git tracks under `dir` (relative to it), or undefined when `dir` is not in a git
 * work tree (or git is missing). `--cached` lists the index: what a `git+file:` flake copies.
 */
export function gitTrackedFiles(dir: string): string[] | undefined {
  // Paths come relative to `dir` (git's working directory); -z: no quoting of odd names. The
  // checkout is the program's own (already trusted): a checkout owned by another user (CI
  // containers) must not silently fall back to the directory walk and change the hash.
  const r = spawnSync("git", ["-c", "safe.directory=*", "-c", "core.fsmonitor=false", "-C", dir, "ls-files", "-z", "--cached", "--", "."], { encoding: "buffer" });
  if (r.error || r.status !== 0) return undefined;
  return r.stdout.toString("utf8").split("\0").filter(Boolean);
}

/**
 * The content address of the flake's sources: what the flake sees, path and bytes, sorted.
 * In a git work tree Nix copies only tracked files (their working-tree bytes), so only those
 * count: an untracked file, or a flake.lock that a local `nix eval` writes next to an untracked
 * lock, changes nothing; the committed flake.lock is a source like any other. Outside git, Nix
 * copies the whole directory, so every file counts except result links.
 */
export function hashFlakeSources(dir: string): string {
  const hash = createHash("sha256");
  const files = (gitTrackedFiles(dir) ?? walkFiles(dir)).sort();
  for (const relPath of files) {
    const full = path.join(dir, relPath);
    let stat: fs.Stats;
    try {
      stat = fs.lstatSync(full);
    } catch {
      continue; // tracked but deleted in the work tree: the flake does not see it either
    }
    if (stat.isSymbolicLink()) hash.update(`link\0${relPath}\0${fs.readlinkSync(full)}\0`);
    else if (stat.isFile()) hash.update(`file\0${relPath}\0`).update(fs.readFileSync(full)).update("\0");
  }
  return hash.digest("hex");
}

/** True when the flake reference names a local directory (./nix, /srv/fleet/nix), not a URL. */
export function isLocalFlake(flake: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(flake);
}


// ---------------------------------------------------------------------------------------------
// Readiness

/** @pulumi/command's dial backoff (pulumi's retry.Until defaults): 100 ms, x1.5 per failed dial, capped at 5 s. */
const DIAL_FIRST_MS = 100;
const DIAL_FACTOR = 1.5;
const DIAL_CAP_MS = 5000;

/**
 * The dial limit whose backoff alone spans `minutes`. pulumi-command gives up once
 * `dials > dialErrorLimit` (connection.go reachedDialingErrorLimit), so a limit L allows L+1
 * failed dials with a wait after each of the first L: the limit is the number of waits. Slow
 * dials (each up to perDialTimeout) only reach the resource's custom timeout sooner, which is
 * the real bound.
 */
export function dialErrorLimitFor(minutes: number): number {
  const target = minutes * 60_000;
  let waited = 0;
  let delay = DIAL_FIRST_MS;
  let waits = 0;
  while (waited < target) {
    waited += delay;
    delay = Math.min(delay * DIAL_FACTOR, DIAL_CAP_MS);
    waits += 1;
  }
  return waits;
}

/** Total backoff before @pulumi/command gives up with dial limit `limit` (L+1 dials, L waits), in ms. */
export function dialBackoffMs(limit: number): number {
  let waited = 0;
  let delay = DIAL_FIRST_MS;
  for (let i = 0; i < limit; i++) {
    waited += delay;
    delay = Math.min(delay * DIAL_FACTOR, DIAL_CAP_MS);
  }
  return waited;
}

/**
 * Runs on the host once SSH answers: waits for cloud-init (where there is one: existing
 * machines have none) and for systemd to finish booting. A degraded system still counts as
 * up: the deploy that follows may be what repairs it.
 */
export function readinessCommand(host: string, minutes: number): string {
  const script = [
    "if command -v cloud-init >/dev/null 2>&1; then",
    `  cloud-init status --wait >/dev/null 2>&1 || echo "warning: cloud-init on ${host} finished with errors, see /var/log/cloud-init-output.log" >&2;`,
    "fi;",
    "state=$(systemctl is-system-running --wait 2>/dev/null || true);",
    `case "$state" in running|degraded) ;; *) echo "${host}: system state is $state" >&2; exit 1;; esac`,
  ].join(" ");
  return `timeout ${minutes}m sh -c ${shellQuote(script)} ${orFail(`${host} did not become ready within ${minutes} minutes`)}`;
}

// ---------------------------------------------------------------------------------------------
// Pinned SSH host keys (issue 14 item 7)

/** The environment variable a local command gets the host's pinned SSH host key in. */
export const HOST_KEY_ENV = "RF_HOST_KEY";

/** Host key types OpenSSH servers offer (no sk- types: those are user keys). */
const HOST_KEY_LINE = /^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) ([A-Za-z0-9+/]+={0,3})(\s.*)?$/;

/**
 * `type base64` of an OpenSSH public key line (comment dropped), or undefined when the line is
 * not one. pulumi-command's `hostKey` goes through ssh.ParseAuthorizedKey, which takes this form;
 * known_hosts takes it after the host pattern.
 */
export function normalizeHostKey(line: string): string | undefined {
  const m = HOST_KEY_LINE.exec(line.trim());
  return m ? `${m[1]} ${m[2]}` : undefined;
}

/** The address as ssh's HostName takes it: IPv4, IPv6 without brackets, or a DNS name. */
function checkedAddress(address: string): string {
  if (!/^[A-Za-z0-9.:-]+$/.test(address)) throw new Error(`${JSON.stringify(address)} is not an IP address or host name`);
  return address;
}

/**
 * Shell lines that pin the host key: check $RF_HOST_KEY, write it to "$work/known_hosts" under
 * the host's name, and set $ssh_opts for every ssh that follows. The tools connect to the host
 * NAME (`user@<host>`); `HostName` carries the address, so an IPv6 address never has to fit in
 * an `ssh://user@host` store URI (deploy-rs and nixos-anywhere build those from the name), and
 * `HostKeyAlias` makes the name the known_hosts key. Options are single-space separated: deploy-rs
 * splits --ssh-opts on ' ' and Nix splits NIX_SSHOPTS on whitespace.
 */
export function pinnedSshLines(host: string, address: string): string[] {
  const fail = (what: string) => `{ echo ${shellQuote(what)} >&2; exit 1; }`;
  return [
    `case "\${${HOST_KEY_ENV}:-}" in "ssh-ed25519 "*|"ecdsa-sha2-nistp"*|"ssh-rsa "*) ;; *) ${fail(`${host}: no pinned SSH host key`)};; esac`,
    `case "\${${HOST_KEY_ENV}:-}" in *[!A-Za-z0-9+/=\\ -]*) ${fail(`${host}: the pinned SSH host key is not one OpenSSH key line`)};; esac`,
    `case "$work" in *[!A-Za-z0-9/._-]*) ${fail("the temporary directory path has characters ssh options cannot carry")};; esac`,
    `printf '%s %s\\n' ${host} "$${HOST_KEY_ENV}" > "$work/known_hosts"`,
    `ssh_opts="-o HostName=${checkedAddress(address)} -o HostKeyAlias=${host} -o UserKnownHostsFile=$work/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o CheckHostIP=no -o BatchMode=yes -o ConnectTimeout=15"`,
  ];
}

/**
 * An `ssh` first on PATH that puts the pinned options before any the caller gives. nixos-anywhere
 * passes `-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no` ahead of `--ssh-option`s,
 * and ssh keeps the first value of an option, so --ssh-option cannot pin a key; nixos-anywhere
 * appends its own openssh to PATH (--suffix), so this wrapper is the ssh it and its nix run.
 */
export function pinnedSshWrapperLines(host: string): string[] {
  return [
    'real_ssh=$(command -v ssh) ' + orFail(`${host}: no ssh on PATH`),
    'mkdir "$work/bin"',
    `printf '#!/bin/sh\\nexec %s %s "$@"\\n' "$real_ssh" "$ssh_opts" > "$work/bin/ssh"`,
    'chmod 0755 "$work/bin/ssh"',
  ];
}

/** deploy.remoteBuild: where each host's system is built. */
export type RemoteBuildSetting = "auto" | "always" | "never";

/**
 * Shell lines that set $build_on_target to yes or no at run time: `auto` compares the host's arch
 * with the deploy machine's (`uname -m`; macOS says arm64), so the command text does not depend
 * on which machine runs it.
 */
function buildOnTargetLines(setting: RemoteBuildSetting, arch: string): string[] {
  if (setting === "always") return ["build_on_target=yes"];
  if (setting === "never") return ["build_on_target=no"];
  return [
    'here=$(uname -m); [ "$here" = arm64 ] && here=aarch64',
    `if [ "$here" = ${arch} ]; then build_on_target=no; else build_on_target=yes; fi`,
  ];
}

/**
 * A local command that prints the host's SSH host key once the host has published it to Vault
 * (KV v2 `<mount>/data/hosts/<host>/ssh-host-key`, field `public_key`), polling every 5 s up to
 * `minutes`. Node reads VAULT_TOKEN from the environment (or ~/.vault-token; never argv) and the address from
 * $RF_VAULT_ADDR; VAULT_NAMESPACE is sent when set and VAULT_CACERT becomes Node's extra CA file.
 * With $RF_EXPECT_KEY set, the published key must be that one (a stock host keeps the key it
 * was installed with: nixos-anywhere --copy-host-keys).
 */
export function hostKeyFromVaultCommand(host: string, apiPath: string, minutes: number): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(apiPath) || apiPath.includes("..")) throw new Error(`host ${host}: refusing Vault path ${JSON.stringify(apiPath)}`);
  const script = [
    "const env = process.env;",
    `const host = ${JSON.stringify(host)}, path = ${JSON.stringify(apiPath)};`,
    "const fail = (m) => { process.stderr.write(`${host}: ${m}\\n`); process.exit(1); };",
    // As the Vault provider and CLI: VAULT_TOKEN, else the token helper's ~/.vault-token.
    "let token = env.VAULT_TOKEN;",
    "if (!token) { try { token = require('fs').readFileSync(require('path').join(require('os').homedir(), '.vault-token'), 'utf8').trim(); } catch {} }",
    "if (!token) fail('VAULT_TOKEN is not set: the deploy reads the host key from Vault with it');",
    "const url = `${(env.RF_VAULT_ADDR || '').replace(/\\/+$/, '')}/v1/${path}`;",
    `const deadline = Date.now() + ${minutes * 60_000};`,
    "const headers = { 'X-Vault-Token': token, ...(env.VAULT_NAMESPACE ? { 'X-Vault-Namespace': env.VAULT_NAMESPACE } : {}) };",
    "const keyLine = /^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) ([A-Za-z0-9+/]+={0,3})(\\s.*)?$/;",
    "(async () => {",
    "  let last = 'no answer yet';",
    "  for (;;) {",
    "    try {",
    "      const res = await fetch(url, { headers, signal: AbortSignal.timeout(15000) });",
    "      if (res.status === 200) {",
    "        const m = keyLine.exec(String((await res.json())?.data?.data?.public_key ?? '').trim());",
    "        if (!m) fail(`the key published at ${path} is not an OpenSSH public key line`);",
    "        const key = `${m[1]} ${m[2]}`;",
    "        if (env.RF_EXPECT_KEY && env.RF_EXPECT_KEY !== key) fail(`the host key published at ${path} (${key}) is not the key this deploy pinned at first contact (${env.RF_EXPECT_KEY}): refusing to deploy`);",
    "        process.stdout.write(key);",
    "        return;",
    "      }",
    "      if (res.status === 403) fail(`Vault refused to read ${path} (403): the deploy token needs read on it`);",
    "      last = `Vault answered ${res.status}`;",
    "    } catch (e) { last = String(e?.cause?.code ?? e?.name ?? e); }",
    `    if (Date.now() > deadline) fail(\`no SSH host key at \${path} after ${minutes} minutes (\${last}); the host publishes it after unwrapping its secret_id: check its bootstrap, and that nobody else used the wrapped token\`);`,
    "    await new Promise((r) => setTimeout(r, 5000));",
    "  }",
    "})();",
  ].join("\n");
  return [
    'if [ -n "${VAULT_CACERT:-}" ]; then export NODE_EXTRA_CA_CERTS="$VAULT_CACERT"; fi',
    `exec node -e ${shellQuote(script)}`,
  ].join("\n");
}

/**
 * Trust on first use, for hosts nothing vouches for yet (stock images before their install,
 * existing machines without `hostKey`): the ed25519 key the address offers once SSH answers,
 * scanned every 5 s up to `minutes`. Every later connection pins it.
 */
export function hostKeyScanCommand(host: string, address: string, minutes: number): string {
  return [
    "set -eu",
    `deadline=$(( $(date +%s) + ${minutes * 60} ))`,
    "while :; do",
    `  key=$(timeout 30 ssh-keyscan -T 10 -t ed25519 ${checkedAddress(address)} 2>/dev/null | awk '$2 == "ssh-ed25519" { print $2 " " $3; exit }') || key=""`,
    '  if [ -n "$key" ]; then printf "%s" "$key"; exit 0; fi',
    `  [ "$(date +%s)" -lt "$deadline" ] ${orFail(`${host}: no SSH host key offered at ${address} within ${minutes} minutes`)}`,
    "  sleep 5",
    "done",
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// First install (stock images)

export interface InstallCommandArgs {
  host: string;
  /** Where the full output goes (DEPLOY_LOG_DIR unless given). */
  logDir?: string;
  address: string;
  flake: string;
  /** The deploy user, who must answer once the installed system has booted. */
  sshUser: string;
  /** The host's arch: `remoteBuild: auto` builds locally only on a machine of the same arch. */
  arch: string;
  /** deploy.remoteBuild: nixos-anywhere's --build-on. */
  remoteBuild: RemoteBuildSetting;
  installTimeoutMinutes: number;
  readyTimeoutMinutes: number;
  /**
   * Where /etc/runner-fleet comes from. `machine` (default): copied off the stock image, where
   * cloud-init wrote it. `stdin`: the host's seed files, ahead of the inventory on stdin in
   * installStdin's format; existing machines have no cloud-init to write them.
   */
  filesFrom?: "machine" | "stdin";
}

/** nixos-anywhere's --build-on for a remoteBuild setting (its own `auto` compares systems too). */
const BUILD_ON: Record<RemoteBuildSetting, string> = { auto: "auto", always: "remote", never: "local" };

/** Where the switch and install steps keep each host's full output (relative to the program directory). */
export const DEPLOY_LOG_DIR = ".runner-fleet/logs";
/**
 * The longest output line a step passes on. pulumi-command reads a command's output with a
 * bufio.Scanner (util/util.go LogOutput), whose limit is 64 KiB a line: a longer line stops the
 * reader, and the command then blocks on its output pipe until (and past) its timeout
 * (docs/upstream.md). Nix and the deploy tools can print such lines.
 */
export const MAX_OUTPUT_LINE = 4000;

/**
 * Every line of the script's stdout goes whole into `<logDir>/<host>-<step>.out.log` (stderr:
 * `.err.log`; one file each, as two writers appending long lines to one file interleave them)
 * and, cut to MAX_OUTPUT_LINE bytes with a note naming that file, on to the provider. The EXIT
 * trap puts the original streams back and waits for both filters, so the last line is never lost
 * and the script's exit status stays its own.
 */
export function boundedOutputLines(host: string, step: string, logDir = DEPLOY_LOG_DIR, beforeExit?: string): string[] {
  const filter = (stream: "out" | "err") => {
    const log = `${logDir}/${host}-${step}.${stream}.log`;
    return `LC_ALL=C awk -v max=${MAX_OUTPUT_LINE} -v file=${shellQuote(log)} '{ print > file; fflush(file); if (length($0) > max) $0 = substr($0, 1, max) " [line of " length($0) " bytes cut; whole in " file "]"; print; fflush() }' < "$work/std${stream}"`;
  };
  return [
    `mkdir -p ${shellQuote(logDir)}`,
    'mkfifo "$work/stdout" "$work/stderr"',
    `${filter("out")} &`,
    `${filter("err")} >&2 &`,
    'exec 3>&1 4>&2 >"$work/stdout" 2>"$work/stderr"',
    `trap '${beforeExit ? `${beforeExit}; ` : ""}exec 1>&3 2>&4; wait; rm -rf "$work"' EXIT`,
  ];
}

/**
 * nixos-anywhere onto a stock image, run on the deploy machine. The host's inventory.json
 * arrives on stdin (after the seed files, with `filesFrom: "stdin"`), its pinned host key in
 * $RF_HOST_KEY. Steps:
 *  1. Pin the host key: every ssh below, and nixos-anywhere's (through an ssh wrapper first on
 *     PATH), checks it strictly; nothing reaches a host that cannot show it.
 *  2. Never wipe a host twice: one that already runs NixOS (the deploy user can log in and
 *     /etc/NIXOS exists) is skipped, so a re-run (any input change re-runs a command) never
 *     reinstalls a live host.
 *  3. Gather /etc/runner-fleet (host facts, pools.json, role_id, wrapped secret_id) in a private
 *     temp dir (mktemp -d: 0700) for `--extra-files`: the reinstall wipes the disk, and the
 *     wrapped secret_id exists nowhere else. Cloud hosts: tar over SSH off the stock image (tar
 *     keeps the 0600 modes). Existing machines: decoded from stdin. The files never pass through
 *     a log. The tree's directories are 0755 like the target's: nixos-anywhere extracts it over
 *     the new root, and tar running as root gives existing directories the archive's modes.
 *  4. nixos-anywhere, under a timeout (its SSH waits have none). `--option pure-eval false` is
 *     nixos-anywhere's spelling of --impure (it forwards --option to every nix command), so the
 *     flake reads $RUNNER_FLEET_INVENTORY. `--copy-host-keys` keeps the host's SSH identity, so
 *     the pinned key stays valid. The flake attribute is the bare name: nixos-anywhere quotes it
 *     itself (nixosConfigurations."<name>").
 *  5. Wait, bounded, until the deploy user can log in to the installed system.
 */
export function installCommand(a: InstallCommandArgs): string {
  const root = `root@${a.host}`;
  const deployLogin = `${a.sshUser}@${a.host}`;
  const target = shellQuote(`${a.flake}#${a.host}`);
  const fromStdin = a.filesFrom === "stdin";
  const facts = fromStdin
    ? `install of ${a.host}: the seed files carry no /etc/runner-fleet/host.json`
    : `no /etc/runner-fleet/host.json on ${a.host}: cloud-init did not write the host facts`;
  return [
    "set -eu",
    "umask 077",
    'work=$(mktemp -d)',
    'trap \'rm -rf "$work"\' EXIT',
    ...boundedOutputLines(a.host, "install", a.logDir),
    ...pinnedSshLines(a.host, a.address),
    'mkdir -m 0755 "$work/files" "$work/files/etc"',
    ...(fromStdin ? [
      // One file per line, `<mode> <path> <base64>`, up to an empty line; printf is a shell
      // builtin, so the wrapped token never shows up in a process list.
      'while read -r mode file data; do',
      '  [ -n "$mode" ] || break',
      '  mkdir -p "$work/files${file%/*}"',
      `  printf '%s' "$data" | base64 --decode > "$work/files$file" ${orFail(`install of ${a.host}: could not decode the seed files`)}`,
      '  chmod "$mode" "$work/files$file"',
      "done",
      // vault/ stays 0700, as tmpfiles makes it on the host.
      'if [ -d "$work/files/etc/runner-fleet" ]; then chmod 0755 "$work/files/etc/runner-fleet"; fi',
    ] : []),
    'cat > "$work/inventory.json"',
    'export RUNNER_FLEET_INVENTORY="$work/inventory.json"',
    `if timeout 1m ssh $ssh_opts ${deployLogin} test -e /etc/NIXOS 2>/dev/null; then echo "${a.host} already runs NixOS: install skipped"; exit 0; fi`,
    ...(fromStdin ? [] : [
      // Into a file first: a pipe would hide ssh's exit status, and a host without the directory sends nothing.
      `timeout 5m ssh $ssh_opts ${root} 'if [ -d /etc/runner-fleet ]; then tar -C /etc -cf - runner-fleet; fi' > "$work/etc.tar" ${orFail(`install of ${a.host}: could not copy /etc/runner-fleet off the stock image`)}`,
      'if [ -s "$work/etc.tar" ]; then tar -C "$work/files/etc" -xpf "$work/etc.tar"; fi',
      'rm -f "$work/etc.tar"',
    ]),
    `test -s "$work/files/etc/runner-fleet/host.json" ${orFail(facts)}`,
    ...pinnedSshWrapperLines(a.host),
    `PATH="$work/bin:$PATH" timeout ${a.installTimeoutMinutes}m nixos-anywhere --flake ${target} --option pure-eval false --build-on ${BUILD_ON[a.remoteBuild]} --copy-host-keys --extra-files "$work/files" ${root} ${orFail(`install of ${a.host} failed`)}`,
    `deadline=$(( $(date +%s) + ${a.readyTimeoutMinutes * 60} ))`,
    `until timeout 1m ssh $ssh_opts ${deployLogin} true 2>/dev/null; do [ "$(date +%s)" -lt "$deadline" ] ${orFail(`${a.host} did not come back as NixOS within ${a.readyTimeoutMinutes} minutes of its install`)}; sleep 5; done`,
  ].join("\n");
}

/**
 * stdin of an install with `filesFrom: "stdin"`: the seed files, one line each as
 * `<mode> <path> <base64 content>`, an empty line, then the inventory. The files are the seed
 * document the seed step sends, so both ways onto a machine carry the same bytes.
 */
export function installStdin(seedJson: string, inventoryJson: string): string {
  const lines = parseSeedJson(seedJson).map((f) => `${f.mode} ${f.path} ${Buffer.from(f.content, "utf8").toString("base64")}`);
  return `${lines.join("\n")}\n\n${inventoryJson}`;
}

// ---------------------------------------------------------------------------------------------
// Seed (existing machines: the files cloud-init writes everywhere else)

/** One file for runner-fleet-seed (docs/contracts.md). */
export interface SeedFile {
  path: string;
  /** Octal, as cloud-init's `permissions` ("0600", "0644"). */
  mode: string;
  content: string;
}

/** Where runner-fleet-seed may write; the host side enforces the same. */
export const SEED_DIR = "/etc/runner-fleet/";

/** The wrapped secret_id: single use and short-lived, so it never decides whether the seed runs. */
const SEED_WRAPPED_SECRET_ID = `${SEED_DIR}vault/wrapped-secret-id`;

/**
 * Files that do not re-run the seed. The wrapped secret_id changes whenever Vault mints a new
 * one, which the host does not need once it has unwrapped; the GitHub App key is a secret (no
 * hash of it in state); pools.json has its own push (DESIGN rule 1: a pool edit touches only that).
 */
export const SEED_UNTRIGGERED: readonly string[] = [SEED_WRAPPED_SECRET_ID, `${SEED_DIR}github-app-key.pem`, `${SEED_DIR}pools.json`];

/** Why a seed path is refused, or undefined: under /etc/runner-fleet/, plain names, no `.`/`..`. */
export function seedPathProblem(p: string): string | undefined {
  if (!p.startsWith(SEED_DIR)) return `${JSON.stringify(p)} is not under ${SEED_DIR}`;
  const parts = p.slice(SEED_DIR.length).split("/");
  if (parts.some((part) => part === "" || part === "." || part === "..")) return `${JSON.stringify(p)} has an empty, . or .. component`;
  if (!/^[A-Za-z0-9._/-]+$/.test(p)) return `${JSON.stringify(p)} has characters other than letters, digits and ._-/`;
  return undefined;
}

/** Octal like "0644"; never executable or writable by group or others (the host side refuses those too). */
function modeProblem(mode: unknown): string | undefined {
  if (typeof mode !== "string" || !/^0[0-7]{3}$/.test(mode)) return `mode ${JSON.stringify(mode)} is not octal like 0644`;
  return parseInt(mode, 8) & 0o133 ? `mode ${mode} is executable or writable by group or others` : undefined;
}

/**
 * The seed document of a host that has a pools push: without pools.json, which the push (right
 * after the seed) delivers. Otherwise every pool edit would change the seed's stdin as well, and
 * preview and up would show an update of the seed next to the push (DESIGN rule 1: a pool edit
 * changes only that host's pools push).
 */
export function seedWithoutPools(seedJson: string): string {
  return JSON.stringify({ files: parseSeedJson(seedJson).filter((f) => f.path !== `${SEED_DIR}pools.json`) });
}

/** Validates a seed document; throws naming the first bad file. */
export function parseSeedJson(seedJson: string): SeedFile[] {
  const doc = JSON.parse(seedJson) as { files?: unknown };
  if (!Array.isArray(doc.files)) throw new Error("seed: files must be an array");
  const seen = new Set<string>();
  return doc.files.map((f: SeedFile, i: number) => {
    const problem = seedPathProblem(String(f?.path)) ??
      (seen.has(f.path) ? `${f.path} appears twice` : undefined) ??
      modeProblem(f?.mode) ??
      (typeof f?.content === "string" ? undefined : "content must be a string");
    if (problem) throw new Error(`seed: files[${i}]: ${problem}`);
    seen.add(f.path);
    return { path: f.path, mode: f.mode, content: f.content };
  });
}

/** The document runner-fleet-seed reads, from the files user-data carries (cloud-init.ts userDataFiles). */
export function renderSeedJson(files: readonly WriteFile[]): string {
  const seed = files.map((f): SeedFile => {
    if (f.encoding) throw new Error(`seed: ${f.path} is encoded (${f.encoding}); pass the plain files`);
    return { path: f.path, mode: f.permissions, content: f.content };
  });
  const json = JSON.stringify({ files: seed });
  parseSeedJson(json); // the checks the install and the host apply, before anything leaves
  return json;
}

/**
 * What re-runs the seed: every file except SEED_UNTRIGGERED (host facts, role_id). The hash
 * covers no secret, so it may stay readable in state and diffs.
 */
export function seedTriggerHash(seedJson: string): string {
  const kept = parseSeedJson(seedJson).filter((f) => !SEED_UNTRIGGERED.includes(f.path));
  return sha256(JSON.stringify(kept));
}

/** Remote: install the seed files on stdin and bootstrap. The deploy user may sudo exactly this command. */
export function seedCommand(host: string, minutes = 10): string {
  return `timeout ${minutes}m sudo -n /run/current-system/sw/bin/runner-fleet-seed ${orFail(`seeding ${host} failed`)}`;
}

// ---------------------------------------------------------------------------------------------
// Switch

export interface SwitchCommandArgs {
  tool: DeployTool;
  host: string;
  /** Where the full output goes (DEPLOY_LOG_DIR unless given). */
  logDir?: string;
  address: string;
  flake: string;
  sshUser: string;
  /** The host's arch: `remoteBuild: auto` builds on the target when it differs from the deploy machine's. */
  arch: string;
  /** deploy.remoteBuild. */
  remoteBuild: RemoteBuildSetting;
  /** Activate on next boot instead of now. */
  boot: boolean;
  /**
   * `switch-to-configuration test` instead: active now, no boot entry, so a reboot reverts it
   * (hosts.<name>.trial, or RUNNER_FLEET_ACTIVATION=test for one run). Wins over `boot`.
   */
  trial?: boolean;
  confirmTimeout: number;
  activationTimeout: number;
  switchTimeoutMinutes: number;
  /** deploy.drainTimeoutMinutes: how long the drain before a runner restart waits for jobs. */
  drainTimeoutMinutes?: number;
  /** deploy.drainProceedOnTimeout: restart anyway when jobs are still running at the timeout. */
  drainProceedOnTimeout?: boolean;
}

export type Activation = "switch" | "boot" | "test";
export const activationOf = (a: Pick<SwitchCommandArgs, "boot" | "trial">): Activation => (a.trial ? "test" : a.boot ? "boot" : "switch");

/**
 * The deploy tool's own command line (no timeout, no inventory plumbing). It runs in switchCommand's
 * shell, which sets $ssh_opts (pinned host key, address) and $build_on_target.
 */
export function deployToolCommand(a: SwitchCommandArgs): string {
  if (a.trial && a.tool === "deploy-rs") {
    // deploy-rs has no `test` activation: build the toplevel, copy it over the pinned SSH and
    // run its switch-to-configuration test (the deploy user's sudo rule allows exactly that).
    return [
      `toplevel=$(nix build --no-link --print-out-paths --impure ${shellQuote(toplevelAttr(a))})`,
      `NIX_SSHOPTS="$ssh_opts" nix copy --to ${shellQuote(`ssh://${a.sshUser}@${a.host}`)} "$toplevel"`,
      `ssh $ssh_opts ${a.sshUser}@${a.host} sudo -n "$toplevel/bin/switch-to-configuration" test`,
    ].join(" && ");
  }
  if (a.tool === "deploy-rs") {
    // --hostname overrides every node of an invocation: exactly one node per invocation. It is
    // the host's name; $ssh_opts maps it to the address (HostName) and pins its key, replacing
    // the node's sshOpts (deploy-rs: a --ssh-opts override replaces them).
    // --boot activates nothing now, so there is no connection to confirm: magic rollback off.
    // The node name is quoted: deploy-rs parses the fragment as Nix, where 1runner is no identifier.
    return [
      "deploy --skip-checks",
      `--hostname ${a.host}`,
      `--ssh-user ${a.sshUser}`,
      '--ssh-opts "$ssh_opts"',
      '$remote_build',
      `--magic-rollback ${a.boot ? "false" : "true"}`,
      "--auto-rollback true",
      ...(a.boot ? [] : [`--confirm-timeout ${a.confirmTimeout}`]),
      `--activation-timeout ${a.activationTimeout}`,
      ...(a.boot ? ["--boot"] : []),
      shellQuote(`${a.flake}#"${a.host}"`),
      "-- --impure",
    ].join(" ");
  }
  // colmena finds the hive in the flake of its working directory; SSH_CONFIG_FILE (colmena adds
  // `-F` with it) pins the key and maps the target to the address.
  return `cd ${shellQuote(a.flake)} && colmena apply ${activationOf(a)} --on ${a.host} $remote_build --impure`;
}

/** The flake attribute of a host's NixOS system (what both tools activate). */
function toplevelAttr(a: Pick<SwitchCommandArgs, "flake" | "host">): string {
  return `${a.flake}#nixosConfigurations."${a.host}".config.system.build.toplevel`;
}

/**
 * One evaluation of the host's system for the whole switch: $want (its toplevel, what the host
 * must run afterwards) and $boot_want (its kernel, initrd and kernel modules, for the reboot
 * check). Each `nix eval` of a NixOS configuration evaluates the whole module system again, so
 * the checks share one instead of evaluating it up to three times per host.
 */
export function systemEvalLines(a: Pick<SwitchCommandArgs, "flake" | "host">): string[] {
  const apply = 'h: let c = h.config; in "${c.system.build.toplevel} ${c.boot.kernelPackages.kernel}/${c.system.boot.loader.kernelFile} ${c.system.build.initialRamdisk}/${c.system.boot.loader.initrdFile} ${c.system.modulesTree}"';
  return [
    `system=$(nix eval --raw --impure ${shellQuote(`${a.flake}#nixosConfigurations."${a.host}"`)} --apply ${shellQuote(apply)}) ${orFail(`${a.host}: evaluating its system failed`)}`,
    'set -- $system',
    `[ $# -eq 4 ] || { echo "${a.host}: evaluating its system gave $# paths, not its toplevel, kernel, initrd and modules" >&2; exit 1; }`,
    'want=$1; boot_want="$2 $3 $4"',
  ];
}

/**
 * Our own ssh calls around the tool (the reboot check, the post-switch checks and restart) share
 * one connection: each new one costs a key exchange, and they sit on the wave's critical path.
 * The deploy tool never gets these options: deploy-rs' magic rollback must prove that a *new*
 * connection still works after activation. The master closes when the switch exits (the trap),
 * or after 60 s idle if the script is killed. The reboot path opens fresh connections too.
 */
const MUX_LINE = 'mux_opts="-o ControlMaster=auto -o ControlPath=$work/mux -o ControlPersist=60"';
const MUX_CLOSE = '[ -S "$work/mux" ] && ssh -o ControlPath="$work/mux" -O exit mux 2>/dev/null';

/**
 * Before a switch: does the new system need a reboot? Its kernel, initrd and kernel modules
 * (what NixOS links as <toplevel>/kernel, /initrd, /kernel-modules) against the running boot's
 * (/run/booted-system). Sets $reboot and says which host reboots and why. A host without
 * /run/booted-system (no NixOS boot yet) does not reboot.
 */
export function rebootCheckLines(a: SwitchCommandArgs): string[] {
  return [
    "reboot=no",
    `boot_have=$(ssh $ssh_opts $mux_opts ${a.sshUser}@${a.host} 'for l in kernel initrd kernel-modules; do readlink -f /run/booted-system/$l || echo -; done' 2>/dev/null | tr '\n' ' ') || boot_have=""`,
    'set -- $boot_have',
    'if [ $# -eq 3 ] && [ "$1" != - ]; then',
    '  why=""',
    '  i=0; for w in $boot_want; do',
    '    i=$((i + 1)); eval "h=\\${$i}"',
    '    case $i in 1) n=kernel;; 2) n=initrd;; *) n="kernel modules";; esac',
    '    [ "$w" = "$h" ] || why="${why:+$why, }$n"',
    '  done',
    `  if [ -n "$why" ]; then reboot=yes; echo "${a.host}: reboots: its $why differ from /run/booted-system"; fi`,
    "fi",
  ];
}

/**
 * The reboot path: after a `boot` activation, the profile must be the new system; then the host
 * drains and reboots (runner-fleet-reboot), and the wave waits until it runs the new system at
 * its pinned host key (every ssh here uses $ssh_opts), bounded by the switch timeout.
 */
export function rebootLines(a: SwitchCommandArgs): string[] {
  const ssh = `ssh $ssh_opts ${a.sshUser}@${a.host}`;
  const drain = [`--timeout-minutes ${a.drainTimeoutMinutes ?? 60}`, ...(a.drainProceedOnTimeout ? ["--proceed-on-timeout"] : [])].join(" ");
  return [
    `have=$(${ssh} readlink -f /nix/var/nix/profiles/system) ${orFail(`${a.host}: cannot read /nix/var/nix/profiles/system`)}`,
    `[ "$have" = "$want" ] || { echo "${a.host}: /nix/var/nix/profiles/system is $have, not the system it was given ($want): the deploy did not take" >&2; exit 1; }`,
    // The drain fails (and nothing reboots) when jobs still run at the timeout.
    `rc=0; ${ssh} sudo -n /run/current-system/sw/bin/runner-fleet-reboot ${drain} || rc=$?`,
    // 255: the connection dropped as the host went down; anything else from the drain is a failure.
    'case $rc in 0|255) ;; *) exit 1;; esac',
    `deadline=$(( $(date +%s) + ${a.switchTimeoutMinutes * 60} ))`,
    `until [ "$(${ssh} readlink -f /run/booted-system 2>/dev/null)" = "$want" ]; do`,
    `  [ "$(date +%s)" -lt "$deadline" ] || { echo "${a.host}: did not come back running $want within ${a.switchTimeoutMinutes} minutes" >&2; exit 1; }`,
    "  sleep 5",
    "done",
    `echo "${a.host}: rebooted into $want"`,
  ];
}

/**
 * After the tool: the host must run the system it was given ($want, systemEvalLines; deploy-rs can exit 0 after rolling
 * back, deploy-rs issue #214), then the runner units the switch left alone (restartIfChanged =
 * false) restart where they changed, fireactions after a drain (runner-fleet-restart-changed).
 * `switch` checks /run/current-system and the system profile, `test` the first, `boot` the second.
 */
export function postSwitchLines(a: SwitchCommandArgs): string[] {
  const activation = activationOf(a);
  const ssh = `ssh $ssh_opts $mux_opts ${a.sshUser}@${a.host}`;
  const links = activation === "test" ? ["/run/current-system"] : activation === "boot" ? ["/nix/var/nix/profiles/system"] : ["/run/current-system", "/nix/var/nix/profiles/system"];
  const lines: string[] = [];
  for (const link of links) {
    lines.push(
      `have=$(${ssh} readlink -f ${link}) ${orFail(`${a.host}: cannot read ${link}`)}`,
      `[ "$have" = "$want" ] || { echo "${a.host}: ${link} is $have, not the system it was given ($want): the deploy did not take (rolled back?)" >&2; exit 1; }`,
    );
  }
  if (activation !== "boot") {
    const drain = [`--timeout-minutes ${a.drainTimeoutMinutes ?? 60}`, ...(a.drainProceedOnTimeout ? ["--proceed-on-timeout"] : [])].join(" ");
    // The drain prints its own `<host>: N jobs still running ...` line on timeout.
    lines.push(`${ssh} sudo -n /run/current-system/sw/bin/runner-fleet-restart-changed ${drain} || exit 1`);
  }
  return lines;
}

/**
 * ssh_config for colmena: its own `-o StrictHostKeyChecking=accept-new` comes first and wins, but
 * accept-new refuses a key that differs from a known one, and this file makes the pinned key the
 * known one. The block matches the host's name and its address (the hive's targetHost).
 */
function colmenaSshConfigLines(host: string, address: string): string[] {
  return [
    `printf '%s\\n' 'Host ${host} ${checkedAddress(address)}' '  HostName ${address}' '  HostKeyAlias ${host}' "  UserKnownHostsFile $work/known_hosts" '  GlobalKnownHostsFile /dev/null' '  StrictHostKeyChecking yes' '  CheckHostIP no' '  BatchMode yes' '  ConnectTimeout 15' > "$work/ssh_config"`,
    'export SSH_CONFIG_FILE="$work/ssh_config"',
  ];
}

/**
 * The whole switch step: inventory.json from stdin into a private temp file (never on the
 * command line), RUNNER_FLEET_INVENTORY pointing at it, the host key pinned ($RF_HOST_KEY), the
 * build placed per remoteBuild, the tool under a timeout, and a failure that names the host.
 */
export function switchCommand(a: SwitchCommandArgs): string {
  const remoteFlag = a.tool === "deploy-rs"
    ? ['if [ "$build_on_target" = yes ]; then remote_build=--remote-build; else remote_build=; fi']
    : ['if [ "$build_on_target" = yes ]; then remote_build=--build-on-target; else remote_build=--no-build-on-target; fi'];
  return [
    "set -eu",
    "umask 077",
    'work=$(mktemp -d)',
    'trap \'rm -rf "$work"\' EXIT',
    ...boundedOutputLines(a.host, "switch", a.logDir, MUX_CLOSE),
    ...pinnedSshLines(a.host, a.address),
    MUX_LINE,
    ...(a.tool === "colmena" ? colmenaSshConfigLines(a.host, a.address) : []),
    ...buildOnTargetLines(a.remoteBuild, a.arch),
    ...remoteFlag,
    // The tool runs in its own sh (so the timeout covers all of it): hand it the options.
    "export ssh_opts remote_build",
    'cat > "$work/inventory.json"',
    'export RUNNER_FLEET_INVENTORY="$work/inventory.json"',
    ...systemEvalLines(a),
    ...(activationOf(a) === "switch" ? [
      ...rebootCheckLines(a),
      'if [ "$reboot" = yes ]; then',
      `  ( timeout ${a.switchTimeoutMinutes}m sh -c ${shellQuote(deployToolCommand({ ...a, boot: true }))} ) ${orFail(`deploy of ${a.host} failed`)}`,
      ...rebootLines(a).map((l) => `  ${l}`),
      "else",
      `  ( timeout ${a.switchTimeoutMinutes}m sh -c ${shellQuote(deployToolCommand(a))} ) ${orFail(`deploy of ${a.host} failed`)}`,
      ...postSwitchLines(a).map((l) => `  ${l}`),
      "fi",
    ] : [
      `( timeout ${a.switchTimeoutMinutes}m sh -c ${shellQuote(deployToolCommand(a))} ) ${orFail(`deploy of ${a.host} failed`)}`,
      ...postSwitchLines(a),
    ]),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Pools

/** Remote: install the pools.json on stdin. The deploy user may sudo exactly this command. */
export function poolsCommand(host: string, minutes = 10): string {
  return `timeout ${minutes}m sudo -n /run/current-system/sw/bin/runner-fleet-apply-pools ${orFail(`pool update on ${host} failed`)}`;
}

/**
 * Remote, on delete: drain the host before it goes (runner-fleet-retire: fireactions drained and
 * left paused, forgejo/gitea runners stopped after their running jobs). A timeout fails the
 * delete, so the machine stays.
 */
export function retireCommand(host: string, drainTimeoutMinutes: number, proceedOnTimeout: boolean): string {
  const opts = [`--timeout-minutes ${drainTimeoutMinutes}`, ...(proceedOnTimeout ? ["--proceed-on-timeout"] : [])].join(" ");
  return `timeout ${drainTimeoutMinutes + 1}m sudo -n /run/current-system/sw/bin/runner-fleet-retire ${opts} ${orFail(`${host}: draining before removal failed; the machine was not removed`)}`;
}

// ---------------------------------------------------------------------------------------------
// Config checks the deploy needs (called from config.ts validateFleet, before any resource)


// ---------------------------------------------------------------------------------------------
// Waves

/** Hosts in the given order, `batchSize` per wave. */
export function deployWaves<T>(hosts: T[], batchSize: number): T[][] {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`deploy.batchSize must be a positive integer (got ${batchSize})`);
  const waves: T[][] = [];
  for (let i = 0; i < hosts.length; i += batchSize) waves.push(hosts.slice(i, i + batchSize));
  return waves;
}

/**
 * The engine runs at most `--parallel` resource operations at once (default 4 x CPUs; the
 * language host hands it to the program as PULUMI_NODEJS_PARALLEL). A wave needs its batchSize
 * switches at once, plus the previous wave's seeds and pool pushes, which overlap it: below
 * 2 x batchSize the engine queues part of a wave and the rollout takes longer than waves x
 * switch time. Undefined when the engine's limit is unknown (offline plans) or large enough.
 */
export function parallelWarning(batchSize: number, hosts: number, parallel: number | undefined): string | undefined {
  if (parallel === undefined || !Number.isInteger(parallel) || parallel < 1) return undefined;
  const needed = 2 * Math.min(batchSize, hosts);
  if (parallel >= needed) return undefined;
  return `deploy.batchSize is ${batchSize} but the engine runs only ${parallel} operations at once: part of each wave waits. ` +
    `Run pulumi up --parallel ${needed} (or set PULUMI_PARALLEL=${needed})`;
}
