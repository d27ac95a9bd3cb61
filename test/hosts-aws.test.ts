// AWS hosts under mocks: instance settings, the shared per-region network, change options.
import { beforeAll, describe, expect, it } from "vitest";
import { containsSecret, installMocks, reveal, settle } from "../scripts/mock-runtime";
import { registrationsSettled, type CapturedOptions } from "./support/mocks";
import { TEST_USER_DATA } from "./support/hosts";
import { baseConfig, mockConfig, modelFrom } from "./support/fixtures";

const cfg = baseConfig();
cfg.pools = { medium: { size: "medium" }, large: { size: "large" } };
cfg.hosts = {
  metal: {
    provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["large"], protect: true,
    dataVolumes: { "nix-cache": { sizeGib: 500, deviceName: "/dev/sdf" }, scratch: { sizeGib: 100, deviceName: "/dev/sdg", type: "io2", iops: 4000 } },
  },
  nested: { provider: "aws", instanceType: "c8i.4xlarge", roles: ["fireactions"], pools: ["medium"] },
  // A nested-capable type without fireactions: no nested virtualization.
  "c8i-cache": { provider: "aws", instanceType: "c8i.xlarge", roles: ["cache"] },
  "us-host": { provider: "aws", instanceType: "c7i.xlarge", roles: ["cache"], region: "us-east-1", replaceOnImageChange: true },
};
const { resources } = installMocks({ stack: "test", ...mockConfig(cfg) });

let hosts: Record<string, any>;
let captured: CapturedOptions[];
const USER_DATA = TEST_USER_DATA;

const byType = (type: string) => resources.filter((r) => r.type === type);
const instance = (name: string) => byType("aws:ec2/instance:Instance").find((r) => r.name === name)!;
const optsOf = (type: string, name: string) => captured.find((c) => c.type === type && c.name === name)!.opts;
const quiet = () => registrationsSettled(resources);

beforeAll(async () => {
  const { buildHosts } = await import("./support/hosts");
  ({ hosts, captured } = await buildHosts(modelFrom(cfg), resources, () => ({ cloud: "aws", arch: "x86_64", hash: "h", imageId: "ami-0123" })));
});

describe("AWS instance", () => {
  it("requires IMDSv2 with a hop limit of 1", () => {
    for (const name of Object.keys(hosts)) {
      expect(instance(name).inputs.metadataOptions).toEqual({ httpTokens: "required", httpPutResponseHopLimit: 1, httpEndpoint: "enabled" });
    }
  });

  it("enables nested virtualization exactly on nested fireactions types", () => {
    expect(instance("nested").inputs.cpuOptions).toEqual({ nestedVirtualization: "enabled" });
    expect(instance("metal").inputs.cpuOptions).toBeUndefined();
    expect(instance("c8i-cache").inputs.cpuOptions).toBeUndefined();
    expect(instance("us-host").inputs.cpuOptions).toBeUndefined();
  });

  it("boots the image with the user-data, kept secret", () => {
    const inputs = instance("metal").inputs;
    expect(inputs.ami).toBe("ami-0123");
    expect(inputs.instanceType).toBe("c7i.metal-24xl");
    expect(containsSecret(inputs.userData)).toBe(true);
    expect(reveal(inputs.userData)).toBe(USER_DATA);
  });

  it("has an encrypted gp3 root and the data volumes by device name", () => {
    const inputs = instance("metal").inputs;
    expect(inputs.rootBlockDevice).toMatchObject({ volumeType: "gp3", volumeSize: 50, encrypted: true });
    expect(inputs.ebsBlockDevices).toEqual([
      expect.objectContaining({ deviceName: "/dev/sdf", volumeSize: 500, volumeType: "gp3", encrypted: true }),
      expect.objectContaining({ deviceName: "/dev/sdg", volumeSize: 100, volumeType: "io2", iops: 4000, encrypted: true }),
    ]);
  });

  it("is tagged with fleet, host, stack and roles", () => {
    expect(instance("nested").inputs.tags).toMatchObject({ Name: "nested", fleet: "runner-fleet", host: "nested", stack: "test", roles: "fireactions" });
  });

  it("ignores user-data and AMI changes unless replaceOnImageChange", () => {
    const opts = optsOf("aws:ec2/instance:Instance", "metal");
    expect(opts.ignoreChanges).toEqual(expect.arrayContaining(["userData", "ami"]));
    // A replaced key pair (first key rotated) must not replace the instances either.
    expect(opts.ignoreChanges).toContain("keyName");
    const optIn = optsOf("aws:ec2/instance:Instance", "us-host");
    expect(optIn.ignoreChanges).toEqual(["userData", "keyName"]);
    expect(optIn.replaceOnChanges).toBeUndefined();
  });

  it("protects only hosts that ask for it", () => {
    expect(optsOf("aws:ec2/instance:Instance", "metal").protect).toBe(true);
    expect(optsOf("aws:ec2/instance:Instance", "nested").protect).toBe(false);
  });

  it("exposes the common outputs", async () => {
    const h = hosts.metal;
    expect(h.provider).toBe("aws");
    expect(h.arch).toBe("x86_64");
    expect(h.sshUser).toBe("deploy");
    expect(h.instance).toBeDefined();
    expect((await settle(h.publicAddress)).value).toMatch(/^203\.0\.113\.\d+$/);
    expect((await settle(h.privateAddress)).value).toMatch(/^10\.20\.\d+\.\d+$/);
    expect((await settle(h.identity)).value).toBe("metal-id");
  });
});

