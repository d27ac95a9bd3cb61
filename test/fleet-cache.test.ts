// The fleet cache: the public key derived from cacheSigningKey, the config rules, the
// inventory section, nix/modules/fleet-cache.nix, and real Nix 2.8 (Debian's nix-bin)
// substituting from a signed binary cache on loopback with exactly the settings the module
// renders: a path signed with another key is refused, and a cache that is down falls back.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../components/config";
import { fleetCacheInventory, FLEET_CACHE_PRIORITY, nixPublicKeyOf } from "../components/fleet-cache";
import { buildInventory } from "../components/inventory";
import { baseConfig, modelFrom, PLANTED_SECRETS, ROOT } from "./support/fixtures";
import { freePort } from "./support/free-port";

let scratch = "";
beforeAll(() => { scratch = fs.mkdtempSync(path.join(os.tmpdir(), "fleet-cache-")); });
afterAll(() => { if (scratch) fs.rmSync(scratch, { recursive: true, force: true }); });

/** Nix with its own config only: no daemon, no user config. */
function nix(args: string[], opts: { conf?: string; confDir?: string; input?: string; remote?: string } = {}) {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: scratch, NIX_CONFIG: opts.conf ?? "", NIX_REMOTE: opts.remote ?? "" };
  if (opts.confDir) env.NIX_CONF_DIR = opts.confDir;
  const [cmd, ...rest] = args;
  return spawnSync(cmd, rest, { env, encoding: "utf8", input: opts.input, timeout: 120_000 });
}

function generateKey(name: string): { secret: string; public: string } {
  const dir = fs.mkdtempSync(path.join(scratch, "key-"));
  const r = nix(["nix-store", "--generate-binary-cache-key", name, path.join(dir, "sk"), path.join(dir, "pk")]);
  expect(r.status, r.stderr).toBe(0);
  return { secret: fs.readFileSync(path.join(dir, "sk"), "utf8"), public: fs.readFileSync(path.join(dir, "pk"), "utf8") };
}

