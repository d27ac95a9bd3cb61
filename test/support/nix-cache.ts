/**
 * Real Nix (Debian's nix-bin 2.8) around a binary cache, shared by test/fleet-cache.test.ts and
 * the bench (scripts/bench-cache.ts): a closure of input-addressed paths built in a chroot store,
 * signed and written as a file:// binary cache served over HTTP on loopback, and a client that
 * substitutes from it with the nix.conf nix/modules/fleet-cache.nix renders.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { freePort } from "./free-port";

const ROOT = path.resolve(__dirname, "../..");
/** Building in a chroot store: no build users, and the host's /bin/sh inside the sandbox. */
export const BUILD_CONF = "build-users-group =\nsandbox-paths = /bin /lib /lib64 /usr\nexperimental-features = nix-command";

/** Nix with its own config only: no daemon, no user config. */
export function nix(home: string, args: string[], opts: { conf?: string; confDir?: string; input?: string; remote?: string } = {}): SpawnSyncReturns<string> {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, NIX_CONFIG: opts.conf ?? "", NIX_REMOTE: opts.remote ?? "" };
  if (opts.confDir) env.NIX_CONF_DIR = opts.confDir;
  const [cmd, ...rest] = args;
  return spawnSync(cmd, rest, { env, encoding: "utf8", input: opts.input, timeout: 300_000, maxBuffer: 64 << 20 });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) throw new Error(`${what}: ${r.stderr}`);
  return r.stdout;
}

export function generateKey(home: string, name: string): { secret: string; public: string; file: string } {
  const dir = fs.mkdtempSync(path.join(home, "key-"));
  ok(nix(home, ["nix-store", "--generate-binary-cache-key", name, path.join(dir, "sk"), path.join(dir, "pk")]), "generate key");
  return { secret: fs.readFileSync(path.join(dir, "sk"), "utf8"), public: fs.readFileSync(path.join(dir, "pk"), "utf8").trim(), file: path.join(dir, "sk") };
}

/**
 * `paths` input-addressed store paths in a chain (each refers to the one before), `kib` KiB each,
 * built into the chroot store under `root`; returns the top path. Content-addressed paths
 * (nix-store --add) need no signature, so they would prove nothing about signatures.
 */
export function buildClosure(home: string, root: string, paths: number, kib: number): string {
  const file = path.join(home, `closure-${paths}-${kib}.nix`);
  fs.writeFileSync(file, `
    let mk = i: prev: derivation {
        name = "rf-path-\${toString i}"; system = builtins.currentSystem; builder = "/bin/sh";
        args = [ "-c" "echo \${prev} > $out; i=0; while [ $i -lt ${kib * 16} ]; do echo \${toString i}-$i-0123456789abcdef0123456789abcdef012345678901234; i=$((i+1)); done >> $out" ]; };
      go = i: prev: if i > ${paths} then prev else go (i + 1) (mk i prev);
    in go 1 "none"`);
  return ok(nix(home, ["nix-build", "--store", `local?root=${root}`, file, "--no-out-link"], { conf: BUILD_CONF }), "build closure").trim();
}

/** Signs the closure of `top` in `root` with `keyFile` and writes it as a binary cache at `dir`. */
export function writeBinaryCache(home: string, root: string, top: string, keyFile: string, dir: string, compression = "xz"): void {
  ok(nix(home, ["nix", "store", "sign", "--store", `local?root=${root}`, "--key-file", keyFile, "-r", top], { conf: BUILD_CONF }), "sign");
  ok(nix(home, ["nix", "copy", "--from", `local?root=${root}`, "--to", `file://${dir}?compression=${compression}`, top], { conf: BUILD_CONF }), "copy to binary cache");
}

/** A static HTTP server on loopback serving `dir`, up when this resolves. */
export async function serveDirectory(dir: string): Promise<{ url: string; port: number; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", dir], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    if (spawnSync("curl", ["-sf", `http://127.0.0.1:${port}/nix-cache-info`]).status === 0) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  return { url: `http://127.0.0.1:${port}`, port, proc };
}

/** The module's nix.settings for one host of an inventory (evaluated with nix-instantiate). */
export function moduleSettings(home: string, inventory: object, hostName: string): Record<string, unknown> | undefined {
  const file = path.join(home, `inventory-${hostName}-${process.hrtime.bigint()}.json`);
  fs.writeFileSync(file, JSON.stringify(inventory));
  const out = ok(nix(home, ["nix-instantiate", "--eval", "--strict", "--json", "--expr", `
    let t = import ${path.join(ROOT, "test/support/nix-modules.nix")}; inventory = t.readInventory ${file};
    in t.defsAt [ "nix" "settings" ] (t.call { file = ${path.join(ROOT, "nix/modules/fleet-cache.nix")}; inherit inventory; hostName = "${hostName}"; })`], { remote: "dummy://" }), "evaluate fleet-cache.nix");
  const defs = JSON.parse(out) as Array<{ priority: number; value: Record<string, unknown> }>;
  if (defs.length > 1) throw new Error("fleet-cache.nix: more than one nix.settings definition");
  return defs[0]?.value;
}

/**
 * nix.conf lines as NixOS writes nix.settings (nixos/modules/config/nix.nix mkValueString: lists
 * joined by spaces, booleans true/false, integers in decimal; docs/upstream.md).
 */
export function nixConfLines(settings: Record<string, unknown>): string[] {
  const value = (v: unknown): string => (Array.isArray(v) ? v.map(value).join(" ") : String(v));
  return Object.entries(settings).map(([k, v]) => `${k} = ${value(v)}`);
}

/** inventory.example.json with a `cache` section. */
export function exampleInventory(cache: object): Record<string, any> {
  const inv = JSON.parse(fs.readFileSync(path.join(ROOT, "nix/inventory.example.json"), "utf8"));
  return { ...inv, cache };
}

/**
 * Realises `top` into a fresh chroot store under `home` with the module's nix.conf for `cache`
 * (on host aws-metal-1 of the example inventory), cache.nixos.org left out.
 */
export function realiseWithModule(home: string, top: string, cache: object) {
  const settings = moduleSettings(home, exampleInventory(cache), "aws-metal-1") ?? {};
  const confDir = fs.mkdtempSync(path.join(home, "conf-"));
  fs.writeFileSync(path.join(confDir, "nix.conf"), ["substituters =", "require-sigs = true", "build-users-group =", ...nixConfLines(settings), ""].join("\n"));
  const root = fs.mkdtempSync(path.join(home, "client-"));
  const started = process.hrtime.bigint();
  const r = nix(home, ["nix-store", "--store", `local?root=${root}`, "--realise", top], { confDir });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { status: r.status, stderr: r.stderr, seconds, root, has: (p: string) => fs.existsSync(path.join(root, p)) };
}
