import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { installMocks, settle } from "../scripts/mock-runtime";
import { ConfigError } from "../components/config";
import { baseConfig, mockConfig, modelFrom, planJson } from "./support/fixtures";

// Mocks first; modules that create resources only after.
const { resources } = installMocks({ stack: "test", ...mockConfig(baseConfig()) });
const { FleetImages, imagePlacements } = await import("../components/images");
const source = await import("../components/images/source");
const { vmimportTrustPolicy, vmimportPolicy } = await import("../components/images/aws");
const { AZURE_UPLOAD_SCRIPT } = await import("../components/images/azure");
const { HETZNER_DELETE_SCRIPT, HETZNER_UPLOAD_SCRIPT, hcloudCompression } = await import("../components/images/hetzner");
const { PRESIGN_SCRIPT, spacesRegion } = await import("../components/images/digitalocean");
const { COMMAND_ENV, withOnlyEnv } = await import("../components/command-env");
type FleetModel = import("../components/model").FleetModel;

// Nix base32 hashes (no e, o, t, u).
const H = {
  awsX86: "8qp8fwyrn2m1ajzgcddwn7iz8imnckfn",
  awsArm: "wic7bgczhgqp3v4k0b21x1yc0hxwq2x2",
  awsArm2: "1zx9k3m4n5p6q7r8s9v0w1x2y3z4a5b6",
  azure: "6nzfbdasmrlnpmjmxh2n3gpl8qyzi4hc",
  hetzner: "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r",
  hetznerArm: "9s8r7q6p5n4m3l2k1j0i9h8g7f6d5c4b",
  digitalocean: "3v4w5x6y7z8a9b0c1d2f3g4h5i6j7k8l",
};
const store = (hash: string, name: string) => `/nix/store/${hash}-${name}`;

/** A fleet with a host on every cloud, two AWS arches and two AWS regions for x86_64. */
function fleetConfig(awsArmHash = H.awsArm): Record<string, any> {
  const cfg = baseConfig();
  cfg.hosts = {
    "aws-x86": { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["large"] },
    "aws-x86-us": { provider: "aws", instanceType: "c7i.metal-24xl", region: "us-east-1", roles: ["fireactions"], pools: ["large"] },
    "aws-arm": { provider: "aws", instanceType: "c7g.metal", roles: ["fireactions"], pools: ["small"] },
    "az-1": { provider: "azure", size: "Standard_D16ds_v5", roles: ["fireactions"], pools: ["medium"] },
    "hz-1": { provider: "hetzner", serverType: "ccx33", location: "fsn1", image: "nix", roles: ["forgejo-runner"] },
    "hz-stock": { provider: "hetzner", serverType: "cax21", location: "fsn1", roles: ["forgejo-runner"] },
    "do-1": { provider: "digitalocean", size: "s-4vcpu-8gb", region: "fra1", image: "nix", roles: ["forgejo-runner"] },
  };
  cfg.images = {
    aws: {
      x86_64: { path: store(H.awsX86, "nixos-amazon-image-25.11-x86_64-linux") },
      aarch64: { path: store(awsArmHash, "nixos-amazon-image-25.11-aarch64-linux") },
    },
    azure: { x86_64: { path: store(H.azure, "nixos-azure-image-25.11-x86_64-linux") } },
    hetzner: { x86_64: { path: store(H.hetzner, "nixos-hetzner-image-25.11-x86_64-linux") } },
    digitalocean: { x86_64: { path: store(H.digitalocean, "nixos-digitalocean-image-25.11-x86_64-linux") } },
  };
  return cfg;
}

/** Waits until no new resource registers, then returns those registered by `build`. */
async function registered(build: () => unknown): Promise<typeof resources> {
  const start = resources.length;
  const made = build();
  let n = -1;
  while (n !== resources.length) {
    n = resources.length;
    await new Promise((r) => setTimeout(r, 30));
  }
  void made;
  return resources.slice(start);
}

const byType = (rs: typeof resources, type: string) => rs.filter((r) => r.type === type);
const one = (rs: typeof resources, type: string, name: string) => {
  const found = rs.filter((r) => r.type === type && r.name === name);
  expect(found, `${type} ${name}`).toHaveLength(1);
  return found[0];
};

// -------------------------------------------------------------------------------------------
// source.ts: resolution, formats, file checks

