// The registry mirror's rendering (#23): nix/pkgs/runner-fleet-registry-mirror.py renders one
// distribution config per upstream and the runner VMs' containerd hosts.toml, BuildKit
// buildkitd.toml and Docker daemon.json; render-fireactions-config puts the latter into every
// pool's MMDS metadata; nix/lib/nftables-rules.nix opens exactly the mirror ports. TOML is parsed
// with Python's tomllib (TOML 1.0), the guard with Debian's `nft -c`. The real registries, pulls
// and cache are in test/registry-mirror-pull.test.ts. Needs python3 (3.11+), nft, nix-instantiate.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(__dirname, "..");
const helper = join(root, "nix", "pkgs", "runner-fleet-registry-mirror.py");
const renderer = join(root, "nix", "pkgs", "render-fireactions-config.py");
const rulesNix = join(root, "nix", "lib", "nftables-rules.nix");
const vmNetNix = join(root, "nix", "lib", "vm-network.nix");
let scratch = "";

beforeAll(() => { scratch = mkdtempSync(join(tmpdir(), "registry-mirror-")); });
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const UPSTREAMS = {
  "docker.io": { url: "https://registry-1.docker.io", port: 5001 },
  "ghcr.io": { url: "https://ghcr.io", port: 5002 },
  "quay.io": { url: "https://quay.io", port: 5003 },
};

function mirrorConfig(extra: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(scratch, "cfg-"));
  const cfg = { listen: "10.200.0.1", storageDir: join(dir, "storage"), credentialsDir: join(dir, "creds"), upstreams: UPSTREAMS, ...extra };
  writeFileSync(join(dir, "mirror.json"), JSON.stringify(cfg));
  return { dir, file: join(dir, "mirror.json"), cfg };
}

function run(config: string, ...args: string[]) {
  const r = spawnSync("python3", [helper, "--config", config, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** TOML parsed by Python's tomllib. */
function toml(text: string): any {
  return JSON.parse(execFileSync("python3", ["-c", "import sys, json, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))"], { input: text, encoding: "utf8" }));
}

describe("distribution config per upstream", () => {
  it("proxies one upstream, listens on the gateway at its port, stores under its own directory", () => {
    const { file, cfg } = mirrorConfig();
    for (const [name, up] of Object.entries(UPSTREAMS)) {
      const r = run(file, "registry", name);
      expect(r.stderr).toBe("");
      const reg = JSON.parse(r.stdout);
      expect(reg.proxy).toEqual({ remoteurl: up.url });
      expect(reg.http.addr).toBe(`10.200.0.1:${up.port}`);
      expect(reg.storage.filesystem.rootdirectory).toBe(join(cfg.storageDir, name));
      // The proxy scheduler expires cached content only with delete enabled.
      expect(reg.storage.delete.enabled).toBe(true);
    }
  });

  it("takes every upstream name the stack's config takes, a registry port included", () => {
    // components/config-schema.ts RegistryHost admits `host:port`; the host program must too.
    const named = { "registry.example.com:5000": { url: "https://registry.example.com:5000", port: 5004 } };
    const { file } = mirrorConfig({ upstreams: { ...UPSTREAMS, ...named } });
    const r = run(file, "registry", "registry.example.com:5000");
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout).proxy).toEqual({ remoteurl: "https://registry.example.com:5000" });
  });

  it("puts vault-agent's credentials into the 0600 file only", () => {
    const { dir, file } = mirrorConfig();
    mkdirSync(join(dir, "creds", "ghcr.io"), { recursive: true });
    writeFileSync(join(dir, "creds", "ghcr.io", "username"), "robot\n");
    writeFileSync(join(dir, "creds", "ghcr.io", "password"), "s3cret-token\n");
    const out = join(dir, "run", "ghcr.io.json");
    const r = run(file, "registry", "ghcr.io", "--out", out);
    expect(r.status).toBe(0);
    expect(r.stdout + r.stderr).not.toContain("s3cret");
    expect(JSON.parse(readFileSync(out, "utf8")).proxy).toEqual({ remoteurl: "https://ghcr.io", username: "robot", password: "s3cret-token" });
    expect(statSync(out).mode & 0o777).toBe(0o600);
    // Other upstreams get none.
    expect(JSON.parse(run(file, "registry", "docker.io").stdout).proxy.username).toBeUndefined();
  });

  it("refuses half a credential, with one line and no secret in it", () => {
    const { dir, file } = mirrorConfig();
    mkdirSync(join(dir, "creds", "quay.io"), { recursive: true });
    writeFileSync(join(dir, "creds", "quay.io", "password"), "only-password");
    const r = run(file, "registry", "quay.io");
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain("credentials for quay.io");
    expect(r.stderr).not.toContain("only-password");
  });

  it("an upstream marked credentials: true refuses to start anonymously, in one line", () => {
    const { file } = mirrorConfig({ upstreams: { ...UPSTREAMS, "docker.io": { ...UPSTREAMS["docker.io"], credentials: true } } });
    const r = run(file, "registry", "docker.io", "--out", join(scratch, "never.json"));
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/credentials for docker\.io: .*creds\/docker\.io\/username and .*password are missing \(vault-agent renders them from shared\/registry-mirror\/docker\.io\)/);
    // The others, without the mark, still start without a login.
    expect(run(file, "registry", "ghcr.io").status).toBe(0);
    const bad = mirrorConfig({ upstreams: { "docker.io": { ...UPSTREAMS["docker.io"], credentials: "yes" } } });
    expect(run(bad.file, "vm").stderr).toContain("upstreams.docker.io.credentials: must be true or false");
  });

  it("lists every problem of a bad config at once", () => {
    const { file } = mirrorConfig({
      listen: "0.0.0.0:80", storageDir: "rel",
      upstreams: { "docker.io": { url: "https://u:p@x", port: 5001 }, "Bad_Name": { url: "https://x", port: 5001 }, "q.io": { url: "ftp://x", port: 80 } },
    });
    const r = run(file, "vm");
    expect(r.status).toBe(1);
    for (const part of ["listen:", "storageDir:", "upstreams.docker.io.url:", "upstreams.Bad_Name:", "upstreams.docker.io.port: 5001 is already the port of Bad_Name", "upstreams.q.io.url:", "upstreams.q.io.port:"]) {
      expect(r.stderr).toContain(part);
    }
  });
});

