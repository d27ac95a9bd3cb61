// Two stacks in one cloud account and one Vault mount (README "Scale: one stack per region or
// provider"): nothing one stack creates may carry the same name, or be the same object, as
// another's. Under mocks: the SSH keys a stack references instead of creating, and the names
// every shared namespace sees.
import { beforeAll, describe, expect, it } from "vitest";
import { installMocks } from "../scripts/mock-runtime";
import { azureGroupName } from "../components/images/azure";
import { snapshotSelector } from "../components/images/hetzner";
import { sshKeyName } from "../components/hosts/network";
import { policyName, roleName } from "../components/vault";
import { baseConfig, mockConfig, modelFrom } from "./support/fixtures";

const cfg = baseConfig();
cfg.hosts = {
  "hz-1": { provider: "hetzner", serverType: "ccx33", location: "fsn1", roles: ["cache"] },
  "do-1": { provider: "digitalocean", size: "s-4vcpu-8gb", region: "fra1", roles: ["gitea-runner"] },
};
cfg.images = {};
// The second stack in the project and account: the first one's keys.
cfg.ssh.hetznerKey = "runner-fleet-main";
cfg.ssh.digitaloceanKey = "12:f8:7e:6f:d5:3c:8b:0a:9e:1c:44:2b:7d:aa:06:51";
const { resources } = installMocks({ stack: "eu", ...mockConfig(cfg) });
const byType = (type: string) => resources.filter((r) => r.type === type);

beforeAll(async () => {
  const { buildHosts } = await import("./support/hosts");
  await buildHosts(modelFrom(cfg), resources, () => undefined);
});

describe("a stack that shares a Hetzner project and a DigitalOcean account", () => {
  it("creates no SSH key there and boots its servers with the one it names", () => {
    expect(byType("hcloud:index/sshKey:SshKey")).toEqual([]);
    expect(byType("digitalocean:index/sshKey:SshKey")).toEqual([]);
    expect((byType("hcloud:index/server:Server")[0].inputs as any).sshKeys).toEqual(["runner-fleet-main"]);
    expect((byType("digitalocean:index/droplet:Droplet")[0].inputs as any).sshKeys).toEqual([cfg.ssh.digitaloceanKey]);
  });

  it("refuses a key reference that is no Hetzner name or DigitalOcean id or fingerprint, by key path", () => {
    const bad = baseConfig();
    bad.ssh.hetznerKey = "two words";
    bad.ssh.digitaloceanKey = "SHA256:abc";
    expect(() => modelFrom(bad)).toThrow(/ssh\.hetznerKey: must be the name or id[\s\S]*ssh\.digitaloceanKey: must be the numeric id/);
  });
});

describe("names two stacks see in one account or Vault", () => {
  it("differ by stack for every object a stack creates and deletes", () => {
    for (const [a, b] of [["prod-eu", "prod-us"], ["eu", "eu-2"]]) {
      expect(sshKeyName(a)).not.toBe(sshKeyName(b));
      expect(policyName(a, "host-1")).not.toBe(policyName(b, "host-1"));
      expect(roleName(a, "host-1")).not.toBe(roleName(b, "host-1"));
      expect(azureGroupName(a, "westeurope")).not.toBe(azureGroupName(b, "westeurope"));
      const image = { arch: "x86_64" as const, hash: "0123456789abcdfghijklmnpqrsvwxyz" };
      expect(snapshotSelector(a, image)).not.toBe(snapshotSelector(b, image));
    }
  });
});