function cacheConfig(extra: Record<string, unknown> = {}): Record<string, any> {
  const cfg = baseConfig();
  cfg.hosts["cache-a"] = { provider: "existing", address: "192.0.2.20", arch: "x86_64", vcpus: 4, memoryMib: 8192, roles: ["cache"], hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMS2h8BA5KkfTs1AVBW+KzNVWOGAqW5r1NAY25uvw+QP" };
  cfg.cache = { domains: { "cache-a": "cache-a.example.org" }, ...extra };
  return cfg;
}

function problemsOf(cfg: Record<string, any>, secretsSet?: string[]): string[] {
  try {
    modelFrom(cfg, secretsSet);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe("the public key of cacheSigningKey", () => {
  it("is what Nix itself derives (nix-store --generate-binary-cache-key)", () => {
    for (const name of ["cache-1", "fleet.example.org-1"]) {
      const key = generateKey(name);
      expect(nixPublicKeyOf(key.secret)).toBe(key.public.trim());
    }
  });

  it("equals nix key convert-secret-to-public for the planted test key", () => {
    const r = nix(["nix", "--extra-experimental-features", "nix-command", "key", "convert-secret-to-public"], { input: PLANTED_SECRETS.cacheSigningKey });
    expect(r.status, r.stderr).toBe(0);
    expect(nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey)).toBe(r.stdout.trim());
  });

  it("refuses a key whose public half does not match its seed, without quoting it", () => {
    const key = generateKey("cache-1").secret.trim();
    const bytes = Buffer.from(key.split(":")[1], "base64");
    bytes[40] ^= 1;
    const bad = `cache-1:${bytes.toString("base64")}`;
    expect(() => nixPublicKeyOf(bad)).toThrow(/public half does not match/);
    for (const value of [bad, "cache-1:short==", "no-colon", ""]) {
      try {
        nixPublicKeyOf(value);
        expect.unreachable();
      } catch (err) {
        const message = (err as Error).message;
        if (value) expect(message).not.toContain(value.split(":").pop());
      }
    }
  });
});

describe("cache config", () => {
  it("turns the fleet cache on by default when a host has the cache role, off otherwise", () => {
    expect(modelFrom(cacheConfig()).cache.useFleetCache).toBe(true);
    expect(modelFrom(baseConfig()).cache.useFleetCache).toBe(false);
  });

  it("lists every problem by key path", () => {
    const cfg = cacheConfig({
      domains: { metal: "metal.example.org", ghost: "x.example.org", "cache-a": "not a name" },
      publicKey: "cache-1:tooshort=",
      extraSubstituters: [{ url: "http://peer.example.org", publicKey: "p:x" }, { url: "https://peer.example.org?priority=1", publicKey: nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey) }],
    });
    const problems = problemsOf(cfg);
    expect(problems).toEqual(expect.arrayContaining([
      expect.stringMatching(/^runner-fleet:cache\.publicKey: must be a Nix public key/),
      expect.stringMatching(/^runner-fleet:cache\.extraSubstituters\[0\]\.url: must use https/),
      expect.stringMatching(/^runner-fleet:cache\.extraSubstituters\[0\]\.publicKey: must be a Nix public key/),
      expect.stringMatching(/^runner-fleet:cache\.extraSubstituters\[1\]\.url: must have no query/),
      expect.stringMatching(/^runner-fleet:cache\.domains\.cache-a: must be a DNS name/),
    ]));
    const rules = problemsOf(cacheConfig({ domains: { metal: "metal.example.org", ghost: "x.example.org" } }));
    expect(rules).toEqual(expect.arrayContaining([
      "runner-fleet:cache.domains.ghost: is not a host of this stack",
      "runner-fleet:cache.domains.metal: is not a cache host (it has no cache role)",
    ]));
  });

  it("needs cache.publicKey when the signing key lives only in Vault, and a cache host when asked for one", () => {
    const external = cacheConfig({ useFleetCache: true });
    external.vault.externalSecrets = ["cacheSigningKey"];
    expect(problemsOf(external).join("\n")).toMatch(/^runner-fleet:cache\.publicKey: is required: the program cannot derive the public key .*cacheSigningKey is in vault\.externalSecrets/m);
    // By default the fleet cache is then only left unused, and said so.
    delete external.cache.useFleetCache;
    expect(modelFrom(external).warnings.join("\n")).toMatch(/cache\.publicKey: not set, so no host substitutes from the fleet cache/);
    external.cache.publicKey = nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey);
    expect(problemsOf(external)).toEqual([]);
    const none = baseConfig();
    none.cache = { useFleetCache: true };
    expect(problemsOf(none)).toContain("runner-fleet:cache.useFleetCache: is on but no host has the cache role");
  });

  it("warns that a cache host without a domain serves nobody (Caddy's internal CA)", () => {
    const cfg = cacheConfig({ domains: {} });
    const model = modelFrom(cfg);
    expect(model.warnings.join("\n")).toMatch(/cache\.domains\.cache-a: not set; cache-a serves with Caddy's internal CA/);
    expect(fleetCacheInventory(model, "k:x").substituters).toEqual([]);
  });
});

describe("inventory.json cache", () => {
  it("lists the cache hosts with a domain first, then the extra substituters", () => {
    const pub = nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey);
    const peer = generateKey("peer-1").public.trim();
    const model = modelFrom(cacheConfig({ extraSubstituters: [{ url: "https://peer.example.org", publicKey: peer, priority: 35 }], connectTimeout: 3 }));
    const cache = fleetCacheInventory(model, pub);
    expect(cache).toEqual({
      substituters: [
        { url: "https://cache-a.example.org", publicKey: pub, priority: FLEET_CACHE_PRIORITY, host: "cache-a" },
        { url: "https://peer.example.org", publicKey: peer, priority: 35 },
      ],
      domains: { "cache-a": "cache-a.example.org" },
      connectTimeout: 3,
    });
    const inv = buildInventory(model, { metal: { public: "203.0.113.1", private: null }, "cache-a": { public: "192.0.2.20", private: null } }, undefined, cache);
    expect(inv.cache).toEqual(cache);
    // useFleetCache: false keeps only the substituters outside the stack.
    const off = modelFrom(cacheConfig({ useFleetCache: false, extraSubstituters: [{ url: "https://peer.example.org", publicKey: peer }] }));
    expect(fleetCacheInventory(off, pub).substituters).toEqual([{ url: "https://peer.example.org", publicKey: peer }]);
  });
});

