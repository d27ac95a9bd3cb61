// STUB: replaced by the image work (issue 5).
import * as pulumi from "@pulumi/pulumi";
import type { Arch, Cloud, FleetModel } from "../model";
import type { ImageRef } from "./types";

export interface FleetImagesArgs {
  /** The validated fleet model; its `images` lists what hosts boot from. */
  model: FleetModel;
}

export class FleetImages extends pulumi.ComponentResource {
  private readonly refs = new Map<string, ImageRef>();
  constructor(name: string, args: FleetImagesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:FleetImages", name, {}, opts);
    for (const img of args.model.images) {
      this.refs.set(`${img.cloud}.${img.arch}`, { cloud: img.cloud, arch: img.arch, hash: img.hash, imageId: pulumi.output(`img-${img.hash}`) });
    }
    this.registerOutputs({});
  }
  ref(cloud: Cloud, arch: Arch): ImageRef | undefined {
    return this.refs.get(`${cloud}.${arch}`);
  }
}
