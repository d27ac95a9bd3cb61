/**
 * A DigitalOcean droplet in its region's VPC, behind the region's firewall (attached by tag).
 * It starts from our custom image (`image: nix`) or stock Debian for nixos-anywhere (config.ts
 * requires >= 2 GB for that). User-data cannot change after creation on DigitalOcean anyway.
 */
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import type { DigitalOceanHost as DigitalOceanHostModel, FleetModel } from "../model";
import { digitalOceanTag, FLEET_TAG, instanceChangeOptions } from "./common";
import { bootImage, HostComponent } from "./base";
import type { HostArgs } from "./types";

/** A host on DigitalOcean (`provider: digitalocean`). */
export type DigitalOceanHostArgs = HostArgs<DigitalOceanHostModel>;

/** The stock image nixos-anywhere installs over. */
export const DIGITALOCEAN_STOCK_IMAGE = "debian-12-x64";

/** Droplet tags are plain names, so key/value pairs become `key:value`. */
export function dropletTags(host: DigitalOceanHostModel, model: FleetModel): string[] {
  return [
    FLEET_TAG,
    `stack:${model.stack}`,
    `host:${host.name}`,
    ...host.roles.map((r) => `role:${r}`),
    ...host.tags,
  ].map(digitalOceanTag);
}

export class DigitalOceanHost extends HostComponent {
  readonly provider = "digitalocean" as const;
  readonly publicAddress: pulumi.Output<string>;
  readonly privateAddress: pulumi.Output<string | undefined>;
  readonly publicIpv6: pulumi.Output<string | undefined>;
  readonly instance: digitalocean.Droplet;
  readonly identity: pulumi.Output<string>;

  constructor(name: string, args: DigitalOceanHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:hosts:DigitalOceanHost", "digitalocean", name, args, opts);
    const { host, model, image } = args;
    const customImage = bootImage(host, "digitalocean", image);
    const net = args.networks.digitalocean(host);

    this.instance = new digitalocean.Droplet(host.name, {
      // Droplet names need not be unique, so a replacement can be created before the old one goes.
      name: host.name,
      image: customImage ? customImage.imageId : DIGITALOCEAN_STOCK_IMAGE,
      size: host.size,
      region: host.region,
      vpcUuid: net.vpcId,
      sshKeys: [net.sshKeyId],
      ipv6: true,
      userData: args.userData,
      tags: pulumi.output(net.firewallTag).apply((fw) => [...dropletTags(host, model), fw]),
    }, {
      parent: this,
      protect: host.protect,
      ...instanceChangeOptions(host, { firstBoot: ["userData", "sshKeys"], image: ["image"], forceReplaceOnImage: true }),
    });

    this.publicAddress = this.instance.ipv4Address;
    this.privateAddress = this.instance.ipv4AddressPrivate.apply((ip) => ip || undefined);
    this.publicIpv6 = this.instance.ipv6Address.apply((ip) => ip || undefined);
    this.identity = this.instance.id;
    this.registerOutputs({ publicAddress: this.publicAddress, privateAddress: this.privateAddress, identity: this.identity });
  }
}
