/**
 * Every image a host boots from, uploaded once per content hash to each cloud (and region) that
 * needs it. One component per cloud does the upload; this one works out where each image must
 * go from the hosts, creates the shared buckets and roles once, and hands hosts their image id.
 *
 * Image resources are named `<cloud>-<arch>-<hash>[-<region>]`: an unchanged image is the same
 * resource (never uploaded again); a new hash is a new resource, created before the old one is
 * deleted, and touching one arch's image touches nothing of another arch.
 */
import * as pulumi from "@pulumi/pulumi";
import type { Arch, Cloud, FleetModel, HostModel, ImageSourceModel } from "../model";
import { AwsImage, AwsImageStore } from "./aws";
import { AzureImage, AzureImageStore } from "./azure";
import { DigitalOceanImage, DigitalOceanImageStore, spacesRegion } from "./digitalocean";
import { HetznerImage } from "./hetzner";
import { imageResourceName } from "./source";
import type { ImageRef } from "./types";

export interface FleetImagesArgs {
  /** The validated fleet model; its `images` lists what hosts boot from. */
  model: FleetModel;
}

/** Where a host's image must be: its AWS region, Azure location or DigitalOcean region. Hetzner snapshots are project-wide. */
export function imageRegion(host: HostModel): string | undefined {
  switch (host.provider) {
    case "aws":
    case "digitalocean":
      return host.region;
    case "azure":
      return host.location;
    default:
      return undefined;
  }
}

/** For each (cloud, arch) image: the sorted regions of the hosts that boot from it. */
export function imagePlacements(model: Pick<FleetModel, "hosts" | "images">): Map<string, string[]> {
  const placements = new Map<string, Set<string>>();
  for (const image of model.images) placements.set(`${image.cloud}.${image.arch}`, new Set());
  for (const host of model.hosts) {
    if (host.provider === "existing" || host.image !== "nix") continue;
    const regions = placements.get(`${host.provider}.${host.arch}`);
    if (!regions) throw new Error(`host ${host.name} boots from a ${host.arch} ${host.provider} image that images.${host.provider}.${host.arch} does not configure`);
    const region = imageRegion(host);
    if (region !== undefined) {
      if (region === "") throw new Error(`host ${host.name}: no region/location to put its image in`);
      regions.add(region);
    }
  }
  return new Map([...placements].map(([key, regions]) => [key, [...regions].sort()]));
}

const uniqueSorted = (xs: string[]) => [...new Set(xs)].sort();

export class FleetImages extends pulumi.ComponentResource {
  /** Image id by `<cloud>.<arch>`, then by region ("" for project-wide Hetzner snapshots). */
  private readonly ids = new Map<string, { image: ImageSourceModel; byRegion: Record<string, pulumi.Output<string>> }>();

  constructor(name: string, args: FleetImagesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:FleetImages", name, {}, opts);
    const { model } = args;
    const placements = imagePlacements(model);
    const seen = new Set<string>();
    for (const image of model.images) {
      const key = `${image.cloud}.${image.arch}`;
      if (seen.has(key)) throw new Error(`images.${key}: listed twice in the fleet model`);
      seen.add(key);
      if (!/^[0-9a-df-np-sv-z]{32}$/.test(image.hash)) throw new Error(`images.${key}: ${JSON.stringify(image.hash)} is not a Nix store hash`);
    }
    const of = (cloud: Cloud) => model.images.filter((i) => i.cloud === cloud);
    const regionsOf = (image: ImageSourceModel) => placements.get(`${image.cloud}.${image.arch}`) ?? [];
    const child = { parent: this };

    const aws = of("aws");
    if (aws.length > 0) {
      const store = new AwsImageStore("aws-images", { regions: uniqueSorted(aws.flatMap(regionsOf)) }, child);
      for (const image of aws) {
        const uploaded = new AwsImage(imageResourceName(image), { image, regions: regionsOf(image), store, stack: model.stack }, child);
        this.ids.set(`aws.${image.arch}`, { image, byRegion: uploaded.imageIds });
      }
    }

    const azure = of("azure");
    if (azure.length > 0) {
      const store = new AzureImageStore("azure-images", { locations: uniqueSorted(azure.flatMap(regionsOf)), stack: model.stack }, child);
      for (const image of azure) {
        const uploaded = new AzureImage(imageResourceName(image), { image, locations: regionsOf(image), store }, child);
        this.ids.set(`azure.${image.arch}`, { image, byRegion: uploaded.imageIds });
      }
    }

    const digitalocean = of("digitalocean");
    if (digitalocean.length > 0) {
      const store = new DigitalOceanImageStore("do-images", { spacesRegions: uniqueSorted(digitalocean.flatMap(regionsOf).map(spacesRegion)) }, child);
      for (const image of digitalocean) {
        const uploaded = new DigitalOceanImage(imageResourceName(image), { image, regions: regionsOf(image), store }, child);
        this.ids.set(`digitalocean.${image.arch}`, { image, byRegion: uploaded.imageIds });
      }
    }

    // One at a time: a failed upload's cleanup removes every temporary server hcloud-upload-image made.
    let previousUpload: pulumi.Resource[] = [];
    for (const image of of("hetzner")) {
      const uploaded = new HetznerImage(imageResourceName(image), { image, stack: model.stack, after: previousUpload }, child);
      previousUpload = [uploaded.upload];
      this.ids.set(`hetzner.${image.arch}`, { image, byRegion: { "": uploaded.imageId } });
    }

    this.registerOutputs({});
  }

  /**
   * The image hosts of `cloud` and `arch` boot from; `region` picks the regional copy (AWS
   * region, Azure location, DigitalOcean region). Without a region, the image must be in exactly
   * one region (or be a Hetzner snapshot).
   */
  ref(cloud: Cloud, arch: Arch, region?: string): ImageRef | undefined {
    const found = this.ids.get(`${cloud}.${arch}`);
    if (!found) return undefined;
    const regions = Object.keys(found.byRegion);
    const pick = cloud === "hetzner" ? "" : region ?? (regions.length === 1 ? regions[0] : undefined);
    if (pick === undefined) throw new Error(`images.${cloud}.${arch} is in several regions (${regions.join(", ")}): ask for one`);
    const imageId = found.byRegion[pick];
    if (!imageId) throw new Error(`images.${cloud}.${arch} is not uploaded to ${pick} (uploaded to: ${regions.join(", ")})`);
    return { cloud, arch, hash: found.image.hash, imageId };
  }

  /** The image a host boots from, in its region; undefined for stock images and existing machines. */
  refFor(host: HostModel): ImageRef | undefined {
    if (host.provider === "existing" || host.image !== "nix") return undefined;
    return this.ref(host.provider, host.arch, imageRegion(host));
  }
}
