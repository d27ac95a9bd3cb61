/**
 * cloud-init user-data: content and modes, determinism, the clouds' size limits and gzip, no
 * secrets, and every document the project can produce checked by `cloud-init schema` itself
 * (Debian package `cloud-init`; the suite fails when it is missing).
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  BOOTSTRAP, fitsUserDataLimit, gzipBase64, PATHS, renderUserData, USER_DATA_LIMITS, userDataLimit, userDataSize,
  type UserDataInput,
} from "../components/cloud-init";
import { PROJECT } from "../components/config";
import type { FleetModel, HostModel } from "../components/model";
import { renderPoolsJson } from "../components/pools";
import { parseStackFile } from "../scripts/stack-file";
import { baseConfig, modelFrom, PLANTED_SECRETS, ROOT, runPlan, SSH_KEY, writeStackFile } from "./support/fixtures";

const run = promisify(execFile);
/** Tests that run the plan (a few seconds each, much more on a loaded machine). */
const PLAN_TIMEOUT = 180_000;

// ---------------------------------------------------------------------------------------------
// Helpers

/** A real RSA public key (its private half was thrown away): validation decodes key blobs. */
const RSA_BLOB = "AAAAB3NzaC1yc2EAAAADAQABAAABgQDQFI9hlRO+981loOhi45bgwVP0t5Ib0gZNKCdOn8kxcjyYCpUFyFNCyX+7RS7hfOPzIaQTBQS9k6vrCBev5Y0qGSDKQBPkh4l5oyH0QklzjK0NWPjl4rX+dKhhKnTwh6SlKvtaEBt5xcTCHcUzVl57K/K51H7zq1AYD/pfSD2G6G241CYW/PpbAAC2hVzg/eYpo3c4aextrWDF6V2HPha99FQPtUlVkMnHyb5kNCtG+RPnIUiaow0qmm1+MntjVPsPUeb18ZScVfLjXk8l0X91jR7c1uLR7qoVwJpccJBwzfhSP3MbggGqbSiGOiT3FSzh4ujMkg5r6Mrq4Q4Mon3M0zjfC9CsKGMovheiDwsODTfOthRCHq4cfsjGZESnIQEdDwUSVryYhfW+QMY5b9+2wfIxzwaI6K0Ihnx7iOn9RErwNQVCIgCYJ0F1WI8OPuGuhCZ/Lvj2Wo6arWDOnMMK9RA1ca05Ot8yZYK/3uCRAiR/kwCniBqfi2aOf6Qzdpk=";
const ROLE_ID = "4f1c2a9e-0d3b-4c5e-9a7f-1b2c3d4e5f60";
const WRAPPED = "hvs.CAESIWrappedTokenForTests0123456789abcdef";

interface WriteFileDoc {
  path: string;
  content: string;
  encoding?: string;
  owner: string;
  permissions: string;
}
interface CloudConfig {
  users: Array<{ name: string; lock_passwd: boolean; ssh_authorized_keys: string[]; [k: string]: unknown }>;
  write_files: WriteFileDoc[];
  runcmd: string[];
}

/** Reads a document the way cloud-init's PyYAML does (YAML 1.1). */
function readDoc(userData: string): CloudConfig {
  return parse(userData, { version: "1.1" }) as CloudConfig;
}

/** A file's content as the host would end up with it (gzip+base64 undone). */
function contentOf(entry: WriteFileDoc): string {
  return entry.encoding === "gz+b64" ? gunzipSync(Buffer.from(entry.content, "base64")).toString("utf8") : entry.content;
}

function fileAt(doc: CloudConfig, p: string): WriteFileDoc {
  const entry = doc.write_files.find((f) => f.path === p);
  if (!entry) throw new Error(`no write_files entry for ${p}`);
  return entry;
}

function hostOf(model: FleetModel, name: string): HostModel {
  const host = model.hosts.find((h) => h.name === name);
  if (!host) throw new Error(`no host ${name}`);
  return host;
}

