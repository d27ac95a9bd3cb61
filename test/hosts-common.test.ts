// Pure helpers shared by the host providers: no mocks needed.
import { describe, expect, it } from "vitest";
import {
  awsGroupKey, awsKeyPairKey, azureStorageType, digitalOceanTag, hetznerLabel, hostTags, instanceChangeOptions, sshSources,
} from "../components/hosts/common";
import { bootImage } from "../components/hosts/base";
import { baseConfig, modelFrom, SSH_KEY } from "./support/fixtures";

describe("sshSources", () => {
  it("splits admin CIDRs by family and never opens to the world by default", () => {
    const cfg = baseConfig();
    cfg.ssh.adminCidrs = ["198.51.100.0/24", "2001:db8::/32", "192.0.2.7/32"];
    const sources = sshSources(modelFrom(cfg));
    expect(sources).toEqual({ ipv4: ["198.51.100.0/24", "192.0.2.7/32"], ipv6: ["2001:db8::/32"] });
  });

  it("opens to 0.0.0.0/0 and ::/0 only with allowFromAnywhere", () => {
    const cfg = baseConfig();
    cfg.ssh.allowFromAnywhere = true;
    expect(sshSources(modelFrom(cfg))).toEqual({ ipv4: ["0.0.0.0/0"], ipv6: ["::/0"] });
  });
});

describe("instanceChangeOptions", () => {
  const keys = { firstBoot: ["userData"], image: ["image"] };
  it("ignores user-data and image by default", () => {
    expect(instanceChangeOptions({ replaceOnImageChange: false }, keys)).toEqual({ ignoreChanges: ["userData", "image"] });
  });
  it("lets the image through with replaceOnImageChange, still ignoring user-data", () => {
    expect(instanceChangeOptions({ replaceOnImageChange: true }, keys)).toEqual({ ignoreChanges: ["userData"] });
    expect(instanceChangeOptions({ replaceOnImageChange: true }, { ...keys, forceReplaceOnImage: true }))
      .toEqual({ ignoreChanges: ["userData"], replaceOnChanges: ["image"] });
  });
});

describe("names, tags and keys", () => {
  it("uses the first key EC2 can import", () => {
    const ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNh ops@example";
    expect(awsKeyPairKey([ecdsa, SSH_KEY])).toBe(SSH_KEY);
    expect(awsKeyPairKey([ecdsa])).toBeUndefined();
  });

  it("picks premium disks only for sizes that support them", () => {
    expect(azureStorageType("Standard_D16ds_v5")).toBe("Premium_LRS");
    expect(azureStorageType("Standard_F8s_v2")).toBe("Premium_LRS");
    expect(azureStorageType("Standard_D16_v3")).toBe("StandardSSD_LRS");
    expect(azureStorageType("Standard_E16d_v4")).toBe("StandardSSD_LRS");
  });

  it("keeps labels and tags inside the clouds' alphabets", () => {
    expect(hetznerLabel("fireactions cache")).toBe("fireactions_cache");
    expect(hetznerLabel("-x-")).toBe("x");
    expect(hetznerLabel("a".repeat(80))).toHaveLength(63);
    expect(digitalOceanTag("stack:my.stack")).toBe("stack:my_stack");
  });

  it("tags carry fleet, host, stack and roles", () => {
    const model = modelFrom(baseConfig());
    expect(hostTags(model.hosts[0], model)).toMatchObject({ fleet: "runner-fleet", host: "metal", stack: "test", roles: "fireactions" });
  });

  it("groups AWS hosts by region, or by region and given subnet", () => {
    expect(awsGroupKey({ region: "eu-central-1" })).toBe("eu-central-1");
    expect(awsGroupKey({ region: "eu-central-1", subnetId: "subnet-1" })).toBe("eu-central-1-subnet-1");
  });
});

describe("bootImage", () => {
  const image = (cloud: "aws" | "hetzner", arch: "x86_64" | "aarch64") => ({ cloud, arch, hash: "h", imageId: undefined as any });
  const model = modelFrom(baseConfig());
  const metal = model.hosts.find((h) => h.name === "metal")!;
  const stock = { ...metal, provider: "hetzner" as const, image: "stock" as const };

  it("returns the image of the host's cloud and arch", () => {
    const ref = image("aws", "x86_64");
    expect(bootImage(metal, "aws", ref)).toBe(ref);
  });

  it("needs no image for a stock install", () => {
    expect(bootImage(stock as any, "hetzner", undefined)).toBeUndefined();
  });

  it("refuses a missing image, another cloud's, and another arch's, naming the host", () => {
    expect(() => bootImage(metal, "aws", undefined)).toThrow(/hosts\.metal: .*no aws x86_64 image \(runner-fleet:images\.aws\.x86_64\)/);
    expect(() => bootImage(metal, "aws", image("hetzner", "x86_64"))).toThrow(/no aws x86_64 image/);
    expect(() => bootImage(metal, "aws", image("aws", "aarch64"))).toThrow(/hosts\.metal: the image is aarch64 but the host is x86_64/);
  });
});
