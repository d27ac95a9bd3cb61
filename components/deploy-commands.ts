/**
 * Pure builders for the deploy step: the shell command of every remote step, the content
 * addresses that decide when a host is redeployed, and the rolling waves. No Pulumi here, so
 * all of it is tested directly (test/deploy.test.ts).
 */
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

/**
 * The content address of the flake's sources: every file under `dir` (path and bytes), sorted,
 * without result links. Any edit under nix/ changes it; building an image does not.
 */
export function hashFlakeSources(dir: string): string {
  const hash = createHash("sha256");
  const walk = (rel: string) => {
    const entries = fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (skipEntry(entry)) continue;
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      const full = path.join(dir, relPath);
      if (entry.isDirectory()) walk(relPath);
      else if (entry.isSymbolicLink()) hash.update(`link\0${relPath}\0${fs.readlinkSync(full)}\0`);
      else if (entry.isFile()) hash.update(`file\0${relPath}\0`).update(fs.readFileSync(full)).update("\0");
    }
  };
  walk("");
  return hash.digest("hex");
}

/** True when the flake reference names a local directory (./nix, /srv/fleet/nix), not a URL. */
export function isLocalFlake(flake: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(flake);
}


// ---------------------------------------------------------------------------------------------
// Readiness

/** @pulumi/command's dial backoff: 100 ms, x1.5 per failed dial, capped at 5 s. */
const DIAL_FIRST_MS = 100;
const DIAL_FACTOR = 1.5;
const DIAL_CAP_MS = 5000;

/**
 * How many failed dials to allow so the backoff alone spans `minutes` (the limit counts
 * errors; there is one wait fewer than errors). Slow dials (each up to perDialTimeout) only
 * reach the resource's custom timeout sooner, which is the real bound.
 */
export function dialErrorLimitFor(minutes: number): number {
  const target = minutes * 60_000;
  let waited = 0;
  let delay = DIAL_FIRST_MS;
  let errors = 1;
  while (waited < target) {
    waited += delay;
    delay = Math.min(delay * DIAL_FACTOR, DIAL_CAP_MS);
    errors += 1;
  }
  return errors;
}