/** What fleet.ts passes for a host, with fixed Vault values. */
function inputFor(model: FleetModel, host: HostModel, extra: Partial<UserDataInput> = {}): UserDataInput {
  const appKey = model.unsafe.githubAppKeyInUserData && host.roles.includes("fireactions") ? PLANTED_SECRETS.githubAppPrivateKey : undefined;
  return {
    host, model,
    poolsJson: renderPoolsJson(host.pools.map((p) => model.pools[p])),
    roleId: ROLE_ID,
    wrappedSecretId: WRAPPED,
    ...(appKey ? { githubAppPrivateKey: appKey } : {}),
    ...extra,
  };
}

const IMAGES = {
  aws: {
    x86_64: { path: "/nix/store/8qp8fwyrn2m1ajzgcddwn7iz8imnckfn-nixos-amazon-image-25.11-x86_64-linux" },
    aarch64: { path: "/nix/store/wic7bgczhgqp3v4k0b21x1yc0hxwq2x2-nixos-amazon-image-25.11-aarch64-linux" },
  },
  azure: { x86_64: { path: "/nix/store/g24mi45nbl82xjagif45annhc6wjjj5h-nixos-azure-image-25.11-x86_64-linux" } },
  hetzner: { x86_64: { path: "/nix/store/6nzfbdasmrlnpmjmxh2n3gpl8qyzi4hc-nixos-hetzner-image-25.11-x86_64-linux" } },
  digitalocean: { x86_64: { path: "/nix/store/7iaksmms61r6mnz4nhw2ihk1v48l0sn2-nixos-do-image-25.11-x86_64-linux" } },
};

/** Every provider, every role, every preset, nix and stock images. */
function everythingConfig(): Record<string, any> {
  const cfg = baseConfig();
  cfg.pools = {
    small: { size: "small" },
    medium: { size: "medium", labels: ["self-hosted", "linux"] },
    large: { size: "large", groupId: 4 },
  };
  cfg.images = IMAGES;
  cfg.gitea = { url: "https://gitea.example.org" };
  cfg.hosts = {
    "aws-metal": { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["large", "medium", "small"], tags: ["prod"] },
    "aws-arm": { provider: "aws", instanceType: "c7g.metal", roles: ["fireactions"], pools: ["small"] },
    "aws-cache": { provider: "aws", instanceType: "c7i.xlarge", roles: ["cache"] },
    "az-fa": { provider: "azure", size: "Standard_D16ds_v5", roles: ["fireactions"], pools: ["medium"] },
    "az-gitea": { provider: "azure", size: "Standard_B2s", roles: ["gitea-runner"] },
    "hz-forgejo": { provider: "hetzner", serverType: "ccx23", location: "nbg1", roles: ["forgejo-runner"] },
    "hz-cache": { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["cache"], image: "nix" },
    "do-fa": { provider: "digitalocean", size: "s-8vcpu-16gb", region: "fra1", roles: ["fireactions"], pools: ["small"], allowUndocumentedKvm: true },
    "do-gitea": { provider: "digitalocean", size: "s-2vcpu-4gb", region: "fra1", roles: ["gitea-runner"], image: "nix" },
    "onprem": { provider: "existing", address: "192.0.2.20", arch: "x86_64", vcpus: 64, memoryMib: 262144, kvm: true, roles: ["fireactions", "forgejo-runner"], pools: ["large"] },
    "onprem-new": { provider: "existing", address: "192.0.2.21", arch: "aarch64", vcpus: 8, memoryMib: 16384, install: true, installDisk: "/dev/sda", roles: ["cache"] },
  };
  return cfg;
}

/** `cloud-init schema` on one file: exit code and everything it printed. */
async function schema(file: string): Promise<{ file: string; code: number; output: string }> {
  try {
    const { stdout, stderr } = await run("cloud-init", ["schema", "--config-file", file]);
    return { file, code: 0, output: stdout + stderr };
  } catch (err: any) {
    return { file, code: typeof err.code === "number" ? err.code : 127, output: `${err.stdout ?? ""}${err.stderr ?? ""}${err.message}` };
  }
}

