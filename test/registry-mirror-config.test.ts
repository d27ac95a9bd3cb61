// registryMirror and data-disk purposes in the stack config (#23): defaults, the per-host
// override, ports, what inventory.json hands nix/modules/registry-mirror.nix and data-disks.nix,
// and every problem reported at once by key path.
import { describe, expect, it } from "vitest";
import { ConfigError } from "../components/config";
import { buildInventory } from "../components/inventory";
import { policyFor, secretFilesFor } from "../components/vault-paths";
import { baseConfig, modelFrom } from "./support/fixtures";

function problemsOf(config: Record<string, any>): string[] {
  try {
    modelFrom(config);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}
const inventoryOf = (config: Record<string, any>) => {
  const model = modelFrom(config);
  return buildInventory(model, Object.fromEntries(model.hosts.map((h) => [h.name, { public: "203.0.113.1", private: null }])));
};

describe("registryMirror", () => {
  it("is on by default on fireactions hosts: docker.io, gcr.io, ghcr.io, quay.io on ports 5001-5004", () => {
    const inv = inventoryOf(baseConfig());
    expect(inv.hosts.metal.registryMirror).toEqual({
      enable: true, maxSizeGib: 50, pruneSchedule: "hourly",
      upstreams: {
        "docker.io": { url: "https://registry-1.docker.io", port: 5001 },
        "gcr.io": { url: "https://gcr.io", port: 5002 },
        "ghcr.io": { url: "https://ghcr.io", port: 5003 },
        "quay.io": { url: "https://quay.io", port: 5004 },
      },
    });
  });

  it("a host's fields override the fleet's; other roles get none", () => {
    const c = baseConfig();
    c.registryMirror = { upstreams: { "ghcr.io": "https://ghcr.io" }, firstPort: 6000 };
    c.hosts.metal.registryMirror = { maxSizeGib: 200 };
    c.hosts.runner = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["forgejo-runner"] };
    const inv = inventoryOf(c);
    expect(inv.hosts.metal.registryMirror).toEqual({ enable: true, maxSizeGib: 200, pruneSchedule: "hourly", upstreams: { "ghcr.io": { url: "https://ghcr.io", port: 6000 } } });
    expect(inv.hosts.runner.registryMirror).toBeUndefined();
  });

  it("lists every problem at once, by key path", () => {
    const c = baseConfig();
    c.registryMirror = { upstreams: { "docker.io": "http://plain.example", "Bad Host": "https://x" }, firstPort: 65535, maxSizeGib: 0, pruneSchedule: "sometimes" };
    c.hosts.metal.registryMirror = { enable: "yes" };
    const p = problemsOf(c);
    expect(p).toEqual(expect.arrayContaining([
      'runner-fleet:registryMirror.upstreams["docker.io"]: must use https: a mirror that pulls in clear can be fed any image',
      'runner-fleet:registryMirror.upstreams["Bad Host"]: Invalid key in record',
      "runner-fleet:registryMirror.maxSizeGib: must be at least 1, got 0",
      'runner-fleet:registryMirror.pruneSchedule: must be hourly, daily, weekly or "*-*-* HH:MM"',
      'runner-fleet:hosts.metal.registryMirror.enable: must be true or false, got "yes"',
    ]));
  });

  it("ports must fit below 65536", () => {
    const c = baseConfig();
    c.registryMirror = { firstPort: 65534 };
    expect(problemsOf(c)).toEqual(["runner-fleet:registryMirror.firstPort: 4 upstreams from port 65534 go past 65535"]);
  });
});

