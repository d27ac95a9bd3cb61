// The fleet cache: the public key derived from cacheSigningKey, the config rules, the
// inventory section, nix/modules/fleet-cache.nix, and real Nix 2.8 (Debian's nix-bin)
// substituting from a signed binary cache on loopback with exactly the settings the module
// renders: a path signed with another key is refused, and a cache that is down falls back.
import type { ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fleetCacheInventory, fleetCacheServed, FLEET_CACHE_PRIORITY, nixPublicKeyOf } from "../components/fleet-cache";
import { buildInventory } from "../components/inventory";
import { baseConfig, configProblems, existingHost, modelFrom, PLANTED_SECRETS } from "./support/fixtures";
import { freePort } from "./support/free-port";
import { buildClosure, generateKey, moduleSettings as settingsOf, nix, realiseWithModule, serveDirectory, writeBinaryCache, exampleInventory } from "./support/nix-cache";

let scratch = "";
beforeAll(() => { scratch = fs.mkdtempSync(path.join(os.tmpdir(), "fleet-cache-")); });
afterAll(() => { if (scratch) fs.rmSync(scratch, { recursive: true, force: true }); });

const run = (args: string[], opts: Parameters<typeof nix>[2] = {}) => nix(scratch, args, opts);
const newKey = (name: string) => generateKey(scratch, name);

function cacheConfig(extra: Record<string, unknown> = {}): Record<string, any> {
  const cfg = baseConfig();
  cfg.hosts["cache-a"] = existingHost("192.0.2.20", ["cache"]);
  cfg.cache = { domains: { "cache-a": "cache-a.example.org" }, ...extra };
  return cfg;
}

const problemsOf = configProblems;

describe("the public key of cacheSigningKey", () => {
  it("is what Nix itself derives (nix-store --generate-binary-cache-key)", () => {
    for (const name of ["cache-1", "fleet.example.org-1"]) {
      const key = newKey(name);
      expect(nixPublicKeyOf(key.secret)).toBe(key.public);
    }
  });

  it("equals nix key convert-secret-to-public for the planted test key", () => {
    const r = run(["nix", "--extra-experimental-features", "nix-command", "key", "convert-secret-to-public"], { input: PLANTED_SECRETS.cacheSigningKey });
    expect(r.status, r.stderr).toBe(0);
    expect(nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey)).toBe(r.stdout.trim());
  });

  it("refuses a key whose public half does not match its seed, without quoting it", () => {
    const key = newKey("cache-1").secret.trim();
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

  it("warns that a cache host without a domain serves nobody (Caddy's internal CA), and reads no key for it", () => {
    const cfg = cacheConfig({ domains: {} });
    const model = modelFrom(cfg);
    // The e2e stack's cache host has no domain and a canary (not a Nix) key: nothing derives it.
    expect(fleetCacheServed(model)).toBe(false);
    expect(fleetCacheServed(modelFrom(cacheConfig()))).toBe(true);
    expect(fleetCacheServed(modelFrom(cacheConfig({ useFleetCache: false })))).toBe(false);
    expect(model.warnings.join("\n")).toMatch(/cache\.domains\.cache-a: not set; cache-a serves with Caddy's internal CA/);
    expect(fleetCacheInventory(model, "k:x").substituters).toEqual([]);
  });
});

describe("inventory.json cache", () => {
  it("lists the cache hosts with a domain first, then the extra substituters", () => {
    const pub = nixPublicKeyOf(PLANTED_SECRETS.cacheSigningKey);
    const peer = newKey("peer-1").public;
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

const moduleSettings = (inventory: object, hostName: string) => settingsOf(scratch, inventory, hostName);

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
  let key: { secret: string; public: string; file: string };

  beforeAll(async () => {
    // Two input-addressed paths, one referring to the other.
    top = buildClosure(scratch, path.join(scratch, "src"), 2, 1);
    key = newKey("cache-1");
    writeBinaryCache(scratch, path.join(scratch, "src"), top, key.file, path.join(scratch, "binary-cache"));
    const served = await serveDirectory(path.join(scratch, "binary-cache"));
    server = served.proc;
    port = served.port;
  }, 120_000);
  afterAll(() => { server?.kill(); });

  const realise = (cache: object) => realiseWithModule(scratch, top, cache);

  it("substitutes the whole closure when the key is the cache's", () => {
    const r = realise({ substituters: [{ url: `http://127.0.0.1:${port}`, publicKey: key.public, priority: 30 }], domains: {}, connectTimeout: 5 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`copying path '${top}' from 'http://127\\.0\\.0\\.1:${port}'`));
    expect(r.stderr).toMatch(/copying path '\/nix\/store\/[a-z0-9]{32}-rf-path-1' from/);
    expect(r.has(top)).toBe(true);
  });

  it("refuses a path signed with another key", () => {
    const other = newKey("cache-1").public;
    const r = realise({ substituters: [{ url: `http://127.0.0.1:${port}`, publicKey: other, priority: 30 }], domains: {}, connectTimeout: 5 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(`the substitute for '${top}' from 'http://127.0.0.1:${port}' is not signed by any of the keys in 'trusted-public-keys'`);
    expect(r.has(top)).toBe(false);
  });

  it("falls back past a cache that is down, within the connect timeout", async () => {
    const down = await freePort();
    const r = realise({
      substituters: [
        { url: `http://127.0.0.1:${down}`, publicKey: key.public, priority: 20 },
        { url: `http://127.0.0.1:${port}`, publicKey: key.public, priority: 30 },
      ],
      domains: {}, connectTimeout: 2,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`disabling binary cache 'http://127.0.0.1:${down}' for 60 seconds`);
    expect(r.stderr).toMatch(new RegExp(`copying path '${top}' from 'http://127\\.0\\.0\\.1:${port}'`));
    expect(r.seconds).toBeLessThan(30);
  });
});
