/**
 * Sizes of the instance types runner-fleet knows, so capacity and KVM can be checked before
 * anything is created. Figures are the vendors' published sizes:
 *  - AWS: "Amazon EC2 instance types" specifications (docs.aws.amazon.com/ec2/latest/instancetypes);
 *    KVM on *.metal, and nested virtualization on C8i/M8i/R8i (+flex) via
 *    `cpuOptions.nestedVirtualization` (see shared/reference/images.md).
 *  - Azure: "Sizes for virtual machines in Azure" (learn.microsoft.com/azure/virtual-machines/sizes);
 *    nested virtualization on the Dv3/Dsv3, Dv4/Dsv4/Ddv4/Ddsv4, Ev3/Ev4/Edv4/Edsv4, Fsv2,
 *    Ddsv5/Edsv5 families.
 *  - Hetzner Cloud: server types from the hcloud API / hetzner.com/cloud; no /dev/kvm on any.
 *  - DigitalOcean: droplet size slugs (docs.digitalocean.com/products/droplets/concepts/choosing-a-plan);
 *    nested virtualization is not documented, so KVM needs an explicit override.
 */
import type { Arch, Provider } from "./model";

export type KvmSupport = "metal" | "nested" | "none" | "undocumented";

export interface InstanceSpec {
  vcpus: number;
  memoryMib: number;
  arch: Arch;
  kvm: KvmSupport;
}

const GIB = 1024;

function spec(vcpus: number, memoryGib: number, arch: Arch, kvm: KvmSupport): InstanceSpec {
  return { vcpus, memoryMib: memoryGib * GIB, arch, kvm };
}

/** Generates a family whose memory is a fixed number of GiB per vCPU. */
function family(
  name: (vcpus: number, suffix: string) => string,
  sizes: Array<[suffix: string, vcpus: number]>,
  gibPerVcpu: number,
  arch: Arch,
  kvm: KvmSupport,
): Record<string, InstanceSpec> {
  return Object.fromEntries(
    sizes.map(([suffix, vcpus]) => [name(vcpus, suffix), spec(vcpus, vcpus * gibPerVcpu, arch, kvm)]),
  );
}

// AWS 8th-generation Intel sizes (large = 2 vCPU ... 48xlarge = 192 vCPU).
const AWS_8I_SIZES: Array<[string, number]> = [
  ["large", 2], ["xlarge", 4], ["2xlarge", 8], ["4xlarge", 16], ["8xlarge", 32],
  ["12xlarge", 48], ["16xlarge", 64], ["24xlarge", 96], ["32xlarge", 128], ["48xlarge", 192],
];
const AWS_8I_FLEX_SIZES = AWS_8I_SIZES.filter(([, vcpus]) => vcpus <= 64);
const awsName = (prefix: string) => (_: number, suffix: string) => `${prefix}.${suffix}`;

const AWS: Record<string, InstanceSpec> = {
  // Bare metal, x86_64.
  "c5.metal": spec(96, 192, "x86_64", "metal"),
  "m5.metal": spec(96, 384, "x86_64", "metal"),
  "c6i.metal": spec(128, 256, "x86_64", "metal"),
  "m6i.metal": spec(128, 512, "x86_64", "metal"),
  "c7i.metal-24xl": spec(96, 192, "x86_64", "metal"),
  "c7i.metal-48xl": spec(192, 384, "x86_64", "metal"),
  "m7i.metal-24xl": spec(96, 384, "x86_64", "metal"),
  "m7i.metal-48xl": spec(192, 768, "x86_64", "metal"),
  // Bare metal, Graviton (the only way to KVM on Graviton).
  "c6g.metal": spec(64, 128, "aarch64", "metal"),
  "m6g.metal": spec(64, 256, "aarch64", "metal"),
  "c7g.metal": spec(64, 128, "aarch64", "metal"),
  "m7g.metal": spec(64, 256, "aarch64", "metal"),
  "c8g.metal-24xl": spec(96, 192, "aarch64", "metal"),
  "c8g.metal-48xl": spec(192, 384, "aarch64", "metal"),
  // Nested virtualization (cpuOptions.nestedVirtualization = "enabled").
  ...family(awsName("c8i"), AWS_8I_SIZES, 2, "x86_64", "nested"),
  ...family(awsName("m8i"), AWS_8I_SIZES, 4, "x86_64", "nested"),
  ...family(awsName("r8i"), AWS_8I_SIZES, 8, "x86_64", "nested"),
  ...family(awsName("c8i-flex"), AWS_8I_FLEX_SIZES, 2, "x86_64", "nested"),
  ...family(awsName("m8i-flex"), AWS_8I_FLEX_SIZES, 4, "x86_64", "nested"),
  ...family(awsName("r8i-flex"), AWS_8I_FLEX_SIZES, 8, "x86_64", "nested"),
  // No KVM: for cache and host-mode runner roles.
  "t3.medium": spec(2, 4, "x86_64", "none"),
  "t3.large": spec(2, 8, "x86_64", "none"),
  "c7i.xlarge": spec(4, 8, "x86_64", "none"),
  "c7i.2xlarge": spec(8, 16, "x86_64", "none"),
  "m7i.xlarge": spec(4, 16, "x86_64", "none"),
  "m7i.2xlarge": spec(8, 32, "x86_64", "none"),
  "c7g.xlarge": spec(4, 8, "aarch64", "none"),
  "c7g.2xlarge": spec(8, 16, "aarch64", "none"),
  "m7g.xlarge": spec(4, 16, "aarch64", "none"),
  "m7g.2xlarge": spec(8, 32, "aarch64", "none"),
};

