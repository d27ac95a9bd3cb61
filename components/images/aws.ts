/**
 * AWS: image file -> private S3 bucket -> EC2 import-snapshot (the vmimport service role) -> AMI,
 * in every region a host of that arch runs in. Buckets and the role are shared by every image;
 * an image's own resources carry its hash in their names.
 *
 * Regions: @pulumi/aws 7 takes a `region` input on every regional resource, so the default
 * provider reaches every region and this module needs no provider per region (nor the hosts'
 * providers): images stay independent of how hosts are wired.
 */
import * as ec2 from "@pulumi/aws/ec2";
import * as s3 from "@pulumi/aws/s3";
import * as iam from "@pulumi/aws/iam";
import * as ebs from "@pulumi/aws/ebs";
import * as pulumi from "@pulumi/pulumi";
import type { Arch, ImageSourceModel } from "../model";
import { imageFilePath, imageObjectKey, imageResourceName } from "./source";

// ---------------------------------------------------------------------------------------------
// Pure parts

/** Trust policy of the role EC2 VM Import assumes (the documented `vmimport` conditions). */
export function vmimportTrustPolicy(): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [{
      Effect: "Allow",
      Principal: { Service: "vmie.amazonaws.com" },
      Action: "sts:AssumeRole",
      Condition: { StringEquals: { "sts:Externalid": "vmimport" } },
    }],
  });
}

/** What VM Import may do: read the image buckets, create and register snapshots. */
export function vmimportPolicy(bucketArns: string[]): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      {
        Effect: "Allow",
        Action: ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
        Resource: [...bucketArns, ...bucketArns.map((arn) => `${arn}/*`)],
      },
      {
        Effect: "Allow",
        Action: ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot", "ec2:RegisterImage", "ec2:Describe*"],
        Resource: "*",
      },
    ],
  });
}

/** import-snapshot's name for a disk format. */
export function snapshotFormat(format: ImageSourceModel["format"]): "VHD" | "RAW" {
  if (format === "vhd") return "VHD";
  if (format === "raw") return "RAW";
  throw new Error(`AWS imports VHD or raw images, not ${format}`);
}

/** AMI settings per arch: nixpkgs builds arm64 images for UEFI and x86_64 for legacy BIOS. */
export function amiSettings(arch: Arch): { architecture: "x86_64" | "arm64"; bootMode: "legacy-bios" | "uefi" } {
  return arch === "aarch64" ? { architecture: "arm64", bootMode: "uefi" } : { architecture: "x86_64", bootMode: "legacy-bios" };
}

// ---------------------------------------------------------------------------------------------
// Shared storage: one private bucket per region, one import role for the account

export interface AwsImageStoreArgs {
  /** Every region some AWS image goes to (sorted, unique). */
  regions: string[];
}

export class AwsImageStore extends pulumi.ComponentResource {
  /** The role import-snapshot runs as. */
  readonly role: iam.Role;
  /** The role's permissions; imports wait for it. */
  readonly rolePolicy: iam.RolePolicy;
  private readonly buckets = new Map<string, { bucket: s3.Bucket; ready: pulumi.Resource[] }>();

  constructor(name: string, args: AwsImageStoreArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:AwsImageStore", name, {}, opts);
    if (args.regions.length === 0) throw new Error(`${name}: no region to store images in`);
    for (const region of args.regions) {
      if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(region)) throw new Error(`${name}: ${JSON.stringify(region)} is not an AWS region`);
    }

    for (const region of args.regions) {
      const id = `aws-images-${region}`;
      const bucket = new s3.Bucket(id, { region, tags: { "runner-fleet": "images" } }, { parent: this });
      // Images never leave the account: no ACLs, no public access, encrypted at rest.
      const ready = [
        new s3.BucketPublicAccessBlock(id, {
          region, bucket: bucket.id,
          blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true,
        }, { parent: this }),
        new s3.BucketOwnershipControls(id, { region, bucket: bucket.id, rule: { objectOwnership: "BucketOwnerEnforced" } }, { parent: this }),
        new s3.BucketServerSideEncryptionConfiguration(id, {
          region, bucket: bucket.id,
          rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" } }],
        }, { parent: this }),
      ];
      this.buckets.set(region, { bucket, ready });
    }