describe("the runner VMs' configs", () => {
  const vm = () => JSON.parse(run(mirrorConfig().file, "vm").stdout).files as Record<string, string>;

  it("containerd: one hosts.toml per upstream, the mirror first with pull and resolve, the upstream as fallback", () => {
    const files = vm();
    for (const [name, up] of Object.entries(UPSTREAMS)) {
      const t = toml(files[`/etc/containerd/certs.d/${name}/hosts.toml`]);
      expect(t.server).toBe(name === "docker.io" ? "https://registry-1.docker.io" : `https://${name}`);
      expect(t.host).toEqual({ [`http://10.200.0.1:${up.port}`]: { capabilities: ["pull", "resolve"] } });
    }
  });

  it("BuildKit: each upstream mirrored, each mirror plain http", () => {
    const t = toml(vm()["/etc/buildkit/buildkitd.toml"]);
    for (const [name, up] of Object.entries(UPSTREAMS)) {
      expect(t.registry[name].mirrors).toEqual([`10.200.0.1:${up.port}`]);
      expect(t.registry[`10.200.0.1:${up.port}`].http).toBe(true);
    }
  });

  it("Docker: registry-mirrors for Docker Hub (the only registry dockerd mirrors); absent without docker.io", () => {
    expect(JSON.parse(vm()["/etc/docker/daemon.json"])).toEqual({ "registry-mirrors": ["http://10.200.0.1:5001"] });
    const noHub = JSON.parse(run(mirrorConfig({ upstreams: { "ghcr.io": UPSTREAMS["ghcr.io"] } }).file, "vm").stdout).files;
    expect(noHub["/etc/docker/daemon.json"]).toBeUndefined();
  });

  it("render-fireactions-config puts them into every pool's MMDS metadata", () => {
    const dir = mkdtempSync(join(scratch, "fa-"));
    const meta = join(dir, "vm.json");
    writeFileSync(meta, run(mirrorConfig().file, "vm").stdout);
    const pool = (name: string) => ({
      name, maxRunners: 2, minRunners: 1,
      runner: { name: "runner", image: "ghcr.io/acme/r:1", organization: "acme", labels: ["self-hosted"] },
      firecracker: { vcpuCount: 1, memSizeMib: 1024, kernelArgs: "console=ttyS0" },
    });
    writeFileSync(join(dir, "pools.json"), JSON.stringify([pool("a"), pool("b")]));
    writeFileSync(join(dir, "id"), "1\n");
    writeFileSync(join(dir, "key.pem"), "-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----\n");
    const args = ["--pools", join(dir, "pools.json"), "--app-id-file", join(dir, "id"), "--app-key-file", join(dir, "key.pem"), "--out", "-"];
    const out = JSON.parse(execFileSync("python3", [renderer, ...args, "--vm-metadata", meta], { encoding: "utf8" }));
    for (const p of out.pools) expect(p.firecracker.metadata).toEqual({ runner_fleet: { registry_mirror: JSON.parse(readFileSync(meta, "utf8")) } });
    // Without the flag, no metadata key at all (what ran before #23).
    const plain = JSON.parse(execFileSync("python3", [renderer, ...args], { encoding: "utf8" }));
    for (const p of plain.pools) expect(p.firecracker.metadata).toBeUndefined();
    writeFileSync(meta, "[1]");
    const bad = spawnSync("python3", [renderer, ...args, "--vm-metadata", meta], { encoding: "utf8" });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("--vm-metadata: must be a JSON object");
  });
});