const AZURE_SIZES: Array<[string, number]> = [["2", 2], ["4", 4], ["8", 8], ["16", 16], ["32", 32], ["48", 48], ["64", 64]];
const azureName = (letter: string, tail: string) => (vcpus: number) => `Standard_${letter}${vcpus}${tail}`;

const AZURE: Record<string, InstanceSpec> = {
  ...family(azureName("D", "_v3"), AZURE_SIZES, 4, "x86_64", "nested"),
  ...family(azureName("D", "s_v3"), AZURE_SIZES, 4, "x86_64", "nested"),
  ...family(azureName("D", "_v4"), AZURE_SIZES, 4, "x86_64", "nested"),
  ...family(azureName("D", "s_v4"), AZURE_SIZES, 4, "x86_64", "nested"),
  ...family(azureName("D", "d_v4"), AZURE_SIZES, 4, "x86_64", "nested"),
  ...family(azureName("D", "ds_v4"), AZURE_SIZES, 4, "x86_64", "nested"),
  ...family(azureName("D", "ds_v5"), AZURE_SIZES, 4, "x86_64", "nested"),
  ...family(azureName("E", "_v3"), AZURE_SIZES, 8, "x86_64", "nested"),
  ...family(azureName("E", "_v4"), AZURE_SIZES, 8, "x86_64", "nested"),
  ...family(azureName("E", "d_v4"), AZURE_SIZES, 8, "x86_64", "nested"),
  ...family(azureName("E", "ds_v4"), AZURE_SIZES, 8, "x86_64", "nested"),
  ...family(azureName("E", "ds_v5"), AZURE_SIZES, 8, "x86_64", "nested"),
  ...family(azureName("F", "s_v2"), AZURE_SIZES, 2, "x86_64", "nested"),
  // Burstable sizes have no nested virtualization.
  Standard_B2s: spec(2, 4, "x86_64", "none"),
  Standard_B4ms: spec(4, 16, "x86_64", "none"),
};

const HETZNER: Record<string, InstanceSpec> = {
  cx22: spec(2, 4, "x86_64", "none"),
  cx32: spec(4, 8, "x86_64", "none"),
  cx42: spec(8, 16, "x86_64", "none"),
  cx52: spec(16, 32, "x86_64", "none"),
  cpx21: spec(3, 4, "x86_64", "none"),
  cpx31: spec(4, 8, "x86_64", "none"),
  cpx41: spec(8, 16, "x86_64", "none"),
  cpx51: spec(16, 32, "x86_64", "none"),
  ccx13: spec(2, 8, "x86_64", "none"),
  ccx23: spec(4, 16, "x86_64", "none"),
  ccx33: spec(8, 32, "x86_64", "none"),
  ccx43: spec(16, 64, "x86_64", "none"),
  ccx53: spec(32, 128, "x86_64", "none"),
  ccx63: spec(48, 192, "x86_64", "none"),
  cax11: spec(2, 4, "aarch64", "none"),
  cax21: spec(4, 8, "aarch64", "none"),
  cax31: spec(8, 16, "aarch64", "none"),
  cax41: spec(16, 32, "aarch64", "none"),
};

const DIGITALOCEAN: Record<string, InstanceSpec> = {
  "s-1vcpu-1gb": spec(1, 1, "x86_64", "undocumented"),
  "s-1vcpu-2gb": spec(1, 2, "x86_64", "undocumented"),
  "s-2vcpu-2gb": spec(2, 2, "x86_64", "undocumented"),
  "s-2vcpu-4gb": spec(2, 4, "x86_64", "undocumented"),
  "s-4vcpu-8gb": spec(4, 8, "x86_64", "undocumented"),
  "s-8vcpu-16gb": spec(8, 16, "x86_64", "undocumented"),
  "c-4": spec(4, 8, "x86_64", "undocumented"),
  "c-8": spec(8, 16, "x86_64", "undocumented"),
  "c-16": spec(16, 32, "x86_64", "undocumented"),
  "c-32": spec(32, 64, "x86_64", "undocumented"),
  "g-4vcpu-16gb": spec(4, 16, "x86_64", "undocumented"),
  "g-8vcpu-32gb": spec(8, 32, "x86_64", "undocumented"),
};

