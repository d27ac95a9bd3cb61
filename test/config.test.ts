import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { buildFleetModel, PROJECT, SECRET_KEYS } from "../components/config";
import { projectConfig } from "../components/load";
import { readStackFile, unsetPlaceholder } from "../scripts/stack-file";
import { baseConfig, configProblems, modelFrom, ROOT } from "./support/fixtures";

/** The problems a config produces (empty when valid). */
const problemsOf = configProblems;

function stackRaw(stack: string): { raw: Record<string, unknown>; secrets: Set<string>; aws?: string; azure?: string } {
  const { config, secretKeys } = readStackFile(path.join(ROOT, `Pulumi.${stack}.yaml`));
  const raw = projectConfig(config);
  const secrets = new Set(secretKeys.map((k) => k.slice(PROJECT.length + 1)));
  return { raw, secrets, aws: config["aws:region"], azure: config["azure-native:location"] };
}

describe("committed stacks", () => {
  for (const stack of ["dev", "prod"]) {
    it(`accepts Pulumi.${stack}.yaml`, () => {
      const { raw, secrets, aws, azure } = stackRaw(stack);
      const model = buildFleetModel(raw, {
        stack, secretsSet: secrets, awsRegion: aws, azureLocation: azure, baseDir: ROOT, requireImageFiles: false,
      });
      expect(model.hosts.length).toBeGreaterThan(3);
      // No secret is committed, not even as ciphertext: each declared secret is unset in the
      // file and reaches the offline plan only as a marked placeholder.
      const text = fs.readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8");
      expect(text).not.toMatch(/secure:/);
      const { unsetSecrets } = readStackFile(path.join(ROOT, `Pulumi.${stack}.yaml`));
      expect(unsetSecrets.sort()).toEqual(Object.values(SECRET_KEYS).map((k) => `${PROJECT}:${k}`).sort());
      for (const key of Object.values(SECRET_KEYS)) {
        expect(secrets.has(key)).toBe(true);
        expect(raw[key]).toBe(unsetPlaceholder(`${PROJECT}:${key}`));
      }
    });
  }

  it("dev touches every provider and prod has metal on both arches", () => {
    const dev = stackRaw("dev").raw.hosts as Record<string, { provider: string }>;
    expect(new Set(Object.values(dev).map((h) => h.provider))).toEqual(new Set(["aws", "azure", "hetzner", "digitalocean", "existing"]));
    const prodConfig = stackRaw("prod");
    const prod = buildFleetModel(prodConfig.raw, {
      stack: "prod", secretsSet: prodConfig.secrets, awsRegion: "eu-central-1", azureLocation: "westeurope", baseDir: ROOT, requireImageFiles: false,
    });
    const metal = prod.hosts.filter((h) => h.provider === "aws" && h.instanceType.includes("metal"));
    expect(new Set(metal.map((h) => h.arch))).toEqual(new Set(["x86_64", "aarch64"]));
    expect(Object.keys(prod.pools).length).toBeGreaterThanOrEqual(3);
  });
});