// ---------------------------------------------------------------------------------------------
// nix/modules/fleet-cache.nix, evaluated, and its settings used by real Nix

const modules = path.join(ROOT, "test/support/nix-modules.nix");

/** The module's nix.settings for one host of an inventory (JSON text). */
function moduleSettings(inventory: object, hostName: string): Record<string, unknown> | undefined {
  const file = path.join(scratch, `inventory-${hostName}-${Date.now()}.json`);
  fs.writeFileSync(file, JSON.stringify(inventory));
  const r = nix(["nix-instantiate", "--eval", "--strict", "--json", "--expr", `
    let t = import ${modules}; inventory = t.readInventory ${file};
    in t.defsAt [ "nix" "settings" ] (t.call { file = ${path.join(ROOT, "nix/modules/fleet-cache.nix")}; inherit inventory; hostName = "${hostName}"; })`], { remote: "dummy://" });
  expect(r.status, r.stderr).toBe(0);
  const defs = JSON.parse(r.stdout) as Array<{ priority: number; value: Record<string, unknown> }>;
  expect(defs.length).toBeLessThanOrEqual(1);
  return defs[0]?.value;
}

/**
 * nix.conf lines as NixOS writes nix.settings (nixos/modules/config/nix.nix mkValueString: lists
 * joined by spaces, booleans true/false, integers in decimal; docs/upstream.md).
 */
function nixConfLines(settings: Record<string, unknown>): string[] {
  const value = (v: unknown): string => Array.isArray(v) ? v.map(value).join(" ") : typeof v === "boolean" ? String(v) : String(v);
  return Object.entries(settings).map(([k, v]) => `${k} = ${value(v)}`);
}

function exampleInventory(cache: object): Record<string, any> {
  const inv = JSON.parse(fs.readFileSync(path.join(ROOT, "nix/inventory.example.json"), "utf8"));
  return { ...inv, cache };
}

describe("nix/modules/fleet-cache.nix", () => {
  it("adds the substituters and keys to NixOS' own (extra-*), with the timeout and fallback", () => {
    const pub = nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey);
    const cache = { substituters: [{ url: "https://cache-1.example.org", publicKey: pub, priority: 30, host: "cache-1" }, { url: "https://peer.example.org", publicKey: "peer-1:x" }], domains: {}, connectTimeout: 5 };
    expect(moduleSettings(exampleInventory(cache), "aws-metal-1")).toEqual({
      "extra-substituters": ["https://cache-1.example.org?priority=30", "https://peer.example.org"],
      "extra-trusted-public-keys": [pub, "peer-1:x"],
      "connect-timeout": 5,
      fallback: true,
    });
    // The cache host itself skips its own entry.
    expect(moduleSettings(exampleInventory(cache), "cache-1")?.["extra-substituters"]).toEqual(["https://peer.example.org"]);
  });

  it("sets nothing without substituters (or without a cache section)", () => {
    expect(moduleSettings(exampleInventory({ substituters: [], domains: {}, connectTimeout: 5 }), "aws-metal-1")).toBeUndefined();
    const inv = exampleInventory({});
    delete inv.cache;
    expect(moduleSettings(inv, "aws-metal-1")).toBeUndefined();
  });
});