/** Total backoff before @pulumi/command gives up after `limit` dial errors, in ms. */
export function dialBackoffMs(limit: number): number {
  let waited = 0;
  let delay = DIAL_FIRST_MS;
  for (let i = 1; i < limit; i++) {
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
// First install (stock images)

/** Fresh hosts have unknown host keys; nixos-anywhere does the same for its own connections. */
const NEW_HOST_SSH = "-o BatchMode=yes -o ConnectTimeout=15 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null";

export interface InstallCommandArgs {
  host: string;
  address: string;
  flake: string;
  /** The deploy user, who must answer once the installed system has booted. */
  sshUser: string;
  installTimeoutMinutes: number;
  readyTimeoutMinutes: number;
  /**
   * Where /etc/runner-fleet comes from. `machine` (default): copied off the stock image, where
   * cloud-init wrote it. `stdin`: the host's seed files, ahead of the inventory on stdin in
   * installStdin's format; existing machines have no cloud-init to write them.
   */
  filesFrom?: "machine" | "stdin";
}

/**
 * nixos-anywhere onto a stock image, run on the deploy machine. The host's inventory.json
 * arrives on stdin (after the seed files, with `filesFrom: "stdin"`). Steps:
 *  1. Never wipe a host twice: one that already runs NixOS (the deploy user can log in and
 *     /etc/NIXOS exists) is skipped, so a re-run (any input change re-runs a command) never
 *     reinstalls a live host.
 *  2. Gather /etc/runner-fleet (host facts, pools.json, role_id, wrapped secret_id) in a private
 *     temp dir (mktemp -d: 0700) for `--extra-files`: the reinstall wipes the disk, and the
 *     wrapped secret_id exists nowhere else. Cloud hosts: tar over SSH off the stock image (tar
 *     keeps the 0600 modes). Existing machines: decoded from stdin. The files never pass through
 *     a log. The tree's directories are 0755 like the target's: nixos-anywhere extracts it over
 *     the new root, and tar running as root gives existing directories the archive's modes.
 *  3. nixos-anywhere, under a timeout (its SSH waits have none). `--option pure-eval false` is
 *     nixos-anywhere's spelling of --impure (it forwards --option to every nix command), so the
 *     flake reads $RUNNER_FLEET_INVENTORY. `--copy-host-keys` keeps the host's SSH identity.
 *  4. Wait, bounded, until the deploy user can log in to the installed system.
 */
export function installCommand(a: InstallCommandArgs): string {
  const root = `root@${a.address}`;
  const deployLogin = `${a.sshUser}@${a.address}`;
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
    `if timeout 1m ssh ${NEW_HOST_SSH} ${deployLogin} test -e /etc/NIXOS 2>/dev/null; then echo "${a.host} already runs NixOS: install skipped"; exit 0; fi`,
    ...(fromStdin ? [] : [
      // Into a file first: a pipe would hide ssh's exit status, and a host without the directory sends nothing.
      `timeout 5m ssh ${NEW_HOST_SSH} ${root} 'if [ -d /etc/runner-fleet ]; then tar -C /etc -cf - runner-fleet; fi' > "$work/etc.tar" ${orFail(`install of ${a.host}: could not copy /etc/runner-fleet off the stock image`)}`,
      'if [ -s "$work/etc.tar" ]; then tar -C "$work/files/etc" -xpf "$work/etc.tar"; fi',
      'rm -f "$work/etc.tar"',
    ]),
    `test -s "$work/files/etc/runner-fleet/host.json" ${orFail(facts)}`,
    `timeout ${a.installTimeoutMinutes}m nixos-anywhere --flake ${target} --option pure-eval false --copy-host-keys --extra-files "$work/files" ${root} ${orFail(`install of ${a.host} failed`)}`,
    `deadline=$(( $(date +%s) + ${a.readyTimeoutMinutes * 60} ))`,
    `until timeout 1m ssh ${NEW_HOST_SSH} ${deployLogin} true 2>/dev/null; do [ "$(date +%s)" -lt "$deadline" ] ${orFail(`${a.host} did not come back as NixOS within ${a.readyTimeoutMinutes} minutes of its install`)}; sleep 5; done`,
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
  address: string;
  flake: string;
  sshUser: string;
  /** Activate on next boot instead of now. */
  boot: boolean;
  confirmTimeout: number;
  activationTimeout: number;
  switchTimeoutMinutes: number;
}

/** The deploy tool's own command line (no timeout, no inventory plumbing). */
export function deployToolCommand(a: SwitchCommandArgs): string {
  if (a.tool === "deploy-rs") {
    // --hostname overrides every node of an invocation: exactly one node per invocation.
    // --boot activates nothing now, so there is no connection to confirm: magic rollback off.
    return [
      "deploy --skip-checks",
      `--hostname ${a.address}`,
      `--ssh-user ${a.sshUser}`,
      `--magic-rollback ${a.boot ? "false" : "true"}`,
      "--auto-rollback true",
      ...(a.boot ? [] : [`--confirm-timeout ${a.confirmTimeout}`]),
      `--activation-timeout ${a.activationTimeout}`,
      ...(a.boot ? ["--boot"] : []),
      shellQuote(`${a.flake}#${a.host}`),
      "-- --impure",
    ].join(" ");
  }
  // colmena finds the hive in the flake of its working directory.
  return `cd ${shellQuote(a.flake)} && colmena apply ${a.boot ? "boot" : "switch"} --on ${a.host} --impure`;
}

/**
 * The whole switch step: inventory.json from stdin into a private temp file (never on the
 * command line), RUNNER_FLEET_INVENTORY pointing at it, the tool under a timeout, and a
 * failure that names the host.
 */
export function switchCommand(a: SwitchCommandArgs): string {
  return [
    "set -eu",
    'inventory=$(mktemp)',
    'trap \'rm -f "$inventory"\' EXIT',
    'cat > "$inventory"',
    'export RUNNER_FLEET_INVENTORY="$inventory"',
    `( timeout ${a.switchTimeoutMinutes}m sh -c ${shellQuote(deployToolCommand(a))} ) ${orFail(`deploy of ${a.host} failed`)}`,
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Pools

/** Remote: install the pools.json on stdin. The deploy user may sudo exactly this command. */
export function poolsCommand(host: string, minutes = 10): string {
  return `timeout ${minutes}m sudo -n /run/current-system/sw/bin/runner-fleet-apply-pools ${orFail(`pool update on ${host} failed`)}`;
}

// ---------------------------------------------------------------------------------------------
// Waves

/** Hosts in the given order, `batchSize` per wave. */
export function deployWaves<T>(hosts: T[], batchSize: number): T[][] {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`deploy.batchSize must be a positive integer (got ${batchSize})`);
  const waves: T[][] = [];
  for (let i = 0; i < hosts.length; i += batchSize) waves.push(hosts.slice(i, i + batchSize));
  return waves;
}