describe("the fleet model", () => {
  it("applies pool presets and sorts hosts by name whatever the config order", () => {
    const cfg = baseConfig();
    cfg.hosts = {
      zed: { provider: "existing", address: "192.0.2.20", arch: "x86_64", vcpus: 8, memoryMib: 16384, roles: ["cache"] },
      ...cfg.hosts,
      alpha: { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["forgejo-runner"] },
    };
    const model = modelFrom(cfg);
    expect(model.hosts.map((h) => h.name)).toEqual(["alpha", "metal", "zed"]);
    expect(model.pools.large).toMatchObject({ vcpus: 4, memoryMib: 4096, maxRunners: 10, minRunners: 5 });
    expect(model.pools.large.labels).toContain("large");
  });

  it("derives arch, KVM and nested virtualization from the catalog", () => {
    const cfg = baseConfig();
    cfg.hosts = {
      arm: { provider: "aws", instanceType: "c7g.metal", roles: ["fireactions"], pools: ["small"] },
      nested: { provider: "aws", instanceType: "c8i.2xlarge", roles: ["fireactions"], pools: ["small"] },
      plain: { provider: "aws", instanceType: "c7i.xlarge", roles: ["cache"] },
    };
    cfg.images.aws.aarch64 = { path: "/nix/store/wic7bgczhgqp3v4k0b21x1yc0hxwq2x2-nixos-amazon-image-25.11-aarch64-linux" };
    const byName = Object.fromEntries(modelFrom(cfg).hosts.map((h) => [h.name, h]));
    expect(byName.arm).toMatchObject({ arch: "aarch64", kvm: true, nestedVirtualization: false });
    expect(byName.nested).toMatchObject({ arch: "x86_64", kvm: true, nestedVirtualization: true });
    expect(byName.plain).toMatchObject({ kvm: false, nestedVirtualization: false });
  });

  it("warns for DigitalOcean KVM overrides, world-open SSH and the unsafe App key opt-in", () => {
    const cfg = baseConfig();
    cfg.hosts.droplet = { provider: "digitalocean", size: "c-8", region: "fra1", roles: ["fireactions"], pools: ["small"], allowUndocumentedKvm: true };
    cfg.ssh = { authorizedKeys: cfg.ssh.authorizedKeys, allowFromAnywhere: true };
    cfg.unsafe = { githubAppKeyInUserData: true };
    const warnings = modelFrom(cfg).warnings.join("\n");
    expect(warnings).toMatch(/hosts\.droplet: allowUndocumentedKvm/);
    expect(warnings).toMatch(/allowFromAnywhere/);
    expect(warnings).toMatch(/githubAppKeyInUserData/);
  });

  it("accepts a secret kept only in Vault", () => {
    const cfg = baseConfig();
    cfg.vault.externalSecrets = ["githubApp"];
    expect(problemsOf(cfg, [])).toEqual([]);
  });
});

/**
 * Each case breaks one thing; the message must name the offending key path. `mutate` edits a
 * fresh base config.
 */