describe("prune: distribution has no size limit", () => {
  it("empties an upstream's cache only when it is over the limit, and only that one", () => {
    const { file, cfg } = mirrorConfig();
    for (const name of ["docker.io", "ghcr.io"]) mkdirSync(join(cfg.storageDir, name, "docker", "registry"), { recursive: true });
    writeFileSync(join(cfg.storageDir, "docker.io", "docker", "registry", "blob"), Buffer.alloc(3 << 20, 1));
    writeFileSync(join(cfg.storageDir, "ghcr.io", "docker", "registry", "blob"), Buffer.alloc(3 << 20, 1));
    // 1 GiB limit: both under it.
    expect(run(file, "over", "docker.io", "--max-gib", "1").status).toBe(3);
    expect(run(file, "prune", "docker.io", "--max-gib", "1").stdout).toContain(": kept");
    // 0 GiB: over.
    expect(run(file, "over", "docker.io", "--max-gib", "0").status).toBe(0);
    expect(run(file, "prune", "docker.io", "--max-gib", "0").stdout).toMatch(/docker\.io: 3 MiB used, limit 0 GiB: emptied/);
    expect(spawnSync("find", [join(cfg.storageDir, "docker.io"), "-type", "f"], { encoding: "utf8" }).stdout).toBe("");
    expect(statSync(join(cfg.storageDir, "ghcr.io", "docker", "registry", "blob")).size).toBe(3 << 20);
    expect(run(file, "prune", "nope.io", "--max-gib", "0").stderr).toContain("nope.io: not an upstream");
  });
});

describe("the guard opens the mirror ports and nothing more (nix/lib/nftables-rules.nix)", () => {
  const guard = (ports: string) => JSON.parse(execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr",
    `import ${rulesNix} { inherit (import ${vmNetNix}) bridge gateway; ${ports} }`], {
    env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" }, encoding: "utf8",
  }));
  const inputChain = (g: any) => (g.tables["runner-fleet-guard"].content as string).split("chain input")[1];

  it("one rule: TCP to the gateway at exactly those ports, before the bridge's drop; none without ports", () => {
    const g = guard("mirrorPorts = [ 5001 5002 ];");
    const lines = inputChain(g).split("\n").map((l) => l.trim()).filter(Boolean);
    const rule = lines.findIndex((l) => l.includes("dport { 5001, 5002 }"));
    expect(lines[rule]).toBe('iifname "fireactions0" ip daddr 10.200.0.1 tcp dport { 5001, 5002 } accept');
    expect(rule).toBeLessThan(lines.indexOf('iifname "fireactions0" drop'));
    expect(inputChain(guard("")).includes("5001")).toBe(false);
    // The whole ruleset parses with Debian's nft.
    const text = Object.entries(g.tables as Record<string, { family: string; content: string }>)
      .map(([n, t]) => `table ${t.family} ${n} {\n${t.content}\n}\n`).join("");
    const f = join(scratch, "guard.nft");
    writeFileSync(f, text);
    const r = spawnSync("nft", ["-c", "-f", f], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });
});

describe("nix/modules/registry-mirror.nix: an upstream with a login waits for vault-agent's files", () => {
  it("its unit wants and follows runner-fleet-secrets and is skipped before bootstrap; the others are as before", async () => {
    const { baseConfig, modelFrom } = await import("./support/fixtures");
    const { buildInventory } = await import("../components/inventory");
    const c = baseConfig();
    c.registryMirror = { credentials: ["docker.io"] };
    const model = modelFrom(c);
    const inventory = join(scratch, "inventory.json");
    writeFileSync(inventory, JSON.stringify(buildInventory(model, { metal: { public: "203.0.113.1", private: null } })));
    const modules = join(root, "test", "support", "nix-modules.nix");
    const expr = `(let t = import ${modules}; in map (d: d.value) (t.defsAt [ "systemd" "services" ] (t.call { file = ${join(root, "nix", "modules", "registry-mirror.nix")}; inventory = t.readInventory ${inventory}; hostName = "metal"; })))`;
    const [units] = JSON.parse(execFileSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr], {
      encoding: "utf8", env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" },
    }));
    const docker = units["registry-mirror-docker-io"];
    expect(docker.wants).toContain("runner-fleet-secrets.service");
    expect(docker.after).toContain("runner-fleet-secrets.service");
    // Started by runner-fleet-secrets too: on first boot bootstrap starts it, which pulls this in.
    expect(docker.wantedBy).toEqual(["multi-user.target", "runner-fleet-secrets.service"]);
    expect(docker.requires).toBeUndefined();
    const secretId = JSON.parse(execFileSync("nix-instantiate", ["--eval", "--json", "--expr", `(import ${join(root, "nix", "lib", "host-paths.nix")}).secretIdFile`], {
      encoding: "utf8", env: { ...process.env, NIX_REMOTE: "dummy://", HOME: scratch, NIX_CONFIG: "" },
    }));
    // The same condition as runner-fleet-secrets' consumers (modules/secrets.nix).
    expect(docker.unitConfig.ConditionPathExists).toBe(secretId);
    const ghcr = units["registry-mirror-ghcr-io"];
    expect(ghcr.wants).not.toContain("runner-fleet-secrets.service");
    expect(ghcr.after).not.toContain("runner-fleet-secrets.service");
    expect(ghcr.unitConfig).toEqual({});
  });
});
