// Hetzner Cloud hosts under mocks: server settings, the shared firewall, key and placement groups.
import { beforeAll, describe, expect, it } from "vitest";
import { containsSecret, installMocks, reveal, settle } from "../scripts/mock-runtime";
import { type CapturedOptions } from "./support/mocks";
import { TEST_USER_DATA } from "./support/hosts";
import { baseConfig, mockConfig, modelFrom, SSH_KEY } from "./support/fixtures";

const cfg = baseConfig();
cfg.ssh.adminCidrs = ["198.51.100.0/24", "2001:db8:100::/48"];
cfg.hosts = {
  "cache-1": { provider: "hetzner", serverType: "ccx33", location: "fsn1", roles: ["cache"], placementGroup: "caches", protect: true },
  "cache-2": { provider: "hetzner", serverType: "ccx33", location: "nbg1", roles: ["cache"], placementGroup: "caches" },
  "forgejo-1": { provider: "hetzner", serverType: "ccx23", location: "hel1", roles: ["forgejo-runner"], replaceOnImageChange: true },
};
cfg.images = {};
const { resources } = installMocks({ stack: "test", ...mockConfig(cfg) });

let hosts: Record<string, any>;
let captured: CapturedOptions[];
const USER_DATA = TEST_USER_DATA;

const byType = (type: string) => resources.filter((r) => r.type === type);
const server = (name: string) => byType("hcloud:index/server:Server").find((r) => r.name === name)!.inputs as any;
const optsOf = (name: string) => captured.find((c) => c.type === "hcloud:index/server:Server" && c.name === name)!.opts;

beforeAll(async () => {
  const { buildHosts } = await import("./support/hosts");
  const model = modelFrom(cfg);
  // forgejo-1 boots from our snapshot; the others from stock Debian.
  model.hosts = model.hosts.map((h) => (h.name === "forgejo-1" ? { ...h, image: "nix" as const } : h));
  ({ hosts, captured } = await buildHosts(model, resources, (h) => (h.image === "nix" ? { cloud: "hetzner", arch: "x86_64", hash: "h", imageId: "987654" } : undefined)));
});

describe("Hetzner server", () => {
  it("starts from stock Debian, or from our snapshot when image is nix", () => {
    expect(server("cache-1").image).toBe("debian-12");
    expect(server("forgejo-1").image).toBe("987654");
  });

  it("has type, location, user-data (secret) and labels", () => {
    const s = server("cache-1");
    expect(s).toMatchObject({ serverType: "ccx33", location: "fsn1" });
    expect(containsSecret(s.userData)).toBe(true);
    expect(reveal(s.userData)).toBe(USER_DATA);
    expect(s.labels).toMatchObject({ fleet: "runner-fleet", host: "cache-1", stack: "test", roles: "cache" });
  });

  it("shares one firewall, one SSH key and one placement group per name", () => {
    expect(byType("hcloud:index/firewall:Firewall")).toHaveLength(1);
    expect(byType("hcloud:index/sshKey:SshKey")).toHaveLength(1);
    expect(byType("hcloud:index/placementGroup:PlacementGroup").map((r) => r.name)).toEqual(["caches"]);
    const ids = ["cache-1", "cache-2", "forgejo-1"].map((n) => server(n).firewallIds);
    expect(ids[0]).toHaveLength(1);
    expect(Number.isInteger(ids[0][0])).toBe(true);
    expect(ids[1]).toEqual(ids[0]);
    expect(ids[2]).toEqual(ids[0]);
    expect(server("cache-1").placementGroupId).toBe(server("cache-2").placementGroupId);
    expect(Number.isInteger(server("cache-1").placementGroupId)).toBe(true);
    expect(server("forgejo-1").placementGroupId).toBeUndefined();
    expect((byType("hcloud:index/sshKey:SshKey")[0].inputs as any).publicKey).toBe(SSH_KEY);
    // Named after the stack: another stack's key in the same project is told apart.
    expect((byType("hcloud:index/sshKey:SshKey")[0].inputs as any).name).toBe("runner-fleet-test");
  });

  it("admits SSH from the admin CIDRs only, one rule per IP family", () => {
    const fw = byType("hcloud:index/firewall:Firewall")[0].inputs as any;
    expect(fw.rules).toEqual([
      expect.objectContaining({ direction: "in", protocol: "tcp", port: "22", sourceIps: ["198.51.100.0/24"] }),
      expect.objectContaining({ direction: "in", protocol: "tcp", port: "22", sourceIps: ["2001:db8:100::/48"] }),
    ]);
    expect(JSON.stringify(fw.rules)).not.toMatch(/0\.0\.0\.0\/0|::\/0/);
  });

  it("ignores user-data and image changes; the opt-in replaces on image change", () => {
    expect(optsOf("cache-1").ignoreChanges).toEqual(["userData", "sshKeys", "image"]);
    expect(optsOf("forgejo-1").ignoreChanges).toEqual(["userData", "sshKeys"]);
    expect(optsOf("forgejo-1").replaceOnChanges).toEqual(["image"]);
    expect(optsOf("cache-1").protect).toBe(true);
    expect(optsOf("cache-2").protect).toBe(false);
  });

  it("exposes the common outputs", async () => {
    const h = hosts["cache-1"];
    expect([h.provider, h.arch, h.sshUser]).toEqual(["hetzner", "x86_64", "deploy"]);
    expect((await settle(h.publicAddress)).value).toMatch(/^203\.0\.113\.\d+$/);
    expect((await settle(h.privateAddress)).value).toBeUndefined();
    // The server's whole IPv6 /64, which its Vault role is bound to as well (#24 item 9).
    expect((await settle(h.publicIpv6)).value).toBe("2001:db8::/64");
    expect((await settle(h.identity)).value).toMatch(/^\d+$/);
  });
});
