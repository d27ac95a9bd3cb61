/**
 * The fleet's own Nix cache, as the other hosts see it: which URLs they substitute from, with
 * which public keys, in which order (inventory.json `cache`, read by nix/modules/fleet-cache.nix).
 *
 * The public key is the public half of `cacheSigningKey` (or `cache.publicKey` when the secret
 * lives only in Vault). Deriving it reads the secret inside an apply; only the 32 public bytes
 * leave it, unsecreted, since every host may know them.
 */
import { createPrivateKey, createPublicKey } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { parseNixKey } from "./config-values";
import type { FleetModel } from "./model";

/** Harmonia's priority on our cache hosts (nix/modules/roles/cache.nix): before cache.nixos.org (40). */
export const FLEET_CACHE_PRIORITY = 30;

export interface InventorySubstituter {
  url: string;
  publicKey: string;
  priority?: number;
  /** The cache host serving it: that host does not substitute from itself. */
  host?: string;
}

/** inventory.json `cache`: what nix/modules/fleet-cache.nix renders into nix.conf. */
export interface InventoryCache {
  substituters: InventorySubstituter[];
  /** cache.domains: the name Caddy serves (and gets a certificate for) on each cache host. */
  domains: Record<string, string>;
  connectTimeout: number;
}

/** PKCS#8 DER prefix of an ed25519 private key; the 32-byte seed follows (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/**
 * The Nix public key of a Nix secret key (`name:base64` of libsodium's 64-byte secret key: seed,
 * then public key). The public half is recomputed from the seed and must equal the stored one,
 * so a corrupted key fails here, not on every host. Errors never quote the value.
 */
export function nixPublicKeyOf(secretKey: string): string {
  const parsed = parseNixKey(secretKey, 64);
  if (!parsed) throw new Error("cacheSigningKey: is not a Nix secret key (<name>:<base64 of 64 bytes>, from nix-store --generate-binary-cache-key)");
  const seed = parsed.key.subarray(0, 32);
  const stored = parsed.key.subarray(32);
  const der = createPublicKey(createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" })).export({ format: "der", type: "spki" });
  const derived = der.subarray(der.length - 32);
  if (!derived.equals(stored)) throw new Error("cacheSigningKey: its public half does not match its seed; regenerate it with nix-store --generate-binary-cache-key");
  return `${parsed.name}:${derived.toString("base64")}`;
}

/** An offline plan's marked placeholder (scripts/stack-file.ts) is no key: its public key is one too. */
function publicKeyOrPlaceholder(secretKey: string): string {
  if (/^\[(secure )?placeholder for [^\]]*\]$/.test(secretKey)) return "[placeholder: the public half of cacheSigningKey, derived by pulumi up]";
  return nixPublicKeyOf(secretKey);
}

/**
 * The substituters every host uses: the stack's cache hosts that have a trusted certificate
 * (cache.domains), then cache.extraSubstituters. Pure.
 */
export function fleetCacheInventory(model: Pick<FleetModel, "cache" | "hosts">, publicKey: string | undefined): InventoryCache {
  const { cache } = model;
  const fleet: InventorySubstituter[] = [];
  if (cache.useFleetCache && publicKey) {
    for (const host of model.hosts) {
      const domain = cache.domains[host.name];
      if (!host.roles.includes("cache") || !domain) continue;
      fleet.push({ url: `https://${domain}`, publicKey, priority: FLEET_CACHE_PRIORITY, host: host.name });
    }
  }
  const extra = cache.extraSubstituters.map((s) => ({ url: s.url, publicKey: s.publicKey, ...(s.priority !== undefined ? { priority: s.priority } : {}) }));
  return { substituters: [...fleet, ...extra], domains: cache.domains, connectTimeout: cache.connectTimeout };
}

/**
 * Whether any host substitutes from a fleet cache host: one with a trusted name, with the fleet
 * cache on. Only then is the signing key read (to derive its public half).
 */
export function fleetCacheServed(model: Pick<FleetModel, "cache" | "hosts">): boolean {
  return model.cache.useFleetCache && model.hosts.some((h) => h.roles.includes("cache") && !!model.cache.domains[h.name]);
}

export interface FleetCacheArgs {
  /** The validated fleet model (cache settings, cache hosts). */
  model: FleetModel;
  /** cacheSigningKey as a Pulumi secret, when the stack holds it (else cache.publicKey is required). */
  signingKey?: pulumi.Input<string>;
}

/** The fleet cache's public side: the inventory section every host's nix.conf is rendered from. */
export class FleetCache extends pulumi.ComponentResource {
  /** The key hosts trust (plain: it is public), or undefined without a fleet cache. */
  readonly publicKey: pulumi.Output<string | undefined>;
  /** inventory.json `cache`; undefined when it would say nothing (inventories stay as they were). */
  readonly inventory: pulumi.Output<InventoryCache | undefined>;

  constructor(name: string, args: FleetCacheArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:cache:FleetCache", name, {}, opts);
    const { model } = args;
    const wanted = fleetCacheServed(model);
    this.publicKey = !wanted
      ? pulumi.output(undefined)
      : model.cache.publicKey
        ? pulumi.output(model.cache.publicKey)
        : args.signingKey
          // Only the public half leaves the apply; unsecret: hosts and state may hold it plainly.
          ? pulumi.unsecret(pulumi.output(args.signingKey).apply(publicKeyOrPlaceholder))
          : pulumi.output(undefined);
    this.inventory = this.publicKey.apply((key) => {
      const c = fleetCacheInventory(model, key);
      return c.substituters.length || Object.keys(c.domains).length ? c : undefined;
    });
    this.registerOutputs({ publicKey: this.publicKey });
  }
}