const BAD: Array<{ what: string; mutate: (c: Record<string, any>) => void; key: string; says?: RegExp; secrets?: string[] }> = [
  { what: "forgejo-runner and gitea-runner on one host", mutate: (c) => { c.hosts.metal.roles = ["forgejo-runner", "gitea-runner"]; c.hosts.metal.pools = []; }, key: "runner-fleet:hosts.metal.roles", says: /cannot share a host/ },
  { what: "unknown top-level key", mutate: (c) => { c.hostz = {}; }, key: "runner-fleet:hostz", says: /unknown key/ },
  { what: "typo in a host field", mutate: (c) => { c.hosts.metal.instancetype = "x"; }, key: "runner-fleet:hosts.metal.instancetype", says: /unknown key/ },
  { what: "typo in a pool field", mutate: (c) => { c.pools.small.maxRunner = 3; }, key: "runner-fleet:pools.small.maxRunner", says: /unknown key/ },
  { what: "unknown provider", mutate: (c) => { c.hosts.metal.provider = "gcp"; }, key: "runner-fleet:hosts.metal.provider", says: /aws, azure, hetzner, digitalocean, existing/ },
  { what: "unknown role", mutate: (c) => { c.hosts.metal.roles = ["fireaction"]; }, key: "runner-fleet:hosts.metal.roles[0]", says: /"fireactions", "forgejo-runner", "gitea-runner", "gitlab-runner", "cache"/ },
  { what: "no roles", mutate: (c) => { c.hosts.metal.roles = []; }, key: "runner-fleet:hosts.metal.roles", says: /at least one role/ },
  { what: "duplicate role", mutate: (c) => { c.hosts.metal.roles = ["fireactions", "fireactions"]; }, key: "runner-fleet:hosts.metal.roles", says: /same value twice/ },
  { what: "unknown preset", mutate: (c) => { c.pools.small.size = "huge"; }, key: "runner-fleet:pools.small.size", says: /"small", "medium", "large"/ },
  { what: "negative maxRunners", mutate: (c) => { c.pools.small.maxRunners = -1; }, key: "runner-fleet:pools.small.maxRunners", says: /must be at least 1, got -1/ },
  { what: "maxRunners not a number", mutate: (c) => { c.pools.small.maxRunners = "12"; }, key: "runner-fleet:pools.small.maxRunners", says: /must be a number/ },
  { what: "minRunners above maxRunners", mutate: (c) => { c.pools.small = { size: "small", maxRunners: 2, minRunners: 3 }; }, key: "runner-fleet:pools.small.minRunners", says: /more than maxRunners/ },
  { what: "imagePullPolicy, which fireactions never reads", mutate: (c) => { c.pools.small.imagePullPolicy = "Always"; }, key: "runner-fleet:pools.small.imagePullPolicy", says: /reads no pull policy/ },
  { what: "kernelArgs with its own ip=", mutate: (c) => { c.pools.small.kernelArgs = "console=ttyS0 ip=10.0.0.9::10.0.0.1:255.255.255.0::eth0:off"; }, key: "runner-fleet:pools.small.kernelArgs", says: /must not set ip=/ },
  { what: "host names a missing pool", mutate: (c) => { c.hosts.metal.pools = ["large", "gigantic"]; }, key: "runner-fleet:hosts.metal.pools[1]", says: /pool "gigantic" does not exist/ },
  { what: "invalid host name", mutate: (c) => { c.hosts.Metal_1 = c.hosts.metal; delete c.hosts.metal; }, key: "runner-fleet:hosts.Metal_1", says: /lowercase/ },
  { what: "host names differing only by case", mutate: (c) => { c.hosts["metal"] = c.hosts.metal; c.hosts["metal-"] = c.hosts.metal; }, key: "runner-fleet:hosts.metal-", says: /lowercase|dash/ },
  { what: "fireactions on a non-KVM AWS type", mutate: (c) => { c.hosts.metal.instanceType = "c7i.2xlarge"; }, key: "runner-fleet:hosts.metal.instanceType", says: /needs KVM/ },
  { what: "fireactions on Hetzner Cloud", mutate: (c) => { c.hosts.hz = { provider: "hetzner", serverType: "ccx33", location: "fsn1", roles: ["fireactions"], pools: ["small"] }; }, key: "runner-fleet:hosts.hz.serverType", says: /no \/dev\/kvm/ },
  { what: "fireactions on DigitalOcean without the override", mutate: (c) => { c.hosts.d = { provider: "digitalocean", size: "c-8", region: "fra1", roles: ["fireactions"], pools: ["small"] }; }, key: "runner-fleet:hosts.d.size", says: /allowUndocumentedKvm/ },
  { what: "fireactions on an Azure size without nested virtualization", mutate: (c) => { c.hosts.az = { provider: "azure", size: "Standard_B4ms", roles: ["fireactions"], pools: ["small"] }; c.images.azure = { x86_64: { path: "/nix/store/g24mi45nbl82xjagif45annhc6wjjj5h-nixos-azure-image" } }; }, key: "runner-fleet:hosts.az.size", says: /nested virtualization/ },
  { what: "instance type not in the catalog", mutate: (c) => { c.hosts.metal.instanceType = "c9z.mega"; }, key: "runner-fleet:hosts.metal.instanceType", says: /not in the aws catalog/ },
  { what: "pools over the host's vCPUs", mutate: (c) => { c.hosts.metal.instanceType = "c8i.xlarge"; c.hosts.metal.pools = ["medium"]; }, key: "runner-fleet:hosts.metal.pools", says: /need 10 vCPUs .* has 3/ },
  { what: "pools over the host's memory", mutate: (c) => { c.pools.fat = { size: "small", maxRunners: 2, memoryMib: 65536 }; c.hosts.metal.instanceType = "c8i.4xlarge"; c.hosts.metal.pools = ["fat"]; }, key: "runner-fleet:hosts.metal.pools", says: /need 131072 MiB/ },
  { what: "pools on a host without fireactions", mutate: (c) => { c.hosts.cache = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["cache"], pools: ["small"] }; }, key: "runner-fleet:hosts.cache.pools", says: /only on hosts with the fireactions role/ },
  { what: "fireactions host without pools", mutate: (c) => { c.hosts.metal.pools = []; }, key: "runner-fleet:hosts.metal.pools", says: /at least one pool/ },
  { what: "existing host with a bad address", mutate: (c) => { c.hosts.op = { provider: "existing", address: "not an address!", arch: "x86_64", vcpus: 4, memoryMib: 8192, roles: ["cache"] }; }, key: "runner-fleet:hosts.op.address", says: /IP address or a hostname/ },
  { what: "two existing hosts at one address", mutate: (c) => { for (const n of ["op1", "op2"]) c.hosts[n] = { provider: "existing", address: "192.0.2.7", arch: "x86_64", vcpus: 4, memoryMib: 8192, roles: ["cache"] }; }, key: "runner-fleet:hosts.op2.address", says: /already the address of host op1/ },
  { what: "existing host without arch", mutate: (c) => { c.hosts.op = { provider: "existing", address: "192.0.2.8", vcpus: 4, memoryMib: 8192, roles: ["cache"] }; }, key: "runner-fleet:hosts.op.arch", says: /required/ },
  { what: "unknown Hetzner location", mutate: (c) => { c.hosts.hz = { provider: "hetzner", serverType: "cx22", location: "fra1", roles: ["cache"] }; }, key: "runner-fleet:hosts.hz.location", says: /"fsn1"/ },
  { what: "stock install on a droplet that is too small", mutate: (c) => { c.hosts.d = { provider: "digitalocean", size: "s-1vcpu-1gb", region: "fra1", roles: ["cache"] }; }, key: "runner-fleet:hosts.d", says: /at least 2048 MiB/ },
  { what: "missing image for a host's arch", mutate: (c) => { c.hosts.arm = { provider: "aws", instanceType: "c7g.metal", roles: ["fireactions"], pools: ["small"] }; }, key: "runner-fleet:images.aws.aarch64", says: /host arm boots from a aarch64 aws image/ },
  { what: "image path outside the Nix store", mutate: (c) => { c.images.aws.x86_64.path = "./nowhere/result"; }, key: "runner-fleet:images.aws.x86_64.path", says: /does not exist/ },
  { what: "image built for the other arch", mutate: (c) => { c.images.aws.x86_64.path = "/nix/store/wic7bgczhgqp3v4k0b21x1yc0hxwq2x2-nixos-amazon-image-25.11-aarch64-linux"; }, key: "runner-fleet:images.aws.x86_64.path", says: /another architecture/ },
  { what: "image key for an unknown cloud", mutate: (c) => { c.images.gcp = {}; }, key: "runner-fleet:images.gcp", says: /unknown key/ },
  { what: "missing vault section", mutate: (c) => { delete c.vault; }, key: "runner-fleet:vault", says: /is required/ },
  { what: "vault over plain http", mutate: (c) => { c.vault.address = "http://vault.example.org:8200"; }, key: "runner-fleet:vault.address", says: /must use https/ },
  { what: "vault address not a URL", mutate: (c) => { c.vault.address = "vault.example.org"; }, key: "runner-fleet:vault.address", says: /must be an http\(s\) URL/ },
  { what: "vault mount with bad characters", mutate: (c) => { c.vault.mount = "/ci//"; }, key: "runner-fleet:vault.mount", says: /Vault path/ },
  { what: "vault wrap TTL not a duration", mutate: (c) => { c.vault.wrapTtl = "two hours"; }, key: "runner-fleet:vault.wrapTtl", says: /duration/ },
  { what: "unknown external secret", mutate: (c) => { c.vault.externalSecrets = ["githubAppKey"]; }, key: "runner-fleet:vault.externalSecrets[0]", says: /"githubApp"/ },
  { what: "unknown deploy tool", mutate: (c) => { c.deploy.tool = "nixops"; }, key: "runner-fleet:deploy.tool", says: /"deploy-rs", "colmena"/ },
  { what: "batch size zero", mutate: (c) => { c.deploy.batchSize = 0; }, key: "runner-fleet:deploy.batchSize", says: /too small|at least/ },
  { what: "no SSH keys", mutate: (c) => { c.ssh.authorizedKeys = []; }, key: "runner-fleet:ssh.authorizedKeys", says: /at least one key/ },
  { what: "malformed SSH key", mutate: (c) => { c.ssh.authorizedKeys = ["AAAAC3Nz no type"]; }, key: "runner-fleet:ssh.authorizedKeys[0]", says: /key type AAAAC3Nz is not one of ssh-ed25519/ },
  { what: "admin CIDR without a prefix", mutate: (c) => { c.ssh.adminCidrs = ["198.51.100.7"]; }, key: "runner-fleet:ssh.adminCidrs[0]", says: /CIDR/ },
  { what: "no admin CIDRs and no explicit world access", mutate: (c) => { c.ssh.adminCidrs = []; }, key: "runner-fleet:ssh.adminCidrs", says: /is required/ },
  { what: "GitHub App id not numeric", mutate: (c) => { c.github.appId = "my-app"; }, key: "runner-fleet:github.appId", says: /numeric App id/ },
  { what: "fireactions without github", mutate: (c) => { delete c.github; }, key: "runner-fleet:github", says: /required by the fireactions role/ },
  { what: "fireactions without the App key", mutate: () => {}, secrets: ["giteaRunnerToken", "cacheSigningKey"], key: "runner-fleet:githubAppPrivateKey", says: /pulumi config set --secret/ },
  { what: "gitea-runner without its token", mutate: (c) => { c.hosts.g = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["gitea-runner"] }; }, secrets: ["githubAppPrivateKey"], key: "runner-fleet:giteaRunnerToken", says: /gitea-runner role/ },
  { what: "cache without a signing key", mutate: (c) => { c.hosts.c = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["cache"] }; }, secrets: ["githubAppPrivateKey"], key: "runner-fleet:cacheSigningKey", says: /cache role/ },
  { what: "forgejo-runner without forgejo", mutate: (c) => { delete c.forgejo; c.hosts.f = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["forgejo-runner"] }; }, key: "runner-fleet:forgejo", says: /forgejo-runner role/ },
  { what: "AWS data volume on a bad device", mutate: (c) => { c.hosts.metal.dataVolumes = { cache: { sizeGib: 100, deviceName: "/dev/xvda" } }; }, key: "runner-fleet:hosts.metal.dataVolumes.cache.deviceName", says: /\/dev\/sdf/ },
  { what: "user-data over the cloud's size limit", mutate: (c) => { c.pools = Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`p${i}`, { size: "small", maxRunners: 1, image: `registry.example.org/${[1, 2, 3, 4].map((k) => createHash("sha256").update(`${i}.${k}`).digest("hex")).join("/")}` }])); c.hosts.metal.instanceType = "c7i.metal-48xl"; c.hosts.metal.pools = Object.keys(c.pools); }, key: "runner-fleet:hosts.metal", says: /over the aws limit of 16384 bytes/ },
  { what: "pool organization that climbs out of its API path", mutate: (c) => { c.pools.small.organization = "../.."; }, key: "runner-fleet:pools.small.organization", says: /GitHub organization name/ },
  { what: "pool organization with a slash", mutate: (c) => { c.pools.small.organization = "acme/other"; }, key: "runner-fleet:pools.small.organization", says: /GitHub organization name/ },
  { what: "pool organization with spaces", mutate: (c) => { c.pools.small.organization = "acme corp"; }, key: "runner-fleet:pools.small.organization", says: /GitHub organization name/ },
  { what: "App key in user-data while the key is only in Vault", mutate: (c) => { c.unsafe = { githubAppKeyInUserData: true }; c.vault.externalSecrets = ["githubApp"]; }, secrets: [], key: "runner-fleet:unsafe.githubAppKeyInUserData", says: /vault\.externalSecrets.*not be written into user-data/ },
  { what: "hosts is a list, not a map", mutate: (c) => { c.hosts = [c.hosts.metal]; }, key: "runner-fleet:hosts", says: /must be a map/ },
];

