/**
 * Pulumi's mock runtime, set up the one way both `npm run plan` and the tests use it: config in,
 * every registered resource recorded, deterministic fake outputs for what providers would
 * compute (addresses, ids, AppRole ids). Call `installMocks` BEFORE importing any module that
 * creates resources: a resource registered earlier is silently unmocked.
 */
import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";

/** Pulumi's marker for a secret value inside serialized properties. */
const SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

export interface RecordedResource {
  urn: string;
  type: string;
  name: string;
  /** Inputs as the provider would receive them; secret values are kept wrapped. */
  inputs: Record<string, unknown>;
  custom: boolean;
}

export interface MockSetup {
  project?: string;
  stack: string;
  /** Full config keys ("runner-fleet:hosts", "aws:region") to string values (objects as JSON). */
  config: Record<string, string>;
  secretKeys?: string[];
}

function digest(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\0")).digest("hex");
}

/** A documentation-range address (RFC 5737) stable for a resource name. */
function fakeIp(prefix: "203.0.113" | "198.51.100" | "10.20", name: string): string {
  const n = parseInt(digest(prefix, name).slice(0, 4), 16);
  return prefix === "10.20" ? `10.20.${(n >> 8) % 250}.${(n % 250) + 2}` : `${prefix}.${(n % 250) + 2}`;
}

function secret(value: unknown) {
  return { [SECRET_SIG_KEY]: SECRET_SIG, value };
}

/** What a provider would fill in after create, keyed by resource type. */
function computedOutputs(type: string, name: string, inputs: Record<string, any>): Record<string, unknown> {
  const uuid = (salt: string) => {
    const h = digest(salt, type, name);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  };
  switch (type) {
    case "aws:ec2/instance:Instance":
      return { publicIp: fakeIp("203.0.113", name), privateIp: fakeIp("10.20", name), arn: `arn:aws:ec2:::instance/${name}` };
    case "aws:ec2/eip:Eip":
      return { publicIp: fakeIp("203.0.113", name) };
    case "azure-native:network:PublicIPAddress":
      return { ipAddress: fakeIp("198.51.100", name) };
    case "azure-native:network:NetworkInterface":
      return { ipConfigurations: [{ privateIPAddress: fakeIp("10.20", name) }] };
    case "hcloud:index/server:Server":
      return { ipv4Address: fakeIp("203.0.113", name), ipv6Address: "2001:db8::1", ipv6Network: "2001:db8::/64" };
    case "digitalocean:index/droplet:Droplet":
      return { ipv4Address: fakeIp("198.51.100", name), ipv4AddressPrivate: fakeIp("10.20", name), ipv6Address: "2001:db8:1::5", urn: `do:droplet:${name}` };
    case "vault:appRole/authBackendRole:AuthBackendRole":
      return { roleId: uuid("role-id") };
    case "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId":
      return {
        accessor: uuid("accessor"),
        secretId: secret(uuid("secret-id")),
        wrappingAccessor: uuid("wrapping-accessor"),
        wrappingToken: secret(`hvs.wrapped-${digest("wrap", name).slice(0, 24)}`),
      };
    // Image uploads (components/images): autonamed buckets, and what a local command prints.
    case "aws:s3/bucket:Bucket":
      return { arn: `arn:aws:s3:::${name}-id` };
    case "command:local:Command": {
      // A generated secret (components/vault.ts randomHexCommand): N bytes as hex.
      const random = /-N(\d+) .*\/dev\/urandom/.exec(String(inputs.create ?? ""));
      if (random) return { stdout: secret(digest("random-bytes", name).slice(0, 2 * Number(random[1]))) };
      return { stdout: String(parseInt(digest("stdout", name).slice(0, 8), 16)) };
    }
    default:
      return {};
  }
}

export function installMocks(setup: MockSetup): { resources: RecordedResource[] } {
  disableSourceMappedTraces();
  const project = setup.project ?? "runner-fleet";
  const resources: RecordedResource[] = [];
  pulumi.runtime.setAllConfig(setup.config, setup.secretKeys ?? []);
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        const state = { ...args.inputs, ...computedOutputs(args.type, args.name, args.inputs) };
        const urn = `urn:pulumi:${setup.stack}::${project}::${args.type}::${args.name}`;
        resources.push({ urn, type: args.type, name: args.name, inputs: args.inputs, custom: args.custom ?? true });
        // Hetzner ids are integers (servers take firewall and placement group ids as numbers).
        const id = args.type.startsWith("hcloud:") ? String(parseInt(digest("hcloud-id", args.type, args.name).slice(0, 7), 16)) : `${args.name}-id`;
        return { id, state };
      },
      call(args) {
        // Data sources the program may read; answered with stable placeholders.
        switch (args.token) {
          case "aws:index/getCallerIdentity:getCallerIdentity":
            return { accountId: "123456789012", arn: "arn:aws:iam::123456789012:user/plan", userId: "plan" };
          case "aws:index/getRegion:getRegion":
            return { name: "eu-central-1", region: "eu-central-1" };
          case "aws:ec2/getVpc:getVpc":
            return { id: "vpc-default", cidrBlock: "172.31.0.0/16" };
          case "aws:ec2/getSubnet:getSubnet":
            return { id: args.inputs.id, vpcId: "vpc-custom", availabilityZone: "eu-central-1a" };
          case "aws:ec2/getSubnets:getSubnets":
            return { ids: ["subnet-a", "subnet-b"] };
          default:
            return args.inputs;
        }
      },
    },
    project,
    setup.stack,
    false,
  );
  return { resources };
}

/**
 * The SDK records `new Error().stack` for every promise it makes; with source maps on (tsx
 * turns them on) formatting each trace is most of a large plan's time. Config errors are
 * reported by key path, not by stack, so the program runs without them (index.ts does the same
 * for `pulumi up`).
 */
export function disableSourceMappedTraces(): void {
  process.setSourceMapsEnabled(false);
}

/** Rebuilds a value with every secret marker replaced by what `onSecret` makes of its content. */
function mapSecrets(value: unknown, onSecret: (inner: unknown) => unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => mapSecrets(v, onSecret));
  if (value && typeof value === "object") {
    const obj = value as Record<string, unknown>;
    if (obj[SECRET_SIG_KEY] === SECRET_SIG) return onSecret(obj.value);
    return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, mapSecrets(v, onSecret)]));
  }
  return value;
}

/** Replaces every secret inside a value with "[secret]" (for printing). */
export function redact(value: unknown): unknown {
  return mapSecrets(value, () => "[secret]");
}

/** Unwraps secret markers, for tests that must look inside a secret input. */
export function reveal(value: unknown): unknown {
  return mapSecrets(value, reveal);
}

/** True when the input value (or any part of it) was registered as a secret. */
export function containsSecret(value: unknown): boolean {
  let found = false;
  mapSecrets(value, () => (found = true));
  return found;
}

/** Resolves an Output (or plain value) and tells whether it is secret. */
export async function settle(value: unknown): Promise<{ value: unknown; secret: boolean }> {
  if (pulumi.Output.isInstance(value)) {
    const out = value as pulumi.Output<unknown>;
    const [resolved, isSecret] = await Promise.all([new Promise<unknown>((r) => out.apply(r)), pulumi.isSecret(out)]);
    return { value: resolved, secret: isSecret };
  }
  return { value, secret: false };
}
