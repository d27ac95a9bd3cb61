/**
 * Issue 15, class by class: each case was accepted, crashed or leaked before the validation
 * rules, and must now be one `runner-fleet:<key path>: <problem>` line (or a warning).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { buildFleetModel, ConfigError, SECRET_KEYS } from "../components/config";
import { checkSshKey, normalAddress, normalCidr } from "../components/config-values";
import { RULES } from "../components/config-rules";
import { baseConfig, modelFrom, ROOT, runPlan, writeStackFile } from "./support/fixtures";

const PLAN_TIMEOUT = 180_000;
const AZURE_IMAGE = { x86_64: { path: "/nix/store/g24mi45nbl82xjagif45annhc6wjjj5h-nixos-azure-image-25.11-x86_64-linux" } };
const DO_IMAGE = { x86_64: { path: "/nix/store/7iaksmms61r6mnz4nhw2ihk1v48l0sn2-nixos-do-image-25.11-x86_64-linux" } };
const LINE = /^runner-fleet:[^\n]*?: [^\n]+$/;

function problemsOf(config: Record<string, any>, extra: { secureKeys?: string[]; secrets?: string[] } = {}): string[] {
  try {
    buildFleetModel(config, {
      stack: "test", secretsSet: new Set(extra.secrets ?? Object.values(SECRET_KEYS)), awsRegion: "eu-central-1", azureLocation: "westeurope",
      baseDir: ROOT, requireImageFiles: false, secureKeys: new Set(extra.secureKeys ?? []),
    });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

function expectProblem(problems: string[], key: string, says?: RegExp) {
  const line = problems.find((p) => p.startsWith(`runner-fleet:${key}: `));
  expect(line, `no problem for ${key} in:\n${problems.join("\n")}`).toBeDefined();
  if (says) expect(line).toMatch(says);
  for (const p of problems) expect(p).toMatch(LINE);
}

const mutated = (mutate: (c: Record<string, any>) => void) => {
  const c = baseConfig();
  mutate(c);
  return c;
};

describe("injection into user-data: control and line-separator characters are refused in every string", () => {
  const cases: Array<[string, (c: Record<string, any>, s: string) => void, string]> = [
    ["a pool label", (c, s) => { c.pools.small.labels = [`x${s}bootcmd: [touch /tmp/pwned]${s}zzz: |1 #`]; }, "pools.small.labels[0]"],
    ["a forge URL", (c, s) => { c.forgejo.url = `https://forgejo.example.org/${s}x`; }, "forgejo.url"],
    ["kernelArgs", (c, s) => { c.pools.small.kernelArgs = `console=ttyS0${s}runcmd: [id]`; }, "pools.small.kernelArgs"],
    ["an SSH key comment", (c, s) => { c.ssh.authorizedKeys = [`${c.ssh.authorizedKeys[0]}${s}`]; }, "ssh.authorizedKeys[0]"],
    ["a tag", (c, s) => { c.hosts.metal.tags = [`t${s}`]; }, "hosts.metal.tags[0]"],
  ];
  for (const char of ["\u2028", "\u2029", "\u0085", "\u0080", "\u009b", "\u0000", "\n", "\t", "\u007f", "\ufeff", "\u202e"]) {
    for (const [what, put, key] of cases) {
      it(`U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")} in ${what}`, () => {
        const problems = problemsOf(mutated((c) => put(c, char)));
        expectProblem(problems, key, /contains the character U\+[0-9A-F]{4}; config strings are single-line printable text/);
      });
    }
  }

  it("in a map key as well, reported at the key, escaped", () => {
    const problems = problemsOf(mutated((c) => { c.pools[`p\u2028q`] = { size: "small" }; }));
    expectProblem(problems, 'pools["p\\u2028q"]', /the key contains the character U\+2028/);
  });

  it("and no message repeats such a character raw", () => {
    const problems = problemsOf(mutated((c) => { c.pools.small.size = "x\u2028y"; }));
    for (const p of problems) expect(p).toMatch(/^[\x20-\x7e]+$/);
  });
});

describe("a secure value at a key that is not a secret", () => {
  const DECRYPTED = "PLANTED-DECRYPTED-7c41f0";

  it("is an error naming the key, never quoting the value (whole section or single leaf)", () => {
    for (const key of ["vault", "pools", "hosts", "deploy"]) {
      const cfg = baseConfig();
      cfg[key] = DECRYPTED;
      const problems = problemsOf(cfg, { secureKeys: [key] });
      expectProblem(problems, key, /holds a secret \(secure\) value, but it is not a secret key/);
      expect(problems.join("\n")).not.toContain(DECRYPTED);
      // Reported once: the schema does not also call the key missing or malformed.
      expect(problems.filter((p) => p.startsWith(`runner-fleet:${key}`))).toHaveLength(1);
    }
  });

  it("stays allowed at the secret keys", () => {
    expect(problemsOf(baseConfig(), { secureKeys: Object.values(SECRET_KEYS) })).toEqual([]);
  });

  it("through the plan: a secure leaf in the stack file fails with exit 1, naming the key", async () => {
    const file = writeStackFile(baseConfig());
    const text = fs.readFileSync(file, "utf8").replace(/(runner-fleet:pools:\n(?:.*\n)*?    small:\n)/, "$1      image:\n        secure: v1:c2FsdA==:UExBTlRFRC1DSVBIRVJURVhU\n");
    expect(text).toContain("secure: v1:");
    fs.writeFileSync(file, text);
    const r = await runPlan(["--config", file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^runner-fleet:pools: holds a secret \(secure\) value/m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }, PLAN_TIMEOUT);
});

describe("names are looked up among own keys only", () => {
  for (const name of ["constructor", "__proto__", "valueOf", "toString", "hasOwnProperty"]) {
    it(`pools: [${name}] is a missing pool`, () => {
      const problems = problemsOf(mutated((c) => { c.hosts.metal.pools = [name]; }));
      expectProblem(problems, "hosts.metal.pools[0]", /does not exist/);
    });
  }
  it("a pool really named constructor works", () => {
    const model = modelFrom(mutated((c) => { c.pools = { constructor: { size: "small" } }; c.hosts.metal.pools = ["constructor"]; }));
    expect(model.pools.constructor).toMatchObject({ name: "constructor", maxRunners: 2 });
  });
});

describe("crashes become key-path errors (exit 1, no trace) in the plan", () => {
  it("Azure image file:, unknown and empty AWS region, unknown Azure location, unknown DO region with a nix image, a flake without flake.nix", async () => {
    const cfg = baseConfig();
    cfg.hosts.az = { provider: "azure", size: "Standard_D4ds_v5", roles: ["fireactions"], pools: ["small"] };
    cfg.images.azure = { x86_64: { ...AZURE_IMAGE.x86_64, file: "disk.vhd" } };
    cfg.hosts.mars = { provider: "aws", instanceType: "c7i.xlarge", region: "mars-1", roles: ["cache"] };
    cfg.hosts.blank = { provider: "aws", instanceType: "c7i.xlarge", region: "", roles: ["cache"] };
    cfg.hosts.moon = { provider: "azure", size: "Standard_B2s", location: "moon", roles: ["cache"] };
    cfg.hosts.drop = { provider: "digitalocean", size: "s-2vcpu-4gb", region: "xyz9", image: "nix", roles: ["cache"] };
    cfg.images.digitalocean = DO_IMAGE;
    cfg.deploy.flake = "./components";
    const r = await runPlan(["--config", writeStackFile(cfg)]);
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stderr.trim().split("\n").slice(1);
    for (const l of lines) expect(l).toMatch(LINE);
    for (const key of ["hosts.mars.region", "hosts.blank.region", "hosts.moon.location", "hosts.drop.region", "deploy.flake"]) {
      expect(lines.some((l) => l.startsWith(`runner-fleet:${key}: `)), `${key} in\n${r.stderr}`).toBe(true);
    }
  }, PLAN_TIMEOUT);

  it("the Azure image with a file: name plans (the file is checked only where it exists)", async () => {
    const cfg = baseConfig();
    cfg.hosts.az = { provider: "azure", size: "Standard_D4ds_v5", roles: ["fireactions"], pools: ["small"] };
    cfg.images.azure = { x86_64: { ...AZURE_IMAGE.x86_64, file: "disk.vhd" } };
    const r = await runPlan(["--config", writeStackFile(cfg)]);
    expect(r.code, r.stderr).toBe(0);
  }, PLAN_TIMEOUT);
});

describe("numbers are bounded: no hang, no overflow", () => {
  it("a huge readyTimeoutMinutes is refused at once", () => {
    const started = Date.now();
    const problems = problemsOf(mutated((c) => { c.deploy.readyTimeoutMinutes = 1e15; }));
    expectProblem(problems, "deploy.readyTimeoutMinutes", /must be at most 1440, got 1000000000000000/);
    expect(Date.now() - started).toBeLessThan(1000);
  });
  const bounds: Array<[string, (c: Record<string, any>) => void, string, RegExp]> = [
    ["deploy-rs confirmTimeout is u16", (c) => { c.deploy.confirmTimeout = 65536; }, "deploy.confirmTimeout", /at most 65535/],
    ["deploy-rs activationTimeout is u16", (c) => { c.deploy.activationTimeout = 70000; }, "deploy.activationTimeout", /at most 65535/],
    ["a wrap TTL past Go's durations", (c) => { c.vault.wrapTtl = "9999999999h"; }, "vault.wrapTtl", /at most 8784h/],
    ["a 20-digit duration", (c) => { c.vault.tokenTtl = "99999999999999999999s"; }, "vault.tokenTtl", /duration/],
    ["wrapTtl 0s", (c) => { c.vault.wrapTtl = "0s"; }, "vault.wrapTtl", /at least 1s/],
    ["maxRunners 0", (c) => { c.pools.small.maxRunners = 0; }, "pools.small.maxRunners", /must be at least 1, got 0/],
    ["minRunners 0", (c) => { c.pools.small.minRunners = 0; }, "pools.small.minRunners", /fireactions \(v0\.4\.0\) only tops a pool up to its minimum/],
    ["a pool of 10^6 runners", (c) => { c.pools.small.maxRunners = 1e6; }, "pools.small.maxRunners", /at most 1000/],
    ["a runner VM over Firecracker's 32 vCPUs", (c) => { c.pools.small.vcpus = 64; }, "pools.small.vcpus", /at most 32/],
    ["an absurd root volume", (c) => { c.hosts.metal.rootVolumeGib = 1e9; }, "hosts.metal.rootVolumeGib", /at most 16384/],
  ];
  for (const [what, mutate, key, says] of bounds) it(what, () => expectProblem(problemsOf(mutated(mutate)), key, says));
});

describe("file names are plain names", () => {
  for (const file of ["../../../../tmp/x.vhd", "/etc/passwd", "..", ".hidden.vhd", "a/b.vhd"]) {
    it(`images.aws.x86_64.file: ${file}`, () => {
      expectProblem(problemsOf(mutated((c) => { c.images.aws.x86_64.file = file; })), "images.aws.x86_64.file", /plain file name/);
    });
  }
});

describe("host names nix/ reserves or cannot parse", () => {
  for (const name of ["meta", "defaults", "network", "fireactions-x86_64", "cache-aarch64", "forgejo-runner-x86_64", "1host"]) {
    it(name, () => {
      const problems = problemsOf(mutated((c) => { c.hosts[name] = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["forgejo-runner"] }; }));
      // Names with "_" (x86_64 templates) already fail the hostname pattern.
      expectProblem(problems, `hosts.${name}`, /reserved name|must start with a letter|lowercase letters/);
    });
  }
  it("the list is the one nix/lib reads", () => {
    const shared = JSON.parse(fs.readFileSync(path.join(ROOT, "nix/lib/reserved-names.json"), "utf8"));
    for (const n of shared.colmena) expect(problemsOf(mutated((c) => { c.hosts[n] = { ...c.hosts.metal }; })).join("\n")).toContain(`hosts.${n}: is a reserved name`);
  });
});

describe("every problem is listed, even when other parts fail the schema", () => {
  it("a bad vault.mount and a bad deploy tool do not hide pool, catalog, KVM and secret problems", () => {
    const cfg = baseConfig();
    cfg.vault.mount = "/bad//";
    cfg.deploy.tool = "nixops";
    cfg.ssh.authorizedKeys = ["nonsense"];
    cfg.hosts.metal.pools = ["gigantic"];
    cfg.hosts.hz = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["fireactions"], pools: ["small"] };
    cfg.hosts.typo = { provider: "aws", instanceType: "c9z.mega", roles: ["cache"] };
    cfg.hosts.bad = { provider: "aws", roles: ["cache"], extra: 1 };
    const problems = problemsOf(cfg, { secrets: [] });
    for (const key of ["vault.mount", "deploy.tool", "ssh.authorizedKeys[0]", "hosts.metal.pools[0]", "hosts.hz.serverType", "hosts.typo.instanceType", "hosts.bad.extra", "githubAppPrivateKey"]) {
      expectProblem(problems, key);
    }
  });
});

describe("values the clouds reject, caught from the catalog", () => {
  const cases: Array<[string, (c: Record<string, any>) => void, string, RegExp]> = [
    ["a zone outside the host's region", (c) => { c.hosts.metal.availabilityZone = "us-east-1a"; }, "hosts.metal.availabilityZone", /not a zone of region eu-central-1/],
    ["an unknown Azure location", (c) => { c.hosts.az = { provider: "azure", size: "Standard_B2s", location: "westeurop", roles: ["cache"] }; }, "hosts.az.location", /not an Azure location/],
    ["duplicate data-volume devices (sdf = xvdf)", (c) => { c.hosts.metal.dataVolumes = { a: { sizeGib: 10, deviceName: "/dev/sdf" }, b: { sizeGib: 10, deviceName: "/dev/xvdf" } }; }, "hosts.metal.dataVolumes.b.deviceName", /already the device of data volume a/],
    ["io2 without iops", (c) => { c.hosts.metal.dataVolumes = { a: { sizeGib: 10, deviceName: "/dev/sdf", type: "io2" } }; }, "hosts.metal.dataVolumes.a.iops", /required for io2/],
    ["throughput on st1", (c) => { c.hosts.metal.dataVolumes = { a: { sizeGib: 500, deviceName: "/dev/sdf", type: "st1", throughput: 250 } }; }, "hosts.metal.dataVolumes.a.throughput", /only gp3/],
    ["an st1 volume under 125 GiB", (c) => { c.hosts.metal.dataVolumes = { a: { sizeGib: 10, deviceName: "/dev/sdf", type: "st1" } }; }, "hosts.metal.dataVolumes.a.sizeGib", /125 to 16384 GiB/],
    ["gp3 iops out of range", (c) => { c.hosts.metal.dataVolumes = { a: { sizeGib: 10, deviceName: "/dev/sdf", iops: 100 } }; }, "hosts.metal.dataVolumes.a.iops", /3000 to 80000/],
    ["11 servers in a Hetzner spread group", (c) => { for (let i = 0; i < 11; i++) c.hosts[`hz${i}`] = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["forgejo-runner"], placementGroup: "spread" }; }, "hosts.hz9.placementGroup", /Hetzner allows 10/],
  ];
  for (const [what, mutate, key, says] of cases) it(what, () => expectProblem(problemsOf(mutated(mutate)), key, says));
  it("the catalog's Spaces map agrees with the DigitalOcean image component's", async () => {
    const { spacesRegion } = await import("../components/images/digitalocean");
    const { DIGITALOCEAN_REGIONS, DIGITALOCEAN_SPACES_REGIONS } = await import("../components/catalog");
    for (const region of DIGITALOCEAN_REGIONS) {
      if (Object.hasOwn(DIGITALOCEAN_SPACES_REGIONS, region)) expect(spacesRegion(region), region).toBe(DIGITALOCEAN_SPACES_REGIONS[region]);
      else expect(() => spacesRegion(region)).toThrow();
    }
  });
  it("10 in a spread group is fine", () => {
    expect(problemsOf(mutated((c) => { for (let i = 0; i < 10; i++) c.hosts[`hz${i}`] = { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["forgejo-runner"], placementGroup: "spread" }; }))).toEqual([]);
  });
});

describe("identity and format checks", () => {
  const existing = (address: string) => ({ provider: "existing", address, arch: "x86_64", vcpus: 4, memoryMib: 8192, roles: ["forgejo-runner"] });
  const cases: Array<[string, (c: Record<string, any>) => void, string, RegExp]> = [
    ["IPv6 addresses compare in normal form", (c) => { c.hosts.a = existing("2001:db8::10"); c.hosts.b = existing("2001:DB8:0:0::10"); }, "hosts.b.address", /already the address of host a/],
    ["an IPv4-mapped IPv6 address is its IPv4 address", (c) => { c.hosts.a = existing("192.0.2.9"); c.hosts.b = existing("::ffff:192.0.2.9"); }, "hosts.b.address", /already the address of host a/],
    ["hostnames compare without case or trailing dot", (c) => { c.hosts.a = existing("lab.example.org"); c.hosts.b = existing("LAB.example.org."); }, "hosts.b.address", /already the address/],
    ["999.1.1.1 is not a hostname", (c) => { c.hosts.a = existing("999.1.1.1"); }, "hosts.a.address", /neither an IP address nor a hostname/],
    ["an SSH key whose blob is another algorithm", (c) => { c.ssh.authorizedKeys = [c.ssh.authorizedKeys[0].replace(/^ssh-ed25519/, "ssh-rsa")]; }, "ssh.authorizedKeys[0]", /blob is a "ssh-ed25519" key, not ssh-rsa/],
    ["a truncated SSH key blob", (c) => { c.ssh.authorizedKeys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcXAMPLEkeyForTheDevStackOnly0000000000000 x"]; }, "ssh.authorizedKeys[0]", /not base64|canonical base64|malformed/],
    ["a CIDR with host bits", (c) => { c.ssh.adminCidrs = ["198.51.100.7/24"]; }, "ssh.adminCidrs[0]", /host bits set after the \/24 prefix/],
    ["two spellings of one CIDR", (c) => { c.ssh.adminCidrs = ["2001:db8::/32", "2001:DB8:0::/32"]; }, "ssh.adminCidrs[1]", /same network as ssh.adminCidrs\[0\]/],
    ["an http runner URL", (c) => { c.forgejo.url = "http://forgejo.example.org"; }, "forgejo.url", /must use https/],
    ["an http GitHub URL", (c) => { c.github.url = "http://github.example.org"; }, "github.url", /must use https/],
    ["an empty forge label", (c) => { c.gitea.labels = [""]; }, "gitea.labels[0]", /must not be empty/],
    ["credentials inside vault.address", (c) => { c.vault.address = "https://root:hunter2@vault.example.org"; }, "vault.address", /must not carry credentials/],
  ];
  for (const [what, mutate, key, says] of cases) it(what, () => expectProblem(problemsOf(mutated(mutate)), key, says));
  it("the credentials are not quoted back", () => {
    expect(problemsOf(mutated((c) => { c.vault.address = "https://root:hunter2@vault.example.org"; })).join("\n")).not.toContain("hunter2");
  });
  it("value parsers on their own", () => {
    expect(normalAddress("2001:DB8:0:0::10")).toEqual({ kind: "ipv6", normal: "2001:db8::10" });
    expect(normalCidr("::/0")).toMatchObject({ normal: "::/0", prefix: 0, family: 6 });
    expect(checkSshKey("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMS2h8BA5KkfTs1AVBW+KzNVWOGAqW5r1NAY25uvw+QP c")).toBeUndefined();
    expect(checkSshKey("sk-ssh-ed25519@openssh.com AAAAC3NzaC1lZDI1NTE5AAAAIMS2h8BA5KkfTs1AVBW+KzNVWOGAqW5r1NAY25uvw+QP")).toMatch(/not sk-ssh-ed25519/);
  });
});

describe("messages", () => {
  const cases: Array<[string, (c: Record<string, any>) => void, string, RegExp]> = [
    ["an object", (c) => { c.vault = "vault.example.org"; }, "vault", /must be an object, got "vault.example.org"/],
    ["an integer", (c) => { c.pools.small.maxRunners = 1.5; }, "pools.small.maxRunners", /must be an integer, got 1.5/],
    ["a positive field says at least 1", (c) => { c.deploy.batchSize = 0; }, "deploy.batchSize", /must be at least 1, got 0$/],
    [".inf as read from a stack file", (c) => { c.pools.small.maxRunners = ".inf"; }, "pools.small.maxRunners", /must be a finite number, got \.inf/],
    ["Infinity in process", (c) => { c.capacity = { reserveVcpus: Infinity }; }, "capacity.reserveVcpus", /finite number, got \.inf/],
  ];
  for (const [what, mutate, key, says] of cases) it(what, () => expectProblem(problemsOf(mutated(mutate)), key, says));
  it(".inf from a real stack file", async () => {
    const file = writeStackFile(baseConfig());
    fs.writeFileSync(file, fs.readFileSync(file, "utf8").replace("batchSize: 2", "batchSize: .inf"));
    const r = await runPlan(["--config", file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^runner-fleet:deploy\.batchSize: must be a finite number, got \.inf$/m);
  }, PLAN_TIMEOUT);
});

describe("warnings", () => {
  it("world-open admin CIDRs", () => {
    const w = modelFrom(mutated((c) => { c.ssh.adminCidrs = ["0.0.0.0/0", "::/0"]; })).warnings.join("\n");
    expect(w).toMatch(/ssh\.adminCidrs\[0\]: 0\.0\.0\.0\/0 opens port 22 to every IPv4 address/);
    expect(w).toMatch(/ssh\.adminCidrs\[1\]: ::\/0 opens port 22 to every IPv6 address/);
  });
  it("opt-ins with no effect are not announced as active", () => {
    const cfg = baseConfig();
    cfg.hosts = { c: { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["cache"], replaceOnImageChange: true } };
    cfg.hosts.d = { provider: "digitalocean", size: "s-2vcpu-4gb", region: "fra1", roles: ["cache"], allowUndocumentedKvm: true };
    cfg.unsafe = { githubAppKeyInUserData: true };
    const w = modelFrom(cfg).warnings.join("\n");
    expect(w).toMatch(/unsafe\.githubAppKeyInUserData is set but has no effect/);
    expect(w).not.toMatch(/githubAppKeyInUserData is on/);
    expect(w).toMatch(/hosts\.d: allowUndocumentedKvm is set but has no effect/);
    expect(w).toMatch(/hosts\.c: replaceOnImageChange is set but has no effect/);
  });
});

describe("validation reads as a list of named rules", () => {
  it("each rule has a name and a one-line reason", () => {
    expect(RULES.length).toBeGreaterThanOrEqual(15);
    for (const rule of RULES) {
      expect(rule.name).toMatch(/^[a-z][A-Za-z]+$/);
      expect(rule.why.length).toBeGreaterThan(20);
      expect(rule.why).not.toContain("\n");
    }
    expect(new Set(RULES.map((r) => r.name)).size).toBe(RULES.length);
  });
});
