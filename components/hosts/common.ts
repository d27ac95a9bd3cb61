/**
 * Pure helpers every host provider shares: who may reach SSH, how machines are tagged, which
 * changes may replace a machine. No resources here, so all of it is tested without mocks.
 */
import type { AwsHost, FleetModel, HostModel } from "../model";

/** The value of the `fleet` tag on everything runner-fleet creates. */
export const FLEET_TAG = "runner-fleet";

/** The whole Internet, per IP family: only with ssh.allowFromAnywhere. */
export const ANYWHERE = { ipv4: "0.0.0.0/0", ipv6: "::/0" } as const;

export interface SshSources {
  ipv4: string[];
  ipv6: string[];
}

/**
 * Where SSH may come from, split by IP family (clouds want IPv4 and IPv6 in separate rules).
 * The admin CIDRs only, unless the user opted into allowFromAnywhere (config warns about it).
 */
export function sshSources(model: FleetModel): SshSources {
  if (model.ssh.allowFromAnywhere) return { ipv4: [ANYWHERE.ipv4], ipv6: [ANYWHERE.ipv6] };
  const cidrs = model.ssh.adminCidrs;
  return { ipv4: cidrs.filter((c) => !c.includes(":")), ipv6: cidrs.filter((c) => c.includes(":")) };
}

/** Who may scrape the exporters (monitoring.allowCidrs), split by IP family; empty: nobody. */
export function monitoringSources(model: FleetModel): SshSources {
  const cidrs = model.monitoring.allowCidrs;
  return { ipv4: cidrs.filter((c) => !c.includes(":")), ipv6: cidrs.filter((c) => c.includes(":")) };
}

/** Tags for clouds that take free-form key/value tags (AWS, Azure). */
export function hostTags(host: HostModel, model: FleetModel): Record<string, string> {
  return {
    fleet: FLEET_TAG,
    host: host.name,
    stack: model.stack,
    // AWS tag values allow letters, digits, spaces and + - = . _ : / @ on every service.
    roles: host.roles.join(" "),
    ...(host.tags.length ? { tags: host.tags.join(" ") } : {}),
  };
}

/** Tags for the shared pieces of a region (no host). */
export function fleetTags(model: FleetModel): Record<string, string> {
  return { fleet: FLEET_TAG, stack: model.stack };
}

/**
 * Hetzner labels: values must be at most 63 characters of [A-Za-z0-9-_.], starting and ending
 * alphanumeric. Anything else becomes "_" (and the ends are trimmed).
 */
export function hetznerLabel(value: string): string {
  return value.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, "");
}

/** DigitalOcean tag names: letters, digits, colons, dashes and underscores, at most 255. */
export function digitalOceanTag(value: string): string {
  return value.replace(/[^A-Za-z0-9:_-]/g, "_").slice(0, 255);
}

/**
 * The key an AWS key pair is made from: the first authorized key AWS can import (EC2 accepts
 * ed25519 and RSA only). The other keys reach the deploy user through user-data.
 */
export function awsKeyPairKey(keys: readonly string[]): string | undefined {
  return keys.find((k) => k.startsWith("ssh-ed25519 ") || k.startsWith("ssh-rsa "));
}

export interface ChangeOptions {
  ignoreChanges: string[];
  replaceOnChanges?: string[];
}

/**
 * DESIGN.md rule 2: a running machine is never replaced because its user-data or image changed;
 * hosts move forward by deploys. With replaceOnImageChange the image may replace the machine.
 *
 * `firstBoot` are inputs a machine reads only when it is created (user-data, which carries a
 * single-use secret_id that changes on every run; the SSH keys and login user, which NixOS
 * manages afterwards): always ignored, so rotating a key never replaces a fleet.
 * `forceReplaceOnImage` is for image inputs the provider would otherwise try to update in place.
 */
export function instanceChangeOptions(
  host: Pick<HostModel, "replaceOnImageChange">,
  keys: { firstBoot: string[]; image: string[]; forceReplaceOnImage?: boolean },
): ChangeOptions {
  if (!host.replaceOnImageChange) return { ignoreChanges: [...keys.firstBoot, ...keys.image] };
  return {
    ignoreChanges: [...keys.firstBoot],
    ...(keys.forceReplaceOnImage ? { replaceOnChanges: [...keys.image] } : {}),
  };
}

/** Azure: premium SSD only on sizes with "s" in their feature letters (D16ds_v5, F16s_v2). */
export function azureStorageType(size: string): "Premium_LRS" | "StandardSSD_LRS" {
  const features = /^Standard_[A-Za-z]+\d+([a-z]*)/.exec(size)?.[1] ?? "";
  return features.includes("s") ? "Premium_LRS" : "StandardSSD_LRS";
}

/** The key of the security group an AWS host joins: its region, or region + given subnet. */
export function awsGroupKey(host: Pick<AwsHost, "region" | "subnetId">): string {
  return host.subnetId ? `${host.region}-${host.subnetId}` : host.region;
}
