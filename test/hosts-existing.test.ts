// Existing machines: no cloud resource, the common outputs straight from config.
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";
import { installMocks, settle } from "../scripts/mock-runtime";
import { baseConfig, mockConfig, modelFrom } from "./support/fixtures";

const cfg = baseConfig();
cfg.hosts = {
  onprem: { provider: "existing", address: "192.0.2.10", privateAddress: "10.0.0.10", arch: "aarch64", vcpus: 64, memoryMib: 262144, kvm: true, roles: ["fireactions"], pools: ["large"] },
  "onprem-2": { provider: "existing", address: "builder.example.org", arch: "x86_64", vcpus: 8, memoryMib: 16384, roles: ["cache"] },
};
cfg.images = {};
const { resources } = installMocks({ stack: "test", ...mockConfig(cfg) });
let hosts: Record<string, any>;

beforeAll(async () => {
  const { createHost } = await import("../components/hosts");
  const { SharedNetworks } = await import("../components/hosts/network");
  const model = modelFrom(cfg);
  const networks = new SharedNetworks("network", { model });
  hosts = {};
  for (const host of model.hosts) hosts[host.name] = createHost({ host, model, userData: pulumi.secret("#cloud-config\n"), networks }, {});
  await Promise.all(Object.values(hosts).map((h) => settle(h.identity)));
});

describe("existing machines", () => {
  it("create no cloud resource, not even shared network pieces", () => {
    expect(resources.filter((r) => r.custom)).toEqual([]);
    expect(resources.map((r) => r.type).sort()).toEqual([
      "runner-fleet:hosts:ExistingHost", "runner-fleet:hosts:ExistingHost", "runner-fleet:hosts:SharedNetworks",
    ]);
  });

  it("report address, private address and arch from config; identity is the address", async () => {
    const h = hosts.onprem;
    expect([h.provider, h.arch, h.sshUser, h.instance]).toEqual(["existing", "aarch64", "deploy", undefined]);
    expect((await settle(h.publicAddress)).value).toBe("192.0.2.10");
    expect((await settle(h.privateAddress)).value).toBe("10.0.0.10");
    expect((await settle(h.identity)).value).toBe("192.0.2.10");
    expect((await settle(hosts["onprem-2"].privateAddress)).value).toBeUndefined();
    expect((await settle(hosts["onprem-2"].publicAddress)).value).toBe("builder.example.org");
  });
});