describe("real Nix substitutes from a signed binary cache with the module's settings", () => {
  let server: ChildProcess | undefined;
  let port = 0;
  let top = "";
  let key: { secret: string; public: string };
  const build = "build-users-group =\nsandbox-paths = /bin /lib /lib64 /usr\nexperimental-features = nix-command";
  const srcStore = () => `local?root=${path.join(scratch, "src")}`;

  beforeAll(async () => {
    // Two input-addressed paths, one referring to the other: content-addressed ones (nix-store
    // --add) need no signature at all, so they would prove nothing.
    fs.writeFileSync(path.join(scratch, "closure.nix"), `
      let dep = derivation { name = "rf-dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo dep > $out" ]; };
      in derivation { name = "rf-top"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo \${dep} > $out" ]; }`);
    const b = nix(["nix-build", "--store", srcStore(), path.join(scratch, "closure.nix"), "--no-out-link"], { conf: build });
    expect(b.status, b.stderr).toBe(0);
    top = b.stdout.trim();
    key = generateKey("cache-1");
    fs.writeFileSync(path.join(scratch, "sk"), key.secret);
    const signed = nix(["nix", "store", "sign", "--store", srcStore(), "--key-file", path.join(scratch, "sk"), "-r", top], { conf: build });
    expect(signed.status, signed.stderr).toBe(0);
    const copied = nix(["nix", "copy", "--from", srcStore(), "--to", `file://${path.join(scratch, "binary-cache")}`, top], { conf: build });
    expect(copied.status, copied.stderr).toBe(0);
    port = await freePort();
    server = spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", path.join(scratch, "binary-cache")], { stdio: "ignore" });
    for (let i = 0; i < 50; i++) {
      const r = spawnSync("curl", ["-sf", `http://127.0.0.1:${port}/nix-cache-info`]);
      if (r.status === 0) break;
      await new Promise((res) => setTimeout(res, 100));
    }
  }, 120_000);
  afterAll(() => { server?.kill(); });

  /** Realises `top` into a fresh client store with the module's settings for `cache`. */
  function realise(cache: object): { status: number | null; stderr: string; seconds: number; has: (p: string) => boolean } {
    const settings = moduleSettings(exampleInventory(cache), "aws-metal-1") ?? {};
    const confDir = fs.mkdtempSync(path.join(scratch, "conf-"));
    // `substituters =` drops cache.nixos.org (unreachable here); the rest is the module's.
    fs.writeFileSync(path.join(confDir, "nix.conf"), ["substituters =", "require-sigs = true", "build-users-group =", ...nixConfLines(settings), ""].join("\n"));
    const root = fs.mkdtempSync(path.join(scratch, "client-"));
    const started = Date.now();
    const r = nix(["nix-store", "--store", `local?root=${root}`, "--realise", top], { confDir });
    return { status: r.status, stderr: r.stderr, seconds: (Date.now() - started) / 1000, has: (p) => fs.existsSync(path.join(root, p)) };
  }

  it("substitutes the whole closure when the key is the cache's", () => {
    const r = realise({ substituters: [{ url: `http://127.0.0.1:${port}`, publicKey: key.public.trim(), priority: 30 }], domains: {}, connectTimeout: 5 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`copying path '${top}' from 'http://127\\.0\\.0\\.1:${port}'`));
    expect(r.stderr).toMatch(/copying path '\/nix\/store\/[a-z0-9]{32}-rf-dep' from/);
    expect(r.has(top)).toBe(true);
  });

  it("refuses a path signed with another key", () => {
    const other = generateKey("cache-1").public.trim();
    const r = realise({ substituters: [{ url: `http://127.0.0.1:${port}`, publicKey: other, priority: 30 }], domains: {}, connectTimeout: 5 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`the substitute for '${top}' from 'http://127.0.0.1:${port}' is not signed by any of the keys in 'trusted-public-keys'`);
    expect(r.has(top)).toBe(false);
  });

  it("falls back past a cache that is down, within the connect timeout", async () => {
    const down = await freePort();
    const r = realise({
      substituters: [
        { url: `http://127.0.0.1:${down}`, publicKey: key.public.trim(), priority: 20 },
        { url: `http://127.0.0.1:${port}`, publicKey: key.public.trim(), priority: 30 },
      ],
      domains: {}, connectTimeout: 2,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`disabling binary cache 'http://127.0.0.1:${down}' for 60 seconds`);
    expect(r.stderr).toMatch(new RegExp(`copying path '${top}' from 'http://127\\.0\\.0\\.1:${port}'`));
    expect(r.seconds).toBeLessThan(30);
  });
});