describe("bad config names its key path", () => {
  it("has many distinct cases", () => {
    expect(new Set(BAD.map((b) => b.what)).size).toBeGreaterThanOrEqual(25);
  });

  for (const bad of BAD) {
    it(bad.what, () => {
      const cfg = baseConfig();
      bad.mutate(cfg);
      const problems = problemsOf(cfg, bad.secrets);
      const line = problems.find((p) => p.startsWith(`${bad.key}: `));
      expect(line, `no problem for ${bad.key} in:\n${problems.join("\n")}`).toBeDefined();
      if (bad.says) expect(line).toMatch(bad.says);
    });
  }

  it("cross-checks the rest when some entries fail the schema", () => {
    const cfg = baseConfig();
    cfg.hosts.typo = { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["small"], tpyo: 1 };
    cfg.pools.broken = { size: "huge" };
    cfg.hosts.metal.pools = ["broken", "gigantic"];
    const problems = problemsOf(cfg);
    expect(problems).toEqual(expect.arrayContaining([
      "runner-fleet:hosts.typo.tpyo: unknown key (check the spelling)",
      expect.stringMatching(/^runner-fleet:pools\.broken\.size: must be one of/),
      // Found by the cross-field checks on the entries that did parse.
      expect.stringMatching(/^runner-fleet:hosts\.metal\.pools\[1\]: pool "gigantic" does not exist/),
    ]));
    // The pool that failed the schema is not reported a second time as missing.
    expect(problems.join("\n")).not.toMatch(/pool "broken" does not exist/);
  });

  it("cross-checks a host on the fields that parsed when others failed the schema (#24)", () => {
    const cfg = baseConfig();
    // throughput over the schema's bound, and an io2 volume without iops (a cross-field rule).
    cfg.hosts.metal.dataVolumes = { cache: { sizeGib: 100, deviceName: "/dev/sdf", type: "io2", throughput: 5000 } };
    cfg.hosts.metal.rootVolumGib = 60;
    cfg.hosts.other = { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["small", "gigantic"], boot: true, trial: true, tpyo: 1 };
    const problems = problemsOf(cfg);
    expect(problems).toEqual(expect.arrayContaining([
      "runner-fleet:hosts.metal.dataVolumes.cache.throughput: must be at most 2000, got 5000",
      "runner-fleet:hosts.metal.rootVolumGib: unknown key (check the spelling)",
      "runner-fleet:hosts.metal.dataVolumes.cache.iops: is required for io2 volumes",
      "runner-fleet:hosts.other.tpyo: unknown key (check the spelling)",
      expect.stringMatching(/^runner-fleet:hosts\.other\.pools\[1\]: pool "gigantic" does not exist/),
      expect.stringMatching(/^runner-fleet:hosts\.other\.trial: cannot be combined with boot/),
    ]));
  });

  it("guesses nothing for a field that failed: a defaulted one leaves its part unchecked", () => {
    const cfg = baseConfig();
    // type fails; its default (gp3) would wrongly say "gp3 volumes take no iops".
    cfg.hosts.metal.dataVolumes = { cache: { sizeGib: 100, deviceName: "/dev/sdf", type: "io9", iops: 3000 }, logs: { sizeGib: 100, deviceName: "/dev/sdg", type: "io2" } };
    const problems = problemsOf(cfg);
    expect(problems.some((p) => p.startsWith("runner-fleet:hosts.metal.dataVolumes.cache.type: must be one of"))).toBe(true);
    expect(problems).toContain("runner-fleet:hosts.metal.dataVolumes.logs.iops: is required for io2 volumes");
    expect(problems.join("\n")).not.toMatch(/cache\.iops/);
    // A required field that failed: the host is not cross-checked at all (no invented problems).
    const cfg2 = baseConfig();
    cfg2.hosts.metal.instanceType = 7;
    cfg2.hosts.metal.pools = ["gigantic"];
    const problems2 = problemsOf(cfg2);
    expect(problems2).toEqual(["runner-fleet:hosts.metal.instanceType: must be a string, got 7"]);
  });

  it("warns for a pool that no host runs, and only then", () => {
    const cfg = baseConfig();
    const warnings = modelFrom(cfg).warnings;
    expect(warnings.filter((w) => /no host runs it/.test(w))).toEqual([expect.stringMatching(/^pools\.medium: defined but no host runs it/)]);
    cfg.hosts.metal.pools = ["large", "medium", "small"];
    cfg.hosts.metal.instanceType = "c7i.metal-48xl";
    expect(modelFrom(cfg).warnings.filter((w) => /no host runs it/.test(w))).toEqual([]);
  });

  it("accepts a pool organization that is a GitHub name", () => {
    const cfg = baseConfig();
    cfg.pools.small.organization = "acme-eng2";
    expect(problemsOf(cfg)).toEqual([]);
  });

  it("reports every problem at once, each on its own line", () => {
    const cfg = baseConfig();
    cfg.hosts.metal.pools = ["gigantic"];
    cfg.hosts.hz = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["fireactions"], pools: ["small"] };
    delete cfg.github;
    const problems = problemsOf(cfg);
    expect(problems).toEqual(expect.arrayContaining([
      expect.stringMatching(/^runner-fleet:hosts\.metal\.pools\[0\]: /),
      expect.stringMatching(/^runner-fleet:hosts\.hz\.serverType: /),
      expect.stringMatching(/^runner-fleet:github: /),
    ]));
    for (const p of problems) expect(p).not.toMatch(/\n|at .*\.ts:\d+/);
  });
});
