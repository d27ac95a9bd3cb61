/**
 * An EC2 instance booted from our AMI. KVM comes from bare metal (*.metal) or, on C8i/M8i/R8i,
 * from nested virtualization switched on in cpuOptions. IMDSv2 only, with a hop limit of 1, so
 * runner VMs behind the host's bridge cannot get a metadata token (DESIGN.md rule 6).
 */
import * as ec2 from "@pulumi/aws/ec2";
import type * as awsInput from "@pulumi/aws/types/input";
import * as pulumi from "@pulumi/pulumi";
import type { AwsHost as AwsHostModel, DataVolume } from "../model";
import { hostTags, instanceChangeOptions } from "./common";
import { bootImage, HostComponent } from "./base";
import type { HostArgs } from "./types";

/** A host on EC2 (`provider: aws`). */
export type AwsHostArgs = HostArgs<AwsHostModel>;

/** IMDSv2 only; a hop limit of 1 keeps tokens from reaching anything forwarded by the host. */
export const AWS_METADATA_OPTIONS = { httpTokens: "required", httpPutResponseHopLimit: 1, httpEndpoint: "enabled" } as const;

/** Extra EBS volumes as the instance's block device mappings. */
export function ebsBlockDevices(volumes: readonly DataVolume[], tags: Record<string, string>): awsInput.ec2.InstanceEbsBlockDevice[] {
  // The device name is only the mapping's key: on Nitro instances (all metal and 8th-gen types)
  // the volumes appear as NVMe devices (/dev/sdf -> /dev/nvme1n1 ...), found by their serial.
  return volumes.map((v) => ({
    deviceName: v.deviceName,
    volumeSize: v.sizeGib,
    volumeType: v.type,
    encrypted: true,
    // Goes with the instance; `protect` on the instance is what keeps both.
    deleteOnTermination: true,
    ...(v.iops !== undefined ? { iops: v.iops } : {}),
    ...(v.throughput !== undefined ? { throughput: v.throughput } : {}),
    tags: { ...tags, volume: v.name },
  }));
}

export class AwsHost extends HostComponent {
  readonly provider = "aws" as const;
  readonly publicAddress: pulumi.Output<string>;
  readonly privateAddress: pulumi.Output<string | undefined>;
  readonly instance: ec2.Instance;
  readonly identity: pulumi.Output<string>;

  constructor(name: string, args: AwsHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:hosts:AwsHost", "aws", name, args, opts);
    const { host, model, image } = args;
    const ami = bootImage(host, "aws", image)!;
    const net = args.networks.aws(host);

    const tags = hostTags(host, model);

    this.instance = new ec2.Instance(host.name, {
      ami: ami.imageId,
      region: host.region,
      instanceType: host.instanceType,
      ...(host.availabilityZone ? { availabilityZone: host.availabilityZone } : {}),
      ...(host.subnetId ? { subnetId: host.subnetId } : {}),
      vpcSecurityGroupIds: [net.securityGroupId],
      ...(net.keyName ? { keyName: net.keyName } : {}),
      userData: args.userData,
      metadataOptions: { ...AWS_METADATA_OPTIONS },
      // Only the types the catalog marks "nested" (and only for fireactions): setting it on any
      // other type fails at launch.
      ...(host.nestedVirtualization ? { cpuOptions: { nestedVirtualization: "enabled" } } : {}),
      rootBlockDevice: { volumeType: "gp3", volumeSize: host.rootVolumeGib, encrypted: true, deleteOnTermination: true, tags },
      // Note: EC2 cannot change these mappings on a running instance; a change here replaces it
      // (and is refused for protected hosts).
      ebsBlockDevices: ebsBlockDevices(host.dataVolumes, tags),
      tags: { Name: host.name, ...tags },
    }, {
      parent: this,
      protect: host.protect,
      // A changed `ami` replaces the instance by itself; so it is only ignored, never forced.
      ...instanceChangeOptions(host, { firstBoot: ["userData", "keyName"], image: ["ami"] }),
    });

    // Without a public IP (a private subnet) deploy tools reach the host at its private address.
    this.publicAddress = pulumi.all([this.instance.publicIp, this.instance.privateIp]).apply(([pub, priv]) => pub || priv);
    this.privateAddress = this.instance.privateIp.apply((ip) => ip || undefined);
    this.identity = this.instance.id;
    this.registerOutputs({ publicAddress: this.publicAddress, privateAddress: this.privateAddress, identity: this.identity });
  }
}