describe("registryMirror.credentials: upstream logins from Vault", () => {
  const PLANTED = "planted-registry-password-7f3a";

  it("an upstream with credentials gets its two files from shared/registry-mirror/<upstream>, readable by its host's policy", () => {
    const c = baseConfig();
    c.registryMirror = { credentials: ["docker.io"] };
    const model = modelFrom(c);
    const metal = model.hosts.find((h) => h.name === "metal")!;
    const inv = buildInventory(model, Object.fromEntries(model.hosts.map((h) => [h.name, { public: "203.0.113.1", private: null }])));
    expect(inv.hosts.metal.registryMirror!.upstreams["docker.io"]).toEqual({ url: "https://registry-1.docker.io", port: 5001, credentials: true });
    expect(inv.hosts.metal.registryMirror!.upstreams["ghcr.io"]).toEqual({ url: "https://ghcr.io", port: 5003 });
    const mount = model.vault.mount;
    const login = `${mount}/data/shared/registry-mirror/docker.io`;
    expect(inv.hosts.metal.secrets.filter((f) => f.file.startsWith("/run/secrets/registry-mirror/"))).toEqual([
      { file: "/run/secrets/registry-mirror/docker.io/username", path: login, field: "username", format: "raw" },
      { file: "/run/secrets/registry-mirror/docker.io/password", path: login, field: "password", format: "raw" },
    ]);
    const policy = policyFor(metal, model);
    expect(policy).toContain(`path "${login}" {\n  capabilities = ["read"]\n}`);
    expect(policy).toContain(`path "${mount}/metadata/shared/registry-mirror/docker.io" {`);
    // Exactly that upstream: no glob over shared/registry-mirror, nothing for the others.
    expect(policy).not.toMatch(/registry-mirror\/(ghcr|gcr|quay)\.io|registry-mirror\/[*+]/);
  });

  it("an upstream with a port gets its policy too (no glob in it)", () => {
    const c = baseConfig();
    c.registryMirror = { upstreams: { "registry.example.com:5000": "https://registry.example.com:5000" }, credentials: ["registry.example.com:5000"] };
    const model = modelFrom(c);
    const policy = policyFor(model.hosts.find((h) => h.name === "metal")!, model);
    expect(policy).toContain(`path "${model.vault.mount}/data/shared/registry-mirror/registry.example.com:5000" {`);
  });

  it("a host's list overrides the fleet's; no credentials, no secret files; the mirror off, none either", () => {
    const c = baseConfig();
    c.registryMirror = { credentials: ["docker.io"] };
    c.hosts.metal.registryMirror = { credentials: [] };
    let model = modelFrom(c);
    expect(secretFilesFor(model.hosts.find((h) => h.name === "metal")!, model).some((f) => f.file.includes("registry-mirror"))).toBe(false);
    c.hosts.metal.registryMirror = { enable: false };
    model = modelFrom(c);
    expect(secretFilesFor(model.hosts.find((h) => h.name === "metal")!, model).some((f) => f.file.includes("registry-mirror"))).toBe(false);
  });

  it("names only: the stack takes no credential value, so none can reach state", () => {
    const c = baseConfig();
    c.registryMirror = { credentials: { "docker.io": { username: "u", password: PLANTED } } };
    expect(problemsOf(c).join("\n")).toMatch(/^runner-fleet:registryMirror\.credentials: /m);
    expect(problemsOf(c).join("\n")).not.toContain(PLANTED);
    c.registryMirror = { credentials: ["docker.io"], password: PLANTED };
    expect(problemsOf(c).join("\n")).toContain("runner-fleet:registryMirror.password: unknown key");
  });

  it("each name must be one of the upstreams, checked where it applies, every problem at once", () => {
    const c = baseConfig();
    c.registryMirror = { credentials: ["docker.io", "registry.example.com", "Not A Host"] };
    c.hosts.metal.registryMirror = { upstreams: { "ghcr.io": "https://ghcr.io" } };
    // metal2 takes the fleet's lists; metal3 its own credentials against the fleet's upstreams.
    c.hosts.metal2 = { ...baseConfig().hosts.metal };
    c.hosts.metal3 = { ...baseConfig().hosts.metal, registryMirror: { credentials: ["quay.io", "example.org"] } };
    const p = problemsOf(c);
    expect(p).toEqual(expect.arrayContaining([
      "runner-fleet:registryMirror.credentials[2]: must be a registry host name such as ghcr.io",
    ]));
    // Schema errors stop before the rules; fix that one and the rules speak.
    c.registryMirror.credentials = ["docker.io", "registry.example.com"];
    expect(problemsOf(c).filter((x) => x.includes("credentials")).sort()).toEqual([
      "runner-fleet:hosts.metal.registryMirror.credentials[0]: docker.io is not one of the mirror's upstreams (ghcr.io)",
      "runner-fleet:hosts.metal.registryMirror.credentials[1]: registry.example.com is not one of the mirror's upstreams (ghcr.io)",
      "runner-fleet:hosts.metal3.registryMirror.credentials[1]: example.org is not one of the mirror's upstreams (docker.io, gcr.io, ghcr.io, quay.io)",
      "runner-fleet:registryMirror.credentials[1]: registry.example.com is not one of the mirror's upstreams (docker.io, gcr.io, ghcr.io, quay.io)",
    ]);
  });
});