describe("resolveImageSource", () => {
  const storeDir = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), "rf-store-"));
  const mkImage = (hash: string, name: string, files: Record<string, number>) => {
    const dir = path.join(storeDir, `${hash}-${name}`);
    fs.mkdirSync(dir, { recursive: true });
    for (const [file, size] of Object.entries(files)) {
      const p = path.join(dir, file);
      fs.writeFileSync(p, "");
      fs.truncateSync(p, size);
    }
    return dir;
  };
  /** A sparse fixed VHD: `mib` MiB of data plus a footer with the cookie and disk type. */
  const mkVhd = (hash: string, mib: number, diskType = 2, extra = 0) => {
    const dir = mkImage(hash, "nixos-azure-image-x86_64-linux", {});
    const file = path.join(dir, "disk.vhd");
    const size = mib * 1024 * 1024 + 512 + extra;
    fs.writeFileSync(file, "");
    fs.truncateSync(file, size);
    const footer = Buffer.alloc(512);
    footer.write("conectix", 0, "latin1");
    footer.writeUInt32BE(diskType, 60);
    const fd = fs.openSync(file, "r+");
    fs.writeSync(fd, footer, 0, 512, size - 512);
    fs.closeSync(fd);
    return dir;
  };
  const resolve = (cloud: any, arch: any, input: { path: string; file?: string }, requireFiles = true) =>
    source.resolveImageSource(cloud, arch, input, { baseDir: storeDir, requireFiles, storeDir });

  it("finds the one image file in a store directory, with its hash and format", () => {
    const dir = mkImage("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "img", { "nixos.vhd": 1024, "README": 3 });
    const r = resolve("aws", "x86_64", { path: dir });
    expect(r).toMatchObject({ ok: true, image: { hash: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", file: "nixos.vhd", format: "vhd", storePath: dir } });
  });

  it("follows a result link to the store path", () => {
    const dir = mkImage("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "img", { "nixos.img": 1024 });
    const link = path.join(storeDir, "result-link");
    fs.symlinkSync(dir, link);
    const r = resolve("hetzner", "x86_64", { path: "result-link" });
    expect(r).toMatchObject({ ok: true, image: { hash: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", storePath: dir, format: "raw" } });
  });

  it("asks to name the file when there are several, and says when there is none", () => {
    const several = mkImage("cccccccccccccccccccccccccccccccc", "img", { "a.vhd": 1, "b.vhd": 1 });
    expect(resolve("aws", "x86_64", { path: several })).toMatchObject({ ok: false, problems: [{ key: "images.aws.x86_64.file", message: expect.stringMatching(/several image files/) }] });
    expect(resolve("aws", "x86_64", { path: several, file: "b.vhd" })).toMatchObject({ ok: true, image: { file: "b.vhd" } });
    expect(resolve("aws", "x86_64", { path: several, file: "c.vhd" })).toMatchObject({ ok: false, problems: [{ key: "images.aws.x86_64.file" }] });
    const none = mkImage("dddddddddddddddddddddddddddddddd", "img", { "notes.txt": 1 });
    expect(resolve("aws", "x86_64", { path: none })).toMatchObject({ ok: false, problems: [{ message: expect.stringMatching(/no image file/) }] });
  });

  it("a missing image fails real runs and is only a warning in offline plans", () => {
    const missing = path.join(storeDir, "ffffffffffffffffffffffffffffffff-not-built");
    const real = resolve("aws", "x86_64", { path: missing }, true);
    expect(real).toMatchObject({ ok: false, problems: [{ key: "images.aws.x86_64.path", message: expect.stringMatching(/not on this machine/) }] });
    const offline = resolve("aws", "x86_64", { path: missing }, false);
    expect(offline.ok).toBe(true);
    if (offline.ok) {
      expect(offline.image.file).toBeUndefined();
      expect(offline.image.hash).toBe("ffffffffffffffffffffffffffffffff");
      expect(offline.warning).toMatch(/not built here/);
    }
    // Not a store path at all: no hash to name resources with.
    expect(resolve("aws", "x86_64", { path: "/tmp/somewhere" }, false)).toMatchObject({ ok: false, problems: [{ key: "images.aws.x86_64.path" }] });
  });

  it("rejects formats and compressions a cloud cannot import", () => {
    const qcow = mkImage("gggggggggggggggggggggggggggggggg", "img", { "nixos.qcow2": 1 });
    expect(resolve("aws", "x86_64", { path: qcow })).toMatchObject({ ok: false, problems: [{ message: expect.stringMatching(/qcow2 images cannot be imported into aws/) }] });
    expect(resolve("hetzner", "x86_64", { path: qcow }).ok).toBe(true);
    const gz = mkImage("hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh", "img", { "nixos.img.gz": 1 });
    expect(resolve("aws", "x86_64", { path: gz })).toMatchObject({ ok: false, problems: [{ message: expect.stringMatching(/aws cannot import gzip-compressed/) }] });
    expect(resolve("hetzner", "x86_64", { path: gz })).toMatchObject({ ok: false, problems: [{ message: expect.stringMatching(/hetzner cannot import gzip.*bzip2/) }] });
    expect(resolve("digitalocean", "x86_64", { path: gz })).toMatchObject({ ok: true, image: { format: "raw", compression: "gzip" } });
    const bz2 = mkImage("iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii", "img", { "nixos.img.bz2": 1 });
    expect(resolve("hetzner", "x86_64", { path: bz2 })).toMatchObject({ ok: true, image: { compression: "bzip2" } });
    // hcloud-upload-image decompresses bz2, xz and zstd (hcloudimages/client.go assembleCommand).
    const zst = mkImage("jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj", "img", { "nixos.img.zst": 1 });
    expect(resolve("hetzner", "x86_64", { path: zst })).toMatchObject({ ok: true, image: { format: "raw", compression: "zstd" } });
    expect(resolve("digitalocean", "x86_64", { path: zst })).toMatchObject({ ok: false, problems: [{ message: expect.stringMatching(/digitalocean cannot import zstd/) }] });
    const xz = mkImage("kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "img", { "nixos.qcow2.xz": 1 });
    expect(resolve("hetzner", "x86_64", { path: xz })).toMatchObject({ ok: true, image: { format: "qcow2", compression: "xz" } });
  });

  it("Azure: accepts a fixed VHD of whole MiB plus the footer, rejects misaligned and dynamic ones", () => {
    expect(resolve("azure", "x86_64", { path: mkVhd("kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", 64) })).toMatchObject({ ok: true, image: { format: "vhd" } });
    expect(resolve("azure", "x86_64", { path: mkVhd("llllllllllllllllllllllllllllllll", 64, 2, 1024) })).toMatchObject({
      ok: false, problems: [{ key: "images.azure.x86_64.path", message: expect.stringMatching(/whole number of MiB plus the 512-byte footer/) }],
    });
    expect(resolve("azure", "x86_64", { path: mkVhd("mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm", 64, 3) })).toMatchObject({
      ok: false, problems: [{ message: expect.stringMatching(/dynamic VHD/) }],
    });
    const raw = mkImage("nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn", "img", { "disk.vhd": 64 * 1024 * 1024 + 512 });
    expect(resolve("azure", "x86_64", { path: raw })).toMatchObject({ ok: false, problems: [{ message: expect.stringMatching(/no VHD footer/) }] });
  });
});

describe("config validation of images", () => {
  const problems = (cfg: Record<string, any>) => {
    try {
      modelFrom(cfg);
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return err.problems;
      throw err;
    }
  };

  it("an image built for another arch than its hosts is refused", () => {
    const cfg = fleetConfig();
    cfg.images.aws.aarch64.path = store(H.awsArm, "nixos-amazon-image-25.11-x86_64-linux");
    expect(problems(cfg)).toContain(`runner-fleet:images.aws.aarch64.path: ${cfg.images.aws.aarch64.path} is built for another architecture than aarch64`);
  });

  it("a host's missing image is named with its hosts; a wrong format for a cloud is refused", () => {
    const cfg = fleetConfig();
    delete cfg.images.aws.aarch64;
    cfg.images.azure.x86_64.file = "nixos.qcow2";
    const found = problems(cfg);
    expect(found).toContain("runner-fleet:images.aws.aarch64: is required: host aws-arm boots from a aarch64 aws image");
    expect(found.some((p) => p.startsWith("runner-fleet:images.azure.x86_64.path: qcow2 images cannot be imported into azure"))).toBe(true);
  });
});

// -------------------------------------------------------------------------------------------
// Pure parts of the clouds

describe("cloud helpers", () => {
  it("names image resources by cloud, arch, hash and region", () => {
    expect(source.imageResourceName({ cloud: "aws", arch: "x86_64", hash: H.awsX86 }, "eu-central-1")).toBe(`aws-x86_64-${H.awsX86}-eu-central-1`);
    expect(source.imageResourceName({ cloud: "hetzner", arch: "aarch64", hash: H.hetzner })).toBe(`hetzner-aarch64-${H.hetzner}`);
  });

  it("vmimport: trusted only by VM Import with the external id; reads only the image buckets", () => {
    const trust = JSON.parse(vmimportTrustPolicy());
    expect(trust.Statement).toEqual([{
      Effect: "Allow", Principal: { Service: "vmie.amazonaws.com" }, Action: "sts:AssumeRole",
      Condition: { StringEquals: { "sts:Externalid": "vmimport" } },
    }]);
    const policy = JSON.parse(vmimportPolicy(["arn:aws:s3:::b1"]));
    expect(policy.Statement[0].Resource).toEqual(["arn:aws:s3:::b1", "arn:aws:s3:::b1/*"]);
    expect(policy.Statement[0].Action).not.toContain("s3:PutObject");
    expect(policy.Statement[1].Action).toEqual(expect.arrayContaining(["ec2:RegisterImage", "ec2:CopySnapshot", "ec2:ModifySnapshotAttribute"]));
  });

  it("command scripts take every value from the environment, and revoke Azure access on exit", () => {
    for (const script of [AZURE_UPLOAD_SCRIPT, HETZNER_UPLOAD_SCRIPT, PRESIGN_SCRIPT]) {
      expect(script).not.toMatch(/\/nix\/store|[0-9a-df-np-sv-z]{32}/);
      expect(script).not.toMatch(/HCLOUD_TOKEN|sig=/);
    }
    expect(AZURE_UPLOAD_SCRIPT).toMatch(/trap cleanup EXIT/);
    expect(AZURE_UPLOAD_SCRIPT).toMatch(/revoke-access/);
    expect(AZURE_UPLOAD_SCRIPT).toMatch(/\| timeout "\$RF_TIMEOUT" node "\$uploader" "\$RF_IMAGE_FILE"/);
    expect(AZURE_UPLOAD_SCRIPT).not.toMatch(/azcopy/);
    expect(HETZNER_UPLOAD_SCRIPT).toMatch(/timeout "\$RF_TIMEOUT" hcloud-upload-image upload/);
  });

  it("Hetzner takes bz2, xz and zstd; DigitalOcean regions map to a Spaces region", () => {
    expect(hcloudCompression("bzip2")).toBe("bz2");
    expect(hcloudCompression("xz")).toBe("xz");
    expect(hcloudCompression("zstd")).toBe("zstd");
    expect(hcloudCompression(undefined)).toBe("");
    expect(() => hcloudCompression("gzip")).toThrow(/cannot decompress gzip/);
    expect(spacesRegion("nyc1")).toBe("nyc3");
    expect(spacesRegion("fra1")).toBe("fra1");
    expect(() => spacesRegion("xyz9")).toThrow(/no Spaces region/);
  });

  it("places each image in the regions of the hosts that boot from it", () => {
    const placements = imagePlacements(modelFrom(fleetConfig()));
    expect(Object.fromEntries(placements)).toEqual({
      "aws.x86_64": ["eu-central-1", "us-east-1"],
      "aws.aarch64": ["eu-central-1"],
      "azure.x86_64": ["westeurope"],
      "hetzner.x86_64": [],
      "digitalocean.x86_64": ["fra1"],
    });
  });
});

// -------------------------------------------------------------------------------------------
// Resource wiring under mocks

describe("FleetImages under mocks", () => {
  const model = modelFrom(fleetConfig());
  let images!: InstanceType<typeof FleetImages>;
  let rs: typeof resources = [];

  it("builds each cloud's chain with the hash in every image resource's name", async () => {
    rs = await registered(() => (images = new FleetImages("images", { model })));

    // AWS: a private, encrypted bucket per region; one import role for all regions.
    expect(byType(rs, "aws:s3/bucket:Bucket").map((r) => r.name).sort()).toEqual(["aws-images-eu-central-1", "aws-images-us-east-1"]);
    expect(one(rs, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "aws-images-us-east-1").inputs).toMatchObject({
      region: "us-east-1", blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true,
    });
    expect(one(rs, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "aws-images-eu-central-1").inputs).toMatchObject({ rule: { objectOwnership: "BucketOwnerEnforced" } });
    expect(one(rs, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "aws-images-eu-central-1").inputs)
      .toMatchObject({ rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" } }] });
    expect(byType(rs, "aws:iam/role:Role")).toHaveLength(1);
    const rolePolicy = JSON.parse(one(rs, "aws:iam/rolePolicy:RolePolicy", "aws-images-vmimport").inputs.policy as string);
    expect(rolePolicy.Statement[0].Resource).toHaveLength(4);

    // x86_64 goes to both regions, aarch64 only to eu-central-1.
    const amis = byType(rs, "aws:ec2/ami:Ami").map((r) => r.name).sort();
    expect(amis).toEqual([`aws-aarch64-${H.awsArm}-eu-central-1`, `aws-x86_64-${H.awsX86}-eu-central-1`, `aws-x86_64-${H.awsX86}-us-east-1`]);
    const object = one(rs, "aws:s3/bucketObjectv2:BucketObjectv2", `aws-x86_64-${H.awsX86}-us-east-1`);
    expect(object.inputs).toMatchObject({ region: "us-east-1", bucket: "aws-images-us-east-1-id", key: `runner-fleet/x86_64-${H.awsX86}.vhd` });
    expect(object.inputs.source).toBeUndefined(); // offline: nothing to read, nothing uploaded
    expect(one(rs, "aws:ebs/snapshotImport:SnapshotImport", `aws-x86_64-${H.awsX86}-us-east-1`).inputs).toMatchObject({
      region: "us-east-1",
      roleName: "aws-images-vmimport-id",
      diskContainer: { format: "VHD", userBucket: { s3Bucket: "aws-images-us-east-1-id", s3Key: `runner-fleet/x86_64-${H.awsX86}.vhd` } },
    });
    const amiBase = {
      virtualizationType: "hvm", rootDeviceName: "/dev/xvda", enaSupport: true, sriovNetSupport: "simple", imdsSupport: "v2.0",
    };
    expect(one(rs, "aws:ec2/ami:Ami", `aws-x86_64-${H.awsX86}-us-east-1`).inputs).toMatchObject({
      ...amiBase, region: "us-east-1", architecture: "x86_64", bootMode: "legacy-bios",
      ebsBlockDevices: [{ deviceName: "/dev/xvda", snapshotId: `aws-x86_64-${H.awsX86}-us-east-1-id`, volumeType: "gp3", deleteOnTermination: true }],
    });
    expect(one(rs, "aws:ec2/ami:Ami", `aws-aarch64-${H.awsArm}-eu-central-1`).inputs).toMatchObject({ ...amiBase, architecture: "arm64", bootMode: "uefi" });

    // Azure: upload disk -> local upload command -> generalized image, in a shared resource group.
    const az = `azure-x86_64-${H.azure}-westeurope`;
    expect(one(rs, "azure-native:resources:ResourceGroup", "azure-images-westeurope").inputs).toMatchObject({ resourceGroupName: "runner-fleet-test-images-westeurope" });
    const disk = one(rs, "azure-native:compute:Disk", az).inputs;
    expect(disk).toMatchObject({ creationData: { createOption: "Upload" }, osType: "Linux", hyperVGeneration: "V1", resourceGroupName: "runner-fleet-test-images-westeurope" });
    const upload = one(rs, "command:local:Command", az).inputs;
    expect(upload).toMatchObject({ create: withOnlyEnv(COMMAND_ENV.azure, AZURE_UPLOAD_SCRIPT), update: "true", logging: "none", addPreviousOutputInEnv: false, environment: { RF_DISK: `rf-x86_64-${H.azure}-upload`, RF_RESOURCE_GROUP: "runner-fleet-test-images-westeurope" } });
    expect(one(rs, "azure-native:compute:Image", az).inputs).toMatchObject({
      hyperVGeneration: "V1",
      storageProfile: { osDisk: { osType: "Linux", osState: "Generalized", managedDisk: { id: `${az}-id` } } },
    });

    // Hetzner: one project-wide snapshot made by hcloud-upload-image; the stock host needs none.
    const hz = one(rs, "command:local:Command", `hetzner-x86_64-${H.hetzner}`).inputs;
    // The only command that keeps its previous output in the environment: its delete reads the snapshot id there.
    expect(hz).toMatchObject({ create: withOnlyEnv(COMMAND_ENV.hetzner, HETZNER_UPLOAD_SCRIPT), delete: withOnlyEnv(COMMAND_ENV.hetzner, HETZNER_DELETE_SCRIPT), addPreviousOutputInEnv: true, environment: { RF_ARCH: "x86", RF_SELECTOR: `runner-fleet-stack=test,runner-fleet-arch=x86_64,runner-fleet-hash=${H.hetzner}` } });
    expect(JSON.stringify(hz)).not.toMatch(/HCLOUD_TOKEN=/);
    expect(rs.filter((r) => r.name.includes("aarch64") && r.name.startsWith("hetzner"))).toEqual([]);

    // DigitalOcean: private Spaces object -> presigned URL (secret) -> custom image in the host's region.
    const dn = `digitalocean-x86_64-${H.digitalocean}-fra1`;
    expect(one(rs, "digitalocean:index/spacesBucket:SpacesBucket", "do-images-fra1").inputs).toMatchObject({ region: "fra1", acl: "private" });
    expect(one(rs, "digitalocean:index/spacesBucketObject:SpacesBucketObject", dn).inputs).toMatchObject({ acl: "private", region: "fra1", key: `runner-fleet/x86_64-${H.digitalocean}.raw` });
    expect(one(rs, "command:local:Command", dn).inputs).toMatchObject({ create: withOnlyEnv(COMMAND_ENV.spaces, PRESIGN_SCRIPT), logging: "none", addPreviousOutputInEnv: false });
    const custom = one(rs, "digitalocean:index/customImage:CustomImage", dn).inputs;
    expect(custom).toMatchObject({ regions: ["fra1"], distribution: "Unknown", description: expect.stringContaining(H.digitalocean) });
    expect(JSON.stringify(custom.url)).toContain("4dabf18193072939515e22adb298388d"); // a secret
  });

  it("hands each host the image of its cloud, arch and region", async () => {
    const ids = async (cloud: any, arch: any, region?: string) => (await settle(images.ref(cloud, arch, region)!.imageId)).value;
    expect(await ids("aws", "x86_64", "us-east-1")).toBe(`aws-x86_64-${H.awsX86}-us-east-1-id`);
    expect(await ids("aws", "aarch64")).toBe(`aws-aarch64-${H.awsArm}-eu-central-1-id`);
    expect(await ids("azure", "x86_64")).toBe(`azure-x86_64-${H.azure}-westeurope-id`);
    expect(await ids("digitalocean", "x86_64", "fra1")).toBe(`digitalocean-x86_64-${H.digitalocean}-fra1-id`);
    expect(await ids("hetzner", "x86_64", "fsn1")).toMatch(/^\d+$/); // the snapshot id the command prints
    expect(() => images.ref("aws", "x86_64")).toThrow(/several regions/);
    expect(() => images.ref("aws", "aarch64", "us-east-1")).toThrow(/not uploaded to us-east-1/);
    expect(images.ref("hetzner", "aarch64")).toBeUndefined();
    const stock = model.hosts.find((h) => h.name === "hz-stock")!;
    expect(images.refFor(stock)).toBeUndefined();
    expect(images.refFor(model.hosts.find((h) => h.name === "aws-x86-us")!)!.hash).toBe(H.awsX86);
  });

  it("the same hash twice: identical names and inputs; a new hash: new image resources, shared ones unchanged", async () => {
    const key = (r: (typeof resources)[number]) => `${r.type}::${r.name}`;
    const again = await registered(() => new FleetImages("images", { model }));
    expect(again.map(key)).toEqual(rs.map(key));
    expect(again.map((r) => r.inputs)).toEqual(rs.map((r) => r.inputs));

    const changed = await registered(() => new FleetImages("images", { model: modelFrom(fleetConfig(H.awsArm2)) }));
    const before = new Map(rs.map((r) => [key(r), r]));
    const after = new Map(changed.map((r) => [key(r), r]));
    const added = [...after.keys()].filter((k) => !before.has(k));
    const removed = [...before.keys()].filter((k) => !after.has(k));
    expect(added.length).toBeGreaterThan(0);
    expect(added.every((k) => k.includes(`aws-aarch64-${H.awsArm2}`))).toBe(true);
    expect(removed.every((k) => k.includes(`aws-aarch64-${H.awsArm}`))).toBe(true);
    expect(removed).toHaveLength(added.length);
    for (const [k, r] of after) if (before.has(k)) expect(r.inputs, k).toEqual(before.get(k)!.inputs);
  });

  it("at real runs: uploads the file, sizes the Azure disk from it, refuses a bad VHD", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-img-"));
    const vhd = path.join(dir, "disk.vhd");
    const size = 32 * 1024 * 1024 + 512;
    fs.writeFileSync(vhd, "");
    fs.truncateSync(vhd, size);
    const footer = Buffer.alloc(512);
    footer.write("conectix", 0, "latin1");
    footer.writeUInt32BE(2, 60);
    const fd = fs.openSync(vhd, "r+");
    fs.writeSync(fd, footer, 0, 512, size - 512);
    fs.closeSync(fd);
    const hash = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    const real: FleetModel = {
      ...model,
      images: [
        { cloud: "azure", arch: "x86_64", storePath: dir, hash, file: "disk.vhd", format: "vhd" },
        { cloud: "aws", arch: "aarch64", storePath: dir, hash, file: "disk.vhd", format: "vhd" },
        ...model.images.filter((i) => !(i.cloud === "azure" || (i.cloud === "aws" && i.arch === "aarch64"))),
      ],
    };
    const made = await registered(() => new FleetImages("images", { model: real }));
    expect(one(made, "azure-native:compute:Disk", `azure-x86_64-${hash}-westeurope`).inputs).toMatchObject({ creationData: { createOption: "Upload", uploadSizeBytes: size } });
    expect(one(made, "command:local:Command", `azure-x86_64-${hash}-westeurope`).inputs).toMatchObject({ environment: { RF_IMAGE_FILE: vhd } });
    // A FileAsset: the engine reads the file when it uploads, the program never does.
    const asset = one(made, "aws:s3/bucketObjectv2:BucketObjectv2", `aws-aarch64-${hash}-eu-central-1`).inputs.source as any;
    expect(await asset.path).toBe(vhd);

    fs.truncateSync(vhd, size + 100);
    expect(() => new FleetImages("images", { model: real })).toThrow(/images\.azure\.x86_64: .*whole number of MiB/);
  });
});

// -------------------------------------------------------------------------------------------
// End to end: the real plan

describe("plan: changing one arch's image", () => {
  it("changes only that arch's image resources and the image reference of its hosts", async () => {
    const [a, b] = await Promise.all([planJson(fleetConfig()), planJson(fleetConfig(H.awsArm2))]);
    const names = (doc: typeof a) => new Set(doc.resources.map((r) => `${r.type}::${r.name}`));
    const na = names(a);
    const nb = names(b);
    const removed = [...na].filter((n) => !nb.has(n));
    const added = [...nb].filter((n) => !na.has(n));
    expect(removed.length).toBeGreaterThanOrEqual(4); // component, object, snapshot, AMI
    expect(removed.every((n) => n.includes(`aws-aarch64-${H.awsArm}`))).toBe(true);
    expect(added.every((n) => n.includes(`aws-aarch64-${H.awsArm2}`))).toBe(true);

    // Every other resource is identical, inputs included; the only other difference is where a
    // host of that arch points to its image (which the host ignores unless it opts in).
    const inputsB = new Map(b.resources.map((r) => [`${r.type}::${r.name}`, JSON.stringify(r.inputs)]));
    const changed = a.resources
      .filter((r) => nb.has(`${r.type}::${r.name}`) && inputsB.get(`${r.type}::${r.name}`) !== JSON.stringify(r.inputs))
      .map((r) => `${r.type}::${r.name}`);
    expect(changed.every((n) => n === "aws:ec2/instance:Instance::aws-arm")).toBe(true);
    const instance = (doc: typeof a, name: string) => doc.resources.find((r) => r.type === "aws:ec2/instance:Instance" && r.name === name)!;
    for (const name of ["aws-x86", "aws-x86-us"]) expect(instance(b, name).inputs).toEqual(instance(a, name).inputs);
    expect(JSON.stringify(a).replaceAll(H.awsArm, H.awsArm2)).toBe(JSON.stringify(b));
  }, 180_000);
});