    // IAM is global: one role for every region. A role of our own (not the account's `vmimport`)
    // so two stacks or a hand-made role never collide; import-snapshot takes its name.
    this.role = new iam.Role("aws-images-vmimport", {
      assumeRolePolicy: vmimportTrustPolicy(),
      description: "EC2 VM Import reads runner-fleet images from S3",
    }, { parent: this });
    const arns = [...this.buckets.values()].map(({ bucket }) => bucket.arn);
    this.rolePolicy = new iam.RolePolicy("aws-images-vmimport", {
      role: this.role.id,
      policy: pulumi.all(arns).apply(vmimportPolicy),
    }, { parent: this });

    this.registerOutputs({});
  }

  /** The bucket of a region, and the settings an upload must wait for. */
  bucket(region: string): { bucket: s3.Bucket; ready: pulumi.Resource[] } {
    const found = this.buckets.get(region);
    if (!found) throw new Error(`no AWS image bucket in ${region}`);
    return found;
  }
}

// ---------------------------------------------------------------------------------------------
// One image, in every region it is needed

export interface AwsImageArgs {
  /** The image: store path, hash, file (absent in offline plans), format. */
  image: ImageSourceModel;
  /** The regions hosts of this arch run in (sorted, unique). */
  regions: string[];
  /** The shared buckets and import role. */
  store: AwsImageStore;
  /** Stack name: part of the AMI name, which is unique per account and region. */
  stack: string;
}

export class AwsImage extends pulumi.ComponentResource {
  /** AMI id by region. */
  readonly imageIds: Record<string, pulumi.Output<string>> = {};

  constructor(name: string, args: AwsImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:AwsImage", name, {}, opts);
    const { image, store } = args;
    if (image.cloud !== "aws") throw new Error(`${name}: a ${image.cloud} image given to AwsImage`);
    if (image.compression) throw new Error(`images.aws.${image.arch}: AWS cannot import ${image.compression}-compressed images`);
    const format = snapshotFormat(image.format);
    const { architecture, bootMode } = amiSettings(image.arch);
    const file = imageFilePath(image);
    const key = imageObjectKey(image);
    const description = `runner-fleet ${image.arch} image ${image.hash}`;
    const tags = { "runner-fleet": "images", "runner-fleet-hash": image.hash, "runner-fleet-arch": image.arch };

    for (const region of args.regions) {
      const id = imageResourceName(image, region);
      const { bucket, ready } = store.bucket(region);
      // The file is read by the engine at upload time only; offline plans (no file) upload nothing.
      const object = new s3.BucketObjectv2(id, {
        region, bucket: bucket.id, key,
        ...(file ? { source: new pulumi.asset.FileAsset(file) } : {}),
        contentType: "application/octet-stream",
        tags,
      }, { parent: this, dependsOn: ready });
      const snapshot = new ebs.SnapshotImport(id, {
        region,
        description,
        diskContainer: { format, userBucket: { s3Bucket: object.bucket, s3Key: object.key } },
        // A role's id is its name (known in offline plans too).
        roleName: store.role.id,
        tags,
      }, { parent: this, dependsOn: [store.rolePolicy] });
      const ami = new ec2.Ami(id, {
        region,
        name: `runner-fleet-${args.stack}-${image.arch}-${image.hash}`,
        description,
        virtualizationType: "hvm",
        rootDeviceName: "/dev/xvda",
        ebsBlockDevices: [{ deviceName: "/dev/xvda", snapshotId: snapshot.id, volumeType: "gp3", deleteOnTermination: true }],
        enaSupport: true,
        sriovNetSupport: "simple",
        imdsSupport: "v2.0",
        architecture,
        bootMode,
        tags,
      }, { parent: this });
      this.imageIds[region] = ami.id;
    }
    this.registerOutputs({ imageIds: this.imageIds });
  }
}