/** Checks files two at a time (the machine has two cores); returns the failures. */
async function schemaFailures(files: string[]): Promise<Array<{ file: string; code: number; output: string }>> {
  const results: Array<{ file: string; code: number; output: string }> = [];
  const queue = [...files];
  await Promise.all([0, 1].map(async () => {
    for (let f = queue.shift(); f !== undefined; f = queue.shift()) results.push(await schema(f));
  }));
  expect(results).toHaveLength(files.length);
  return results.filter((r) => r.code !== 0 || /deprecat/i.test(r.output) || !/Valid cloud-config/.test(r.output));
}

function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

function listFiles(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

// ---------------------------------------------------------------------------------------------

describe("user-data content", () => {
  const model = modelFrom(everythingConfig());
  const metal = hostOf(model, "aws-metal");
  const doc = readDoc(renderUserData(inputFor(model, metal)));

  it("is a #cloud-config document", () => {
    expect(renderUserData(inputFor(model, metal)).startsWith("#cloud-config\n")).toBe(true);
  });

  it("writes the four contract files, root-owned, secrets 0600 and the rest 0644", () => {
    expect(doc.write_files.map((f) => [f.path, f.owner, f.permissions])).toEqual([
      [PATHS.hostJson, "root:root", "0644"],
      [PATHS.poolsJson, "root:root", "0644"],
      [PATHS.roleId, "root:root", "0600"],
      [PATHS.wrappedSecretId, "root:root", "0600"],
    ]);
    expect(doc.write_files.some((f) => f.encoding)).toBe(false);
    expect(fileAt(doc, PATHS.roleId).content).toBe(ROLE_ID);
    expect(fileAt(doc, PATHS.wrappedSecretId).content).toBe(WRAPPED);
    expect(fileAt(doc, PATHS.poolsJson).content).toBe(renderPoolsJson(metal.pools.map((p) => model.pools[p])));
  });

  it("writes host.json with the contract's facts", () => {
    const facts = JSON.parse(fileAt(doc, PATHS.hostJson).content);
    expect(facts).toEqual({
      name: "aws-metal",
      stack: "test",
      provider: "aws",
      arch: "x86_64",
      roles: ["fireactions"],
      tags: ["prod"],
      vault: { address: "https://vault.example.org:8200", mount: "ci", authMount: "approle" },
      github: { organization: "acme", url: "https://github.com" },
      forgejo: { url: "https://forgejo.example.org" },
      gitea: { url: "https://gitea.example.org" },
    });
    const cfg = baseConfig();
    delete cfg.github;
    delete cfg.forgejo;
    delete cfg.gitea;
    cfg.pools = {};
    cfg.hosts = { c: { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["cache"] } };
    const bare = modelFrom(cfg);
    const bareFacts = JSON.parse(fileAt(readDoc(renderUserData(inputFor(bare, bare.hosts[0]))), PATHS.hostJson).content);
    expect([bareFacts.github, bareFacts.forgejo, bareFacts.gitea]).toEqual([null, null, null]);
  });

  it("writes pools.json as [] on hosts without fireactions", () => {
    const cache = readDoc(renderUserData(inputFor(model, hostOf(model, "aws-cache"))));
    expect(fileAt(cache, PATHS.poolsJson).content).toBe("[]\n");
  });

  it("adds only the deploy user, with its keys, a locked password and nothing that fights NixOS", () => {
    const cfg = everythingConfig();
    cfg.ssh.authorizedKeys = [SSH_KEY, `ssh-rsa ${RSA_BLOB} second@example`];
    cfg.deploy = { sshUser: "ops" };
    const m = modelFrom(cfg);
    const d = readDoc(renderUserData(inputFor(m, hostOf(m, "aws-metal"))));
    expect(d.users).toEqual([{ name: "ops", lock_passwd: true, ssh_authorized_keys: cfg.ssh.authorizedKeys }]);
    const text = renderUserData(inputFor(m, hostOf(m, "aws-metal")));
    expect(text).not.toMatch(/^\s*(-\s+)?(passwd|hashed_passwd|plain_text_passwd|chpasswd|sudo|ssh_pwauth|groups|shell):/m);
    expect(text).not.toContain("- default");
  });

  it("runs the bootstrap only where it exists, succeeding on stock images", () => {
    expect(doc.runcmd).toEqual([`if [ -x ${BOOTSTRAP} ]; then ${BOOTSTRAP}; fi`]);
    expect(BOOTSTRAP).toBe("/run/current-system/sw/bin/runner-fleet-bootstrap");
    const line = doc.runcmd[0];
    expect(execFileSync("sh", ["-c", `${line}; echo rc=$?`], { encoding: "utf8" }).trim()).toBe("rc=0");
  });

  it("quotes strings PyYAML would read as something else", () => {
    const cfg = everythingConfig();
    cfg.deploy = { sshUser: "no" };
    const m = modelFrom(cfg);
    const text = renderUserData(inputFor(m, hostOf(m, "aws-metal"), { roleId: "0600", wrappedSecretId: "yes" }));
    const d = readDoc(text);
    expect(d.users[0].name).toBe("no");
    expect(fileAt(d, PATHS.roleId).content).toBe("0600");
    expect(fileAt(d, PATHS.wrappedSecretId).content).toBe("yes");
  });

  it("is deterministic: same input, same bytes; config order does not matter", () => {
    const cfg = everythingConfig();
    const reordered = { ...cfg, hosts: Object.fromEntries(Object.entries(cfg.hosts).reverse()), pools: Object.fromEntries(Object.entries(cfg.pools).reverse()) };
    reordered.hosts["aws-metal"] = { ...cfg.hosts["aws-metal"], pools: ["small", "large", "medium"] };
    const other = modelFrom(reordered);
    for (const host of model.hosts) {
      const first = renderUserData(inputFor(model, host));
      expect(renderUserData(inputFor(model, host))).toBe(first);
      expect(renderUserData(inputFor(other, hostOf(other, host.name)))).toBe(first);
    }
  });

  it("stays printable ASCII: non-ASCII strings escaped, non-ASCII files as b64 with the same bytes", () => {
    const cfg = everythingConfig();
    cfg.pools.small = { size: "small", labels: ["café", "linux"] };
    cfg.forgejo = { url: "https://forgejo.example.org/zürich" };
    cfg.ssh.authorizedKeys = [`${SSH_KEY} ops@café`];
    const m = modelFrom(cfg);
    const host = hostOf(m, "aws-metal");
    const input = inputFor(m, host);
    const text = renderUserData(input);
    expect(text).toMatch(/^[\x20-\x7e\n]*$/);
    const d = readDoc(text);
    expect(d.users[0].ssh_authorized_keys).toEqual([`${SSH_KEY} ops@café`]);
    expect(text).toContain(`"${SSH_KEY} ops@caf\\xe9"`);
    const pools = fileAt(d, PATHS.poolsJson);
    expect(pools.encoding).toBe("b64");
    expect(Buffer.from(pools.content, "base64").toString("utf8")).toBe(input.poolsJson);
    const hostJson = fileAt(d, PATHS.hostJson);
    expect(hostJson.encoding).toBeUndefined();
    expect(hostJson.content).toContain("/z\\u00fcrich");
    expect(JSON.parse(hostJson.content).forgejo.url).toBe("https://forgejo.example.org/zürich");
  });

  it("refuses empty Vault values", () => {
    expect(() => renderUserData(inputFor(model, metal, { roleId: "" }))).toThrow(/host aws-metal: the Vault role_id is empty/);
    expect(() => renderUserData(inputFor(model, metal, { wrappedSecretId: "" }))).toThrow(/host aws-metal: the wrapped Vault secret_id is empty/);
  });
});

describe("GitHub App key in user-data (unsafe opt-in)", () => {
  const key = PLANTED_SECRETS.githubAppPrivateKey;

  it("is written 0600 on fireactions hosts only with unsafe.githubAppKeyInUserData", () => {
    const cfg = everythingConfig();
    cfg.unsafe = { githubAppKeyInUserData: true };
    const model = modelFrom(cfg);
    for (const host of model.hosts) {
      const text = renderUserData(inputFor(model, host));
      const doc = readDoc(text);
      const entry = doc.write_files.find((f) => f.path === PATHS.githubAppKey);
      if (host.roles.includes("fireactions")) {
        expect(entry, host.name).toMatchObject({ owner: "root:root", permissions: "0600", content: key });
      } else {
        expect(entry, host.name).toBeUndefined();
        expect(text).not.toContain("PLANTED-APP-KEY");
      }
    }
  });

  it("is refused without the opt-in or on a host without fireactions", () => {
    const model = modelFrom(everythingConfig());
    expect(() => renderUserData(inputFor(model, hostOf(model, "aws-metal"), { githubAppPrivateKey: key })))
      .toThrow(/host aws-metal: the GitHub App key may go into user-data only with unsafe.githubAppKeyInUserData on a fireactions host/);
    const cfg = everythingConfig();
    cfg.unsafe = { githubAppKeyInUserData: true };
    const unsafe = modelFrom(cfg);
    expect(() => renderUserData(inputFor(unsafe, hostOf(unsafe, "aws-cache"), { githubAppPrivateKey: key }))).toThrow(/host aws-cache/);
  });
});

describe("size limits and compression", () => {
  it("knows each cloud's limit; existing machines have none", () => {
    expect(USER_DATA_LIMITS).toEqual({ aws: 16384, hetzner: 32768, azure: 65536, digitalocean: 65536 });
    expect(userDataLimit("existing")).toBeUndefined();
    expect(userDataLimit("aws")).toBe(16384);
  });

  it("counts UTF-8 bytes, and the limit itself still fits", () => {
    expect(userDataSize("é")).toBe(2);
    expect(fitsUserDataLimit("aws", "x".repeat(16384))).toBe(true);
    expect(fitsUserDataLimit("aws", "x".repeat(16385))).toBe(false);
    expect(fitsUserDataLimit("aws", "é".repeat(8193))).toBe(false);
    expect(fitsUserDataLimit("hetzner", "x".repeat(16385))).toBe(true);
    expect(fitsUserDataLimit("existing", "x".repeat(10_000_000))).toBe(true);
  });

  /** Many pools with wordy labels: compressible, and about 20 KiB as plain pools.json. */
  function bigPoolsConfig(): Record<string, any> {
    const cfg = everythingConfig();
    const names = Array.from({ length: 40 }, (_, i) => `pool-${String(i).padStart(2, "0")}`);
    cfg.pools = Object.fromEntries(names.map((n) => [n, { size: "small", maxRunners: 1, labels: ["self-hosted", "fireactions", "linux", "x64", n] }]));
    cfg.hosts = {
      "aws-big": { provider: "aws", instanceType: "c7i.metal-48xl", roles: ["fireactions"], pools: names },
      "az-big": { provider: "azure", size: "Standard_D64ds_v5", roles: ["fireactions"], pools: names },
    };
    return cfg;
  }

  it("compresses pools.json only when the plain document is over the limit, and it decodes to the same bytes", () => {
    const model = modelFrom(bigPoolsConfig());
    const aws = inputFor(model, hostOf(model, "aws-big"));
    const azure = inputFor(model, hostOf(model, "az-big"));
    expect(aws.poolsJson).toBe(azure.poolsJson);
    expect(userDataSize(aws.poolsJson)).toBeGreaterThan(16384);

    // Azure (64 KiB): the same pools stay plain.
    const plain = renderUserData(azure);
    expect(userDataSize(plain)).toBeGreaterThan(USER_DATA_LIMITS.aws);
    expect(plain).not.toContain("gz+b64");

    // AWS (16 KiB): pools.json is compressed, nothing else, and the document fits.
    const packed = renderUserData(aws);
    expect(userDataSize(packed)).toBeLessThanOrEqual(USER_DATA_LIMITS.aws);
    const doc = readDoc(packed);
    expect(doc.write_files.filter((f) => f.encoding).map((f) => [f.path, f.encoding])).toEqual([[PATHS.poolsJson, "gz+b64"]]);
    const pools = fileAt(doc, PATHS.poolsJson);
    expect(pools).toMatchObject({ owner: "root:root", permissions: "0644" });
    expect(contentOf(pools)).toBe(aws.poolsJson);
    // Everything else is as in the plain document.
    const plainDoc = readDoc(plain);
    for (const p of [PATHS.hostJson, PATHS.roleId, PATHS.wrappedSecretId]) {
      expect(fileAt(doc, p)).toEqual(p === PATHS.hostJson ? { ...fileAt(plainDoc, p), content: fileAt(doc, p).content } : fileAt(plainDoc, p));
    }
    expect(JSON.parse(fileAt(doc, PATHS.hostJson).content).provider).toBe("aws");
    expect(renderUserData(aws)).toBe(packed);
  });

  it("pins the gzip header so compressed output is the same on every platform", () => {
    const gz = Buffer.from(gzipBase64("hello\n"), "base64");
    expect(gz.readUInt32LE(4)).toBe(0); // no mtime
    expect(gz[9]).toBe(255); // OS: unknown
    expect(gunzipSync(gz).toString()).toBe("hello\n");
  });

  it("fails naming the host, cloud, size and limit when even compression does not help", () => {
    const model = modelFrom(everythingConfig());
    // Random base64 hardly compresses: 24 KiB of it is over AWS's 16 KiB, compressed or not.
    const noise = randomBytes(18 * 1024).toString("base64");
    const input = inputFor(model, hostOf(model, "aws-metal"), { poolsJson: noise });
    expect(() => renderUserData(input)).toThrow(/^user-data for host aws-metal is \d+ bytes, over the aws limit of 16384 bytes even compressed$/);
    // Hetzner allows 32 KiB: the same content fits there, plain.
    const hz = renderUserData(inputFor(model, hostOf(model, "hz-forgejo"), { poolsJson: noise }));
    expect(hz).not.toContain("gz+b64");
    // Existing machines: no cloud limit, still rendered (plan --out, manual bootstrap).
    const huge = randomBytes(96 * 1024).toString("base64");
    const existing = renderUserData(inputFor(model, hostOf(model, "onprem"), { poolsJson: huge }));
    expect(existing).toContain(huge.slice(0, 64));
    expect(existing).not.toContain("gz+b64");
    expect(() => renderUserData(inputFor(model, hostOf(model, "do-fa"), { poolsJson: huge }))).toThrow(/host do-fa is \d+ bytes, over the digitalocean limit of 65536 bytes/);
  });
});

// ---------------------------------------------------------------------------------------------
// cloud-init itself

describe("cloud-init schema accepts every user-data", () => {
  it("has cloud-init installed (Debian package cloud-init)", async () => {
    const result = await run("cloud-init", ["--version"]).catch((err) => ({ stdout: "", stderr: String(err) }));
    expect(`${result.stdout}${result.stderr}`, "install the Debian package cloud-init").toMatch(/cloud-init \d+\./);
  });

  it("rejects a bad document (the check can fail)", async () => {
    const dir = tmpDir("rf-ci-bad-");
    const file = path.join(dir, "bad.yaml");
    fs.writeFileSync(file, "#cloud-config\nwrite_files:\n  - path: /x\n    content: a\n    permissions: 0600\nusers:\n  - name: a\n    lock-passwd: true\n");
    const [failure] = await schemaFailures([file]);
    expect(failure?.code).not.toBe(0);
    expect(failure?.output).toMatch(/deprecat/i);
  });

  it("for the committed stacks, as written by plan --out", async () => {
    const started = Date.now();
    const files: string[] = [];
    for (const stack of ["dev", "prod"]) {
      const dir = tmpDir(`rf-ci-${stack}-`);
      const result = await runPlan(["--stack", stack, "--out", dir]);
      expect(result.code, result.stderr).toBe(0);
      const { config } = parseStackFile(fs.readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8"), stack);
      const hosts = Object.keys(JSON.parse(config[`${PROJECT}:hosts`])).sort();
      expect(fs.readdirSync(path.join(dir, "hosts")).sort()).toEqual(hosts);
      for (const host of hosts) {
        const file = path.join(dir, "hosts", host, "user-data.yaml");
        expect(fs.existsSync(file), file).toBe(true);
        const doc = readDoc(fs.readFileSync(file, "utf8"));
        expect(JSON.parse(contentOf(fileAt(doc, PATHS.hostJson))).name).toBe(host);
        files.push(file);
      }
    }
    expect(await schemaFailures(files)).toEqual([]);
    console.log(`plan --out for dev+prod and cloud-init schema on ${files.length} files: ${Date.now() - started} ms`);
  }, PLAN_TIMEOUT);

  it("for generated fleets: every provider, role and preset, gzip, the unsafe key, a YAML-1.1-looking user name", async () => {
    const started = Date.now();
    const dir = tmpDir("rf-ci-gen-");
    const files: string[] = [];
    const write = (name: string, text: string) => {
      const file = path.join(dir, `${name}.yaml`);
      fs.writeFileSync(file, text);
      files.push(file);
    };
    const model = modelFrom(everythingConfig());
    for (const host of model.hosts) write(host.name, renderUserData(inputFor(model, host)));

    const unsafeCfg = everythingConfig();
    unsafeCfg.unsafe = { githubAppKeyInUserData: true };
    unsafeCfg.deploy = { sshUser: "no" };
    const unsafe = modelFrom(unsafeCfg);
    for (const name of ["aws-metal", "onprem"]) write(`unsafe-${name}`, renderUserData(inputFor(unsafe, hostOf(unsafe, name))));

    // A compressed document.
    const big = everythingConfig();
    big.pools = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`p${i}`, { size: "small", maxRunners: 1, labels: [`label-${i}`, "linux", "x64"] }]));
    big.hosts = { "aws-big": { provider: "aws", instanceType: "c7i.metal-48xl", roles: ["fireactions"], pools: Object.keys(big.pools) } };
    const bigModel = modelFrom(big);
    const packed = renderUserData(inputFor(bigModel, bigModel.hosts[0]));
    expect(packed).toContain("gz+b64");
    write("aws-big", packed);

    expect(new Set(model.hosts.map((h) => h.provider))).toEqual(new Set(["aws", "azure", "hetzner", "digitalocean", "existing"]));
    expect(new Set(model.hosts.flatMap((h) => h.roles))).toEqual(new Set(["fireactions", "forgejo-runner", "gitea-runner", "cache"]));
    expect(new Set(model.hosts.flatMap((h) => h.pools).map((p) => model.pools[p].size))).toEqual(new Set(["small", "medium", "large"]));
    expect(new Set(model.hosts.map((h) => h.image))).toEqual(new Set(["nix", "stock"]));

    expect(await schemaFailures(files)).toEqual([]);

    // PyYAML (what cloud-init parses with) reads every document as we do.
    const py = "import json, sys, yaml\nprint(json.dumps([yaml.safe_load(open(f)) for f in sys.argv[1:]]))";
    const viaPyYaml = JSON.parse(execFileSync("python3", ["-c", py, ...files], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 }));
    expect(viaPyYaml).toEqual(files.map((f) => readDoc(fs.readFileSync(f, "utf8"))));
    console.log(`cloud-init schema + PyYAML on ${files.length} generated files: ${Date.now() - started} ms`);
  });
});