describe("data disk purposes", () => {
  it("AWS volumes and the Azure disk say what they hold; inventory.json tells nix/ where each goes", () => {
    const c = baseConfig();
    c.hosts.metal.dataVolumes = {
      cache: { sizeGib: 200, deviceName: "/dev/sdg", purpose: "registry-cache" },
      pool: { sizeGib: 500, deviceName: "/dev/sdf", purpose: "containerd" },
      scratch: { sizeGib: 100, deviceName: "/dev/sdh", purpose: "mount", mountPoint: "/srv/scratch" },
      spare: { sizeGib: 10, deviceName: "/dev/sdi" },
    };
    c.hosts.metal.thinPoolEncrypt = false;
    const inv = inventoryOf(c);
    expect(inv.hosts.metal.dataDisks).toEqual([
      { name: "cache", purpose: "registry-cache", device: "/dev/sdg", sizeGib: 200, mountPoint: "/var/lib/runner-fleet/registry-mirror" },
      { name: "pool", purpose: "containerd", device: "/dev/sdf", sizeGib: 500 },
      { name: "scratch", purpose: "mount", device: "/dev/sdh", sizeGib: 100, mountPoint: "/srv/scratch" },
    ]);
    expect(inv.hosts.metal.thinPoolEncrypt).toBe(false);
  });

  it("refuses purposes nothing uses, two disks for one purpose, mount points that are missing, misplaced or system paths", () => {
    const c = baseConfig();
    c.hosts.metal.dataVolumes = {
      a: { sizeGib: 10, deviceName: "/dev/sdf", purpose: "containerd" },
      b: { sizeGib: 10, deviceName: "/dev/sdg", purpose: "containerd" },
      m: { sizeGib: 10, deviceName: "/dev/sdh", purpose: "mount" },
      n: { sizeGib: 10, deviceName: "/dev/sdi", purpose: "registry-cache", mountPoint: "/srv/x" },
      o: { sizeGib: 10, deviceName: "/dev/sdj", purpose: "mount", mountPoint: "/nix/store" },
    };
    c.hosts.forge = { provider: "azure", size: "Standard_D4ds_v5", roles: ["forgejo-runner"], dataDiskPurpose: "registry-cache" };
    const p = problemsOf(c);
    expect(p).toEqual(expect.arrayContaining([
      "runner-fleet:hosts.metal.dataVolumes.b.purpose: containerd is already the purpose of hosts.metal.dataVolumes.a",
      "runner-fleet:hosts.metal.dataVolumes.m.mountPoint: is required with purpose mount",
      "runner-fleet:hosts.metal.dataVolumes.n.mountPoint: is only for purpose mount",
      "runner-fleet:hosts.metal.dataVolumes.o.mountPoint: /nix/store is a system path; mount user data elsewhere (e.g. /srv/...)",
      "runner-fleet:hosts.forge.dataDiskPurpose: needs dataDiskGib: the host has no data disk",
    ]));
  });

  it("the Azure data disk goes by its LUN link", () => {
    const c = baseConfig();
    c.images.azure = { x86_64: { path: "/nix/store/8qp8fwyrn2m1ajzgcddwn7iz8imnckfn-nixos-azure-image-25.11-x86_64-linux" } };
    c.hosts.az = { provider: "azure", size: "Standard_D16ds_v5", roles: ["fireactions"], pools: ["small"], dataDiskGib: 256, dataDiskPurpose: "containerd" };
    expect(inventoryOf(c).hosts.az.dataDisks).toEqual([{ name: "data", purpose: "containerd", device: "/dev/disk/azure/scsi1/lun0", sizeGib: 256 }]);
  });
});
