// DigitalOcean hosts under mocks: droplet settings, the per-region VPC and firewall, change options.
import { beforeAll, describe, expect, it } from "vitest";
import { containsSecret, installMocks, settle } from "../scripts/mock-runtime";
import { type CapturedOptions } from "./support/mocks";
import { baseConfig, mockConfig, modelFrom } from "./support/fixtures";

const cfg = baseConfig();
cfg.hosts = {
  "do-1": { provider: "digitalocean", size: "s-4vcpu-8gb", region: "fra1", roles: ["gitea-runner"], protect: true },
  "do-2": { provider: "digitalocean", size: "s-4vcpu-8gb", region: "fra1", roles: ["gitea-runner"] },
  "do-ams": { provider: "digitalocean", size: "s-4vcpu-8gb", region: "ams3", roles: ["gitea-runner"], replaceOnImageChange: true },
};
cfg.images = {};
const { resources } = installMocks({ stack: "test", ...mockConfig(cfg) });

let hosts: Record<string, any>;
let captured: CapturedOptions[];

const byType = (type: string) => resources.filter((r) => r.type === type);
const droplet = (name: string) => byType("digitalocean:index/droplet:Droplet").find((r) => r.name === name)!.inputs as any;
const optsOf = (name: string) => captured.find((c) => c.type === "digitalocean:index/droplet:Droplet" && c.name === name)!.opts;

beforeAll(async () => {
  const { buildHosts } = await import("./support/hosts");
  const model = modelFrom(cfg);
  model.hosts = model.hosts.map((h) => (h.name === "do-ams" ? { ...h, image: "nix" as const } : h));
  ({ hosts, captured } = await buildHosts(model, resources, (h) => (h.image === "nix" ? { cloud: "digitalocean", arch: "x86_64", hash: "h", imageId: "123456" } : undefined)));
});

describe("DigitalOcean droplet", () => {
  it("starts from stock Debian, or from our custom image when image is nix", () => {
    expect(droplet("do-1").image).toBe("debian-12-x64");
    expect(droplet("do-ams").image).toBe("123456");
  });

  it("sits in its region's VPC with the shared key, secret user-data and the firewall tag", () => {
    const d = droplet("do-1");
    expect(d).toMatchObject({ size: "s-4vcpu-8gb", region: "fra1", vpcUuid: "fra1-vpc-id", sshKeys: ["digitalocean-ssh-id"] });
    expect(containsSecret(d.userData)).toBe(true);
    expect(d.tags).toEqual(expect.arrayContaining(["runner-fleet", "stack:test", "host:do-1", "role:gitea-runner", "runner-fleet-test-fra1"]));
    expect(droplet("do-ams").vpcUuid).toBe("ams3-vpc-id");
  });

  it("creates VPC, tag and firewall once per region, one SSH key in all", () => {
    expect(byType("digitalocean:index/vpc:Vpc").map((r) => r.name).sort()).toEqual(["ams3-vpc", "fra1-vpc"]);
    expect(byType("digitalocean:index/firewall:Firewall").map((r) => r.name).sort()).toEqual(["ams3-ssh", "fra1-ssh"]);
    expect(byType("digitalocean:index/sshKey:SshKey")).toHaveLength(1);
    expect((byType("digitalocean:index/sshKey:SshKey")[0].inputs as any).name).toBe("runner-fleet-test");
  });

  it("admits SSH from the admin CIDRs only and allows all egress", () => {
    const fw = byType("digitalocean:index/firewall:Firewall").find((r) => r.name === "fra1-ssh")!.inputs as any;
    expect(fw.tags).toEqual(["runner-fleet-test-fra1"]);
    expect(fw.inboundRules).toEqual([{ protocol: "tcp", portRange: "22", sourceAddresses: ["198.51.100.0/24"] }]);
    expect(fw.outboundRules.map((r: any) => r.protocol).sort()).toEqual(["icmp", "tcp", "udp"]);
  });

  it("ignores user-data and image changes; the opt-in replaces on image change", () => {
    expect(optsOf("do-1").ignoreChanges).toEqual(["userData", "sshKeys", "image"]);
    expect(optsOf("do-ams").ignoreChanges).toEqual(["userData", "sshKeys"]);
    expect(optsOf("do-ams").replaceOnChanges).toEqual(["image"]);
    expect(optsOf("do-1").protect).toBe(true);
    expect(optsOf("do-2").protect).toBe(false);
  });

  it("exposes the common outputs", async () => {
    const h = hosts["do-1"];
    expect([h.provider, h.arch, h.sshUser]).toEqual(["digitalocean", "x86_64", "deploy"]);
    expect((await settle(h.publicAddress)).value).toMatch(/^198\.51\.100\.\d+$/);
    expect((await settle(h.privateAddress)).value).toMatch(/^10\.20\.\d+\.\d+$/);
    expect((await settle(h.publicIpv6)).value).toBe("2001:db8:1::5");
    expect((await settle(h.identity)).value).toBe("do-1-id");
  });
});