// ---------------------------------------------------------------------------------------------
// Secrets never leak

describe("no secret in user-data or plan output", () => {
  const planted = Object.values(PLANTED_SECRETS);
  /** Distinctive parts too, in case a value is split over lines or re-indented. */
  const needles = [...planted, "PLANTED-APP-KEY-5f0c1d", "PLANTED-GITEA-TOKEN-8a41be", "PLANTEDSIGNINGKEY77d2e0", "PLANTED-GITLAB-TOKEN-3c9d71"];
  const leaks = (text: string) => needles.filter((n) => text.includes(n));

  let cfg: Record<string, any>;
  beforeAll(() => {
    cfg = everythingConfig();
  });

  it("appears nowhere: plan --json, the human plan, every file --out writes", async () => {
    const stackFile = writeStackFile(cfg);
    expect(fs.readFileSync(stackFile, "utf8")).toContain("PLANTED-APP-KEY-5f0c1d");
    const dir = tmpDir("rf-secrets-");
    // One run for --json and --out together, one for the human table (plans are slow-ish).
    const json = await runPlan(["--config", stackFile, "--json", "--out", dir]);
    const human = await runPlan(["--config", stackFile]);
    for (const r of [json, human]) expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(json.stdout).resources.length).toBeGreaterThan(0);
    expect(human.stdout).toMatch(/^HOST\s+PROVIDER/m);
    for (const r of [json, human]) {
      expect(leaks(r.stdout)).toEqual([]);
      expect(leaks(r.stderr)).toEqual([]);
    }
    const written = listFiles(dir);
    expect(written.filter((f) => f.endsWith("user-data.yaml"))).toHaveLength(Object.keys(cfg.hosts).length);
    for (const file of written) expect(leaks(fs.readFileSync(file, "utf8")), file).toEqual([]);
    // The wrapped secret_id is the one credential, and it is there.
    const ud = readDoc(fs.readFileSync(path.join(dir, "hosts", "aws-metal", "user-data.yaml"), "utf8"));
    expect(fileAt(ud, PATHS.wrappedSecretId).content.length).toBeGreaterThan(0);
  }, PLAN_TIMEOUT);

  it("with unsafe.githubAppKeyInUserData: the App key only in fireactions hosts' user-data", async () => {
    const unsafeCfg = { ...cfg, unsafe: { githubAppKeyInUserData: true } };
    const dir = tmpDir("rf-secrets-unsafe-");
    const result = await runPlan(["--config", writeStackFile(unsafeCfg), "--out", dir]);
    expect(result.code, result.stderr).toBe(0);
    expect(leaks(result.stdout)).toEqual([]);
    expect(result.stdout + result.stderr).toMatch(/githubAppKeyInUserData/);
    const fireactions = Object.entries(cfg.hosts).filter(([, h]: [string, any]) => h.roles.includes("fireactions")).map(([n]) => n);
    expect(fireactions.length).toBeGreaterThan(2);
    for (const file of listFiles(dir)) {
      const text = fs.readFileSync(file, "utf8");
      const host = path.basename(path.dirname(file));
      if (file.endsWith("user-data.yaml") && fireactions.includes(host)) {
        const entry = fileAt(readDoc(text), PATHS.githubAppKey);
        expect(contentOf(entry), host).toBe(PLANTED_SECRETS.githubAppPrivateKey);
        expect(entry.permissions).toBe("0600");
        // Nothing else of the planted secrets.
        expect(leaks(text).filter((n) => !PLANTED_SECRETS.githubAppPrivateKey.includes(n)), host).toEqual([]);
      } else {
        expect(leaks(text), file).toEqual([]);
      }
    }
  }, PLAN_TIMEOUT);
});