export const CATALOG: Record<Exclude<Provider, "existing">, Record<string, InstanceSpec>> = {
  aws: AWS,
  azure: AZURE,
  hetzner: HETZNER,
  digitalocean: DIGITALOCEAN,
};

export function lookupInstance(provider: Exclude<Provider, "existing">, type: string): InstanceSpec | undefined {
  return Object.hasOwn(CATALOG[provider], type) ? CATALOG[provider][type] : undefined;
}

// ---------------------------------------------------------------------------------------------
// Where hosts can go, and what the clouds accept (each list's source is in docs/upstream.md,
// section "Config validation").

/** AWS regions: the `Region` enum of @pulumi/aws 7.48.0 (types/enums). */
export const AWS_REGIONS: readonly string[] = [
  "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
  "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
  "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2",
  "eu-west-3", "il-central-1", "me-central-1", "me-south-1", "mx-central-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1",
  "us-west-2", "cn-north-1", "cn-northwest-1", "eusc-de-east-1", "us-gov-east-1", "us-gov-west-1", "us-iso-east-1",
  "us-iso-west-1", "us-isob-east-1", "us-isob-west-1", "eu-isoe-west-1", "us-isof-east-1", "us-isof-south-1",
];

/**
 * Azure public-cloud locations (`az account list-locations` names). @pulumi/azure-native has no
 * location enum and no Azure source was reachable to check this list: add a location here to use it.
 */
export const AZURE_LOCATIONS: readonly string[] = [
  "australiacentral", "australiacentral2", "australiaeast", "australiasoutheast", "austriaeast", "belgiumcentral", "brazilsouth",
  "brazilsoutheast", "canadacentral", "canadaeast", "centralindia", "centralus", "chilecentral", "eastasia", "eastus", "eastus2",
  "francecentral", "francesouth", "germanynorth", "germanywestcentral", "indonesiacentral", "israelcentral", "italynorth",
  "japaneast", "japanwest", "jioindiacentral", "jioindiawest", "koreacentral", "koreasouth", "malaysiawest", "mexicocentral",
  "newzealandnorth", "northcentralus", "northeurope", "norwayeast", "norwaywest", "polandcentral", "qatarcentral",
  "southafricanorth", "southafricawest", "southcentralus", "southindia", "southeastasia", "spaincentral", "swedencentral",
  "swedensouth", "switzerlandnorth", "switzerlandwest", "uaecentral", "uaenorth", "uksouth", "ukwest", "westcentralus",
  "westeurope", "westindia", "westus", "westus2", "westus3",
];

/** DigitalOcean droplet regions: the `Region` enum of @pulumi/digitalocean 4.80.1, plus atl1 (opened later). */
export const DIGITALOCEAN_REGIONS: readonly string[] = [
  "nyc1", "nyc2", "nyc3", "sgp1", "lon1", "ams2", "ams3", "fra1", "tor1", "sfo1", "sfo2", "sfo3", "blr1", "syd1", "atl1",
];

/** Droplet region -> the Spaces region nearest it, where nix images are staged (components/images/digitalocean.ts). */
export const DIGITALOCEAN_SPACES_REGIONS: Readonly<Record<string, string>> = {
  nyc1: "nyc3", nyc2: "nyc3", nyc3: "nyc3",
  sfo1: "sfo3", sfo2: "sfo2", sfo3: "sfo3",
  ams2: "ams3", ams3: "ams3",
  sgp1: "sgp1", lon1: "lon1", fra1: "fra1", tor1: "tor1", blr1: "blr1", syd1: "syd1", atl1: "atl1",
};

/** Hetzner Cloud locations. */
export const HETZNER_LOCATIONS = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"] as const;

/** Servers a Hetzner spread placement group may hold. */
export const HETZNER_SPREAD_GROUP_MAX = 10;

export interface EbsVolumeRule {
  sizeGib: [number, number];
  /** required: io2 must name its iops; none: st1 takes none; a range: accepted values. */
  iops: "required" | "none" | "optional";
  iopsRange?: [number, number];
  /** Accepted throughput in MiB/s; undefined: the type takes none. */
  throughput?: [number, number];
}

/** EBS volume types runner-fleet offers, and what EC2 CreateVolume accepts for each. */
export const EBS_VOLUME_RULES: Readonly<Record<"gp3" | "io2" | "st1", EbsVolumeRule>> = {
  gp3: { sizeGib: [1, 65536], iops: "optional", iopsRange: [3000, 80000], throughput: [125, 2000] },
  io2: { sizeGib: [4, 65536], iops: "required", iopsRange: [100, 256000] },
  st1: { sizeGib: [125, 16384], iops: "none" },
};