describe("AWS shared network", () => {
  it("creates one security group and key pair per region, through the default provider", () => {
    // Explicit providers would drop the user's aws:profile / assume-role settings.
    expect(byType("pulumi:providers:aws")).toEqual([]);
    const groups = byType("aws:ec2/securityGroup:SecurityGroup");
    expect(groups.map((r) => [r.name, r.inputs.region]).sort()).toEqual([["eu-central-1-ssh", "eu-central-1"], ["us-east-1-ssh", "us-east-1"]]);
    const keys = byType("aws:ec2/keyPair:KeyPair");
    expect(keys.map((r) => [r.name, r.inputs.region]).sort()).toEqual([["eu-central-1-ssh", "eu-central-1"], ["us-east-1-ssh", "us-east-1"]]);
  });

  it("puts each instance in its region with that region's group", async () => {
    expect(instance("us-host").inputs.region).toBe("us-east-1");
    expect(instance("metal").inputs.region).toBe("eu-central-1");
    expect(instance("us-host").inputs.vpcSecurityGroupIds).toEqual(["us-east-1-ssh-id"]);
    expect(instance("nested").inputs.vpcSecurityGroupIds).toEqual(["eu-central-1-ssh-id"]);
  });

  it("opens SSH to the admin CIDRs only, egress to all", () => {
    const sg = byType("aws:ec2/securityGroup:SecurityGroup").find((r) => r.name === "eu-central-1-ssh")!.inputs as any;
    expect(sg.vpcId).toBe("vpc-default");
    expect(sg.ingress).toEqual([expect.objectContaining({ fromPort: 22, toPort: 22, protocol: "tcp", cidrBlocks: ["198.51.100.0/24"] })]);
    expect(JSON.stringify(sg.ingress)).not.toContain("0.0.0.0/0");
    expect(JSON.stringify(sg.ingress)).not.toContain("::/0");
    expect(sg.egress).toEqual([expect.objectContaining({ protocol: "-1", cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"] })]);
  });

  it("opens SSH to the world only with allowFromAnywhere, IPv4 and IPv6 in separate rules", async () => {
    const { SharedNetworks } = await import("../components/hosts/network");
    const open = baseConfig();
    open.ssh = { ...open.ssh, adminCidrs: ["2001:db8::/32"], allowFromAnywhere: true };
    open.hosts = { far: { provider: "aws", instanceType: "c7i.xlarge", roles: ["cache"], region: "ap-south-1", subnetId: "subnet-9" } };
    new SharedNetworks("network-open", { model: modelFrom(open) });
    await quiet();
    const sg = byType("aws:ec2/securityGroup:SecurityGroup").find((r) => r.name === "ap-south-1-subnet-9-ssh")!.inputs as any;
    expect(sg.ingress).toEqual([
      expect.objectContaining({ fromPort: 22, cidrBlocks: ["0.0.0.0/0"] }),
      expect.objectContaining({ fromPort: 22, ipv6CidrBlocks: ["::/0"] }),
    ]);
    // A given subnet decides the VPC.
    expect(sg.vpcId).toBe("vpc-custom");
  });
});
