/**
 * A Hetzner Cloud server. Hetzner Cloud exposes no /dev/kvm, so these hosts run the non-KVM
 * roles (cache, host-mode runners; config.ts enforces it). They start from our snapshot
 * (`image: nix`) or from stock Debian, which nixos-anywhere replaces with NixOS later.
 */
import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import type { HetznerHost as HetznerHostModel } from "../model";
import { hetznerLabel, hostTags, instanceChangeOptions } from "./common";
import { bootImage, HostComponent } from "./base";
import type { HostArgs } from "./types";

/** A host on Hetzner Cloud (`provider: hetzner`). */
export type HetznerHostArgs = HostArgs<HetznerHostModel>;

/** The stock image nixos-anywhere installs over (it needs a kexec-capable Linux). */
export const HETZNER_STOCK_IMAGE = "debian-12";

/** Hetzner labels from the common tags (keys and values in Hetzner's narrower alphabet). */
export function hetznerLabels(tags: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(tags).map(([k, v]) => [k, hetznerLabel(v.replace(/ /g, "."))]));
}

export class HetznerHost extends HostComponent {
  readonly provider = "hetzner" as const;
  readonly publicAddress: pulumi.Output<string>;
  readonly privateAddress: pulumi.Output<string | undefined>;
  readonly publicIpv6: pulumi.Output<string | undefined>;
  readonly instance: hcloud.Server;
  readonly identity: pulumi.Output<string>;

  constructor(name: string, args: HetznerHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:hosts:HetznerHost", "hetzner", name, args, opts);
    const { host, model, image } = args;
    const snapshot = bootImage(host, "hetzner", image);
    const net = args.networks.hetzner(host);

    this.instance = new hcloud.Server(host.name, {
      serverType: host.serverType,
      location: host.location,
      image: snapshot ? snapshot.imageId : HETZNER_STOCK_IMAGE,
      sshKeys: [net.sshKeyId],
      // On the server itself, so the firewall is in place from the first boot.
      firewallIds: [net.firewallId],
      ...(net.placementGroupId ? { placementGroupId: net.placementGroupId } : {}),
      publicNets: [{ ipv4Enabled: true, ipv6Enabled: true }],
      userData: args.userData,
      labels: hetznerLabels(hostTags(host, model)),
    }, {
      parent: this,
      protect: host.protect,
      ...instanceChangeOptions(host, { firstBoot: ["userData", "sshKeys"], image: ["image"], forceReplaceOnImage: true }),
    });

    this.publicAddress = this.instance.ipv4Address;
    // No private network: the servers talk over the public one (behind the firewall).
    this.privateAddress = pulumi.output(undefined);
    // The server's own /64 (hcloud Server.ipv6Network): whichever address of it the OS sends from.
    this.publicIpv6 = this.instance.ipv6Network.apply((n) => n || undefined);
    this.identity = this.instance.id;
    this.registerOutputs({ publicAddress: this.publicAddress, identity: this.identity });
  }
}
