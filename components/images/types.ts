import type * as pulumi from "@pulumi/pulumi";
import type { Arch, Cloud } from "../model";

/** An uploaded image a host can boot from. */
export interface ImageRef {
  cloud: Cloud;
  arch: Arch;
  /** Nix store hash: the image's content address, part of every image resource's name. */
  hash: string;
  /** The cloud's id for it: AMI id, Azure image id, Hetzner snapshot id, DigitalOcean image id. */
  imageId: pulumi.Output<string>;
}
