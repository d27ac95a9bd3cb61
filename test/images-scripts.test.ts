/**
 * The image upload scripts, executed (issue 14 items 6, 12, 13; #24 item 13). The cloud CLIs (`az`,
 * `aws`, `hcloud`, `hcloud-upload-image`) are STAND-INS written here: small sh scripts that
 * record what they were called with and what they saw in their environment, and fail on demand.
 * The clouds cannot run here; the scripts' own logic (which calls, in which order, under which
 * timeouts and environment, and what fails) is what these tests check. `timeout` is real, and so
 * is the Azure page upload: its uploader runs against Azurite, the Azure Storage emulator.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { BlobSASPermissions, BlobServiceClient, generateBlobSASQueryParameters, type PageBlobClient, StorageSharedKeyCredential } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMMAND_ENV, withOnlyEnv } from "../components/command-env";
import { AZURE_UPLOAD_SCRIPT, AZURE_UPLOADER } from "../components/images/azure";
import { PRESIGN_SCRIPT, PRESIGN_UNSET_ENV } from "../components/images/digitalocean";
import { HETZNER_DELETE_SCRIPT, HETZNER_UPLOAD_SCRIPT } from "../components/images/hetzner";

const REPO = path.resolve(__dirname, "..");

/** Runs a script with stand-in CLIs first on PATH; every call is appended to $OUT/calls. */
function run(script: string, fakes: Record<string, string>, env: Record<string, string> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-img-"));
  fs.mkdirSync(path.join(dir, "bin"));
  for (const [name, body] of Object.entries(fakes)) {
    fs.writeFileSync(path.join(dir, "bin", name), `#!/bin/sh\necho "${name} $*" >> "$OUT/calls"\n${body}\n`, { mode: 0o755 });
  }
  const r = spawnSync("/bin/sh", ["-c", script], {
    encoding: "utf8", timeout: 30_000, cwd: REPO,
    env: { ...process.env, ...env, PATH: `${path.join(dir, "bin")}:${process.env.PATH}`, OUT: dir },
  });
  const calls = fs.existsSync(path.join(dir, "calls")) ? fs.readFileSync(path.join(dir, "calls"), "utf8").trimEnd().split("\n") : [];
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, calls, dir };
}

/** Every process's argv and environment that contains `needle` (raw or percent-encoded). */
function leaks(needles: string[], seen: { uploader: boolean }): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    for (const what of ["cmdline", "environ"]) {
      let text: string;
      try { text = fs.readFileSync(`/proc/${pid}/${what}`, "latin1"); } catch { continue; }
      if (what === "cmdline" && text.includes("azure-upload.mjs")) seen.uploader = true;
      if (needles.some((n) => text.includes(n))) found.push(`/proc/${pid}/${what}: ${text.replace(/\0/g, " ").slice(0, 200)}`);
    }
  }
  return found;
}

/**
 * Runs the whole upload command (the environment scrub, AZURE_UPLOAD_SCRIPT) as pulumi-command
 * would (sh -c, project directory) with a stand-in az that prints `url`, and extra `fakes`; /proc
 * is scanned for `sig` while it runs.
 */
async function upload(dir: string, file: string, url: string, sig: string, fakes: Record<string, string> = {}) {
  const script = withOnlyEnv(COMMAND_ENV.azure, AZURE_UPLOAD_SCRIPT);
  const out = fs.mkdtempSync(path.join(dir, "run-"));
  fs.mkdirSync(path.join(out, "bin"));
  fs.writeFileSync(path.join(out, "sas"), `${url}\n`, { mode: 0o600 });
  const fake = (name: string, body: string) => fs.writeFileSync(path.join(out, "bin", name), `#!/bin/sh\necho "${name} $*" >> "$RF_TEST_OUT/calls"\n${body}\n`, { mode: 0o755 });
  // az prints the SAS from a file (so no argv or environment of the test holds it).
  fake("az", 'case "$2" in grant-access) cat "$RF_TEST_OUT/sas";; revoke-access) exit 0;; esac');
  // Only the old script calls azcopy: it sleeps, as a real upload takes a while.
  fake("azcopy", "sleep 2");
  for (const [name, body] of Object.entries(fakes)) fake(name, body);
  const child = spawn("/bin/sh", ["-c", script], {
    cwd: REPO,
    env: {
      ...process.env, PATH: `${path.join(out, "bin")}:${process.env.PATH}`, RF_TEST_OUT: out,
      RF_RESOURCE_GROUP: "rg", RF_DISK: "disk-1", RF_IMAGE_FILE: file, RF_TIMEOUT: "120",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c) => { stdout += c; });
  child.stderr.on("data", (c) => { stderr += c; });
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  let running = true;
  void exited.then(() => { running = false; });
  const needles = [sig, encodeURIComponent(sig)];
  const seen = { uploader: false };
  const found: string[] = [];
  let scans = 0;
  while (running) {
    found.push(...leaks(needles, seen));
    scans += 1;
    await new Promise((r) => setTimeout(r, 5));
  }
  const code = await exited;
  const calls = fs.existsSync(path.join(out, "calls")) ? fs.readFileSync(path.join(out, "calls"), "utf8").trimEnd().split("\n") : [];
  return { code, stdout, stderr, calls, found: [...new Set(found)], scans, seen, out };
}

describe("Azure upload: the script's logic", () => {
  const env = { RF_RESOURCE_GROUP: "rg", RF_DISK: "disk-1", RF_IMAGE_FILE: "/tmp/img.vhd", RF_TIMEOUT: "60" };
  // A signature no other process on the machine can hold.
  const sig = crypto.randomBytes(16).toString("hex");
  const sasUrl = `https://md-x.blob.core.windows.net/abc?sv=1&sig=${sig}`;
  const az = [
    'case "$2" in',
    `  grant-access) [ -n "\${FAKE_NO_SAS:-}" ] && exit 0; [ -n "\${FAKE_GRANT_EXIT:-}" ] && exit "$FAKE_GRANT_EXIT"; echo "${sasUrl}";;`,
    '  revoke-access) exit ${FAKE_REVOKE_EXIT:-0};;',
    "esac",
  ].join("\n");
  // Stands in for the uploader (the real one runs against Azurite below): keeps what came on stdin.
  const node = 'cat > "$OUT/stdin"; exit ${FAKE_COPY_EXIT:-0}';
  const stdin = (dir: string) => fs.readFileSync(path.join(dir, "stdin"), "utf8");

  it("success: grant, upload with the SAS on stdin only, then revoke; revoke is on the success path", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, node }, env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    // The two sides of the pipe start together: either may record first.
    const calls = r.calls.map((c) => c.split(" ").slice(0, 3).join(" "));
    expect(calls.slice(0, 2).sort()).toEqual(["az disk grant-access", `node ${AZURE_UPLOADER} /tmp/img.vhd`]);
    expect(calls.slice(2)).toEqual(["az disk revoke-access"]);
    expect(r.calls.join("\n")).not.toContain("sig=");
    expect(stdin(r.dir)).toBe(`${sasUrl}\n`);
    expect(r.stdout).not.toContain("sig=");
  });

  it("while the upload runs, no process's argv or environment holds the SAS (azcopy's argv did)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-img-"));
    // The uploader stands in, slow as a real upload, keeping what it read on stdin.
    const r = await upload(dir, "/tmp/img.vhd", sasUrl, sig, { node: 'cat > "$RF_TEST_OUT/stdin"; sleep 1' });
    expect(r.found).toEqual([]);
    expect(r.seen.uploader).toBe(true); // the scan ran while the uploader did
    expect(r.code).toBe(0);
    expect(fs.readFileSync(path.join(r.out, "stdin"), "utf8")).toBe(`${sasUrl}\n`);
  }, 30_000);

  it("a failed revoke after the upload fails the step, naming the disk", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, node }, { ...env, FAKE_REVOKE_EXIT: "1" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("az disk revoke-access disk-1 failed after the upload");
  });

  it("an empty SAS: the uploader gets nothing, the step fails, and access is still revoked", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, node }, { ...env, FAKE_NO_SAS: "1" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("az disk grant-access returned no SAS URL for disk-1");
    expect(stdin(r.dir)).toBe("");
    expect(r.calls.at(-1)).toMatch(/^az disk revoke-access/);
  });

  it("a failed grant fails the step although sh has no pipefail (the uploader's exit is 0 here)", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, node }, { ...env, FAKE_GRANT_EXIT: "3" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("az disk grant-access for disk-1 failed (exit 3)");
    expect(stdin(r.dir)).toBe("");
    expect(r.stdout).not.toContain("uploaded");
    expect(r.calls.at(-1)).toMatch(/^az disk revoke-access/);
  });

  it("a failed upload fails the step with its exit code and revokes access on the way out", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, node }, { ...env, FAKE_COPY_EXIT: "3" });
    expect(r.code).toBe(3);
    expect(r.calls.at(-1)).toMatch(/^az disk revoke-access/);
  });

  it("every az call and the upload run under a timeout (a hung az is killed)", () => {
    expect(AZURE_UPLOAD_SCRIPT.match(/timeout \S+ az /g)?.length).toBe(2);
    expect(AZURE_UPLOAD_SCRIPT).toMatch(/\| timeout "\$RF_TIMEOUT" node /);
  });
});

/**
 * The real upload command line (the environment scrub, AZURE_UPLOAD_SCRIPT, the uploader with
 * @azure/storage-blob) against Azurite, the Azure Storage emulator, on loopback. Only `az` stands
 * in: it prints a SAS for the emulator's page blob and records the revoke.
 */
describe("Azure upload against Azurite", () => {
  const MiB = 1024 * 1024;
  const SIZE = 8 * MiB + 512; // a fixed VHD: data, then the 512-byte footer
  // Azurite's well-known development account (its README and Azure's emulator docs).
  const ACCOUNT = "devstoreaccount1";
  const KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
  let azurite: ChildProcess | undefined;
  let base = "";
  let dir = "";

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-azurite-"));
    fs.mkdirSync(path.join(dir, "db"));
    const bin = path.join(REPO, "node_modules", ".bin", "azurite-blob");
    // Port 0: a free one, read back from Azurite's start line. No telemetry, nothing but loopback.
    const child = spawn(bin, ["--blobHost", "127.0.0.1", "--blobPort", "0", "--location", path.join(dir, "db"), "--silent", "--disableTelemetry", "--skipApiVersionCheck"], { stdio: ["ignore", "pipe", "pipe"] });
    azurite = child;
    base = await new Promise<string>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`Azurite did not start: ${out}`)), 30_000);
      const seen = (chunk: Buffer) => {
        out += chunk.toString();
        const m = /listens on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      };
      child.stdout!.on("data", seen);
      child.stderr!.on("data", seen);
      child.on("exit", (code) => reject(new Error(`Azurite exited (${code}): ${out}`)));
    });
  }, 60_000);

  afterAll(() => {
    azurite?.kill("SIGTERM");
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const credential = () => new StorageSharedKeyCredential(ACCOUNT, KEY);
  const serviceClient = () => new BlobServiceClient(`${base}/${ACCOUNT}`, credential());

  /** A new page blob of the VHD's size (an upload disk), and a read-write SAS URL for it. */
  async function disk(name: string) {
    const container = serviceClient().getContainerClient(name);
    await container.create();
    const blob = container.getPageBlobClient("disk.vhd");
    await blob.create(SIZE);
    const query = generateBlobSASQueryParameters({
      containerName: name, blobName: "disk.vhd", permissions: BlobSASPermissions.parse("rw"),
      expiresOn: new Date(Date.now() + 3600_000),
    }, credential()).toString();
    return { blob, url: `${blob.url}?${query}`, sig: new URLSearchParams(query).get("sig")! };
  }

  /** The blob's written [start, end) ranges (Get Page Ranges), adjacent ones joined. */
  async function written(blob: PageBlobClient): Promise<Array<[number, number]>> {
    const out: Array<[number, number]> = [];
    for await (const page of blob.listPageRanges(0, SIZE).byPage()) {
      for (const r of page.pageRange ?? []) {
        const last = out.at(-1);
        if (last && last[1] === r.start) last[1] = r.end + 1;
        else out.push([r.start, r.end + 1]);
      }
    }
    return out;
  }

  /** A sparse fixed VHD with data in a few places, some across the 4 MiB read boundary. */
  const DATA: Array<[number, number]> = [
    [0, 4096],
    [1 * MiB + 512, 1 * MiB + 2048],
    [3 * MiB, 3 * MiB + 512], // one page, one non-zero byte in it
    [4 * MiB - 1024, 4 * MiB + 1024], // across two reads: two Put Page requests
    [SIZE - 512, SIZE], // the footer
  ];
  function vhd(): string {
    const file = path.join(dir, `img-${Math.random().toString(36).slice(2)}.vhd`);
    const fd = fs.openSync(file, "w");
    fs.ftruncateSync(fd, SIZE);
    for (const [s, e] of DATA) {
      const bytes = s === 3 * MiB ? Buffer.from([0x5a]) : crypto.randomBytes(e - s).map((b) => b | 1);
      fs.writeSync(fd, bytes, 0, bytes.length, s === 3 * MiB ? s + 7 : s);
    }
    fs.closeSync(fd);
    return file;
  }

  it("uploads the VHD byte for byte, writes no zero range, and no process shows the SAS", async () => {
    const file = vhd();
    const { blob, url, sig } = await disk("upload");
    const r = await upload(dir, file, url, sig);
    expect(r.found).toEqual([]);
    expect(r.seen.uploader).toBe(true); // the scan ran while the uploader did
    expect(r.stderr).not.toMatch(/sig=|https?:\/\//);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`uploaded ${file} to disk disk-1`);
    expect(r.stderr).toContain(`${file}: uploaded: `);
    expect(r.stderr).toContain("in 6 Put Page requests"); // one per data range, the one across 4 MiB split in two
    expect(r.calls.map((c) => c.split(" ").slice(0, 3).join(" "))).toEqual(["az disk grant-access", "az disk revoke-access"]);
    expect((await blob.downloadToBuffer()).equals(fs.readFileSync(file))).toBe(true);
    // Adjacent ranges are one: [4 MiB - 1 KiB, 4 MiB + 1 KiB) was written in two requests.
    expect(await written(blob)).toEqual(DATA);
  }, 60_000);

  it("overwrites data a disk already holds where the file has zeros (an earlier attempt)", async () => {
    const file = vhd();
    const { blob, url, sig } = await disk("rerun");
    await blob.uploadPages(Buffer.alloc(8192, 0xee), 2 * MiB, 8192);
    const r = await upload(dir, file, url, sig);
    expect(r.code).toBe(0);
    expect((await blob.downloadToBuffer()).equals(fs.readFileSync(file))).toBe(true);
  }, 60_000);

  it("a wrong SAS: one line naming the file and no URL, a non-zero exit, and access revoked", async () => {
    const file = vhd();
    const { blob, url } = await disk("badsig");
    const bad = url.replace(/sig=[^&]+/, `sig=${encodeURIComponent(crypto.randomBytes(32).toString("base64"))}`);
    const r = await upload(dir, file, bad, new URLSearchParams(bad.split("?")[1]).get("sig")!);
    expect(r.code).not.toBe(0);
    expect(r.found).toEqual([]);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: reading the disk's size failed: 403 `));
    expect(r.stderr).not.toMatch(/sig=|https?:\/\/|127\.0\.0\.1|devstoreaccount1/);
    expect(r.calls.at(-1)).toMatch(/^az disk revoke-access/);
    expect(await written(blob)).toEqual([]);
  }, 60_000);

  it("a disk of another size is refused before any page is sent", async () => {
    const file = path.join(dir, "small.vhd");
    fs.writeFileSync(file, Buffer.alloc(MiB + 512, 1));
    const { blob, url, sig } = await disk("size");
    const r = await upload(dir, file, url, sig);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trimEnd()).toBe(`${file}: the disk holds ${SIZE} bytes, the file ${MiB + 512}: the disk must be created with exactly the file's size`);
    expect(await written(blob)).toEqual([]);
  }, 60_000);
});

describe("DigitalOcean presign", () => {
  const env = {
    RF_BUCKET: "b", RF_KEY: "runner-fleet/x.qcow2", RF_REGION: "fra1", RF_EXPIRES: "7200",
    SPACES_ACCESS_KEY_ID: "DO00SPACESKEY", SPACES_SECRET_ACCESS_KEY: "spaces-secret",
    // What an OIDC session and a developer's shell leave in the environment.
    AWS_ACCESS_KEY_ID: "ASIAOIDC", AWS_SECRET_ACCESS_KEY: "oidc-secret", AWS_SESSION_TOKEN: "oidc-session",
    AWS_SECURITY_TOKEN: "oidc-session", AWS_PROFILE: "dev", AWS_CREDENTIAL_EXPIRATION: "2030-01-01T00:00:00Z",
  };
  // Records the AWS_* environment botocore would read, then prints a URL like the real presign.
  const aws = 'env | grep "^AWS_" | sort > "$OUT/env"; echo "https://$RF_REGION.digitaloceanspaces.com/$RF_BUCKET/$RF_KEY?X-Amz-Signature=abc${FAKE_TOKEN_IN_URL:+&X-Amz-Security-Token=x}"';

  it("signs with the Spaces keys only: no session token, profile or config file reaches the AWS CLI", () => {
    const r = run(PRESIGN_SCRIPT, { aws }, env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("https://fra1.digitaloceanspaces.com/b/runner-fleet/x.qcow2?X-Amz-Signature=abc");
    const seen = fs.readFileSync(path.join(r.dir, "env"), "utf8");
    expect(seen).toContain("AWS_ACCESS_KEY_ID=DO00SPACESKEY\n");
    expect(seen).toContain("AWS_SECRET_ACCESS_KEY=spaces-secret\n");
    expect(seen).toContain("AWS_CONFIG_FILE=/dev/null\n");
    expect(seen).toContain("AWS_SHARED_CREDENTIALS_FILE=/dev/null\n");
    for (const name of PRESIGN_UNSET_ENV) expect(seen).not.toContain(`${name}=`);
  });

  it("refuses to run without the Spaces keys, and never hands on a URL carrying a session token", () => {
    const missing = run(PRESIGN_SCRIPT, { aws }, { ...env, SPACES_SECRET_ACCESS_KEY: "" });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY must be set");
    const token = run(PRESIGN_SCRIPT, { aws }, { ...env, FAKE_TOKEN_IN_URL: "1" });
    expect(token.code).toBe(1);
    expect(token.stdout).toBe("");
  });
});

describe("Hetzner upload", () => {
  const env = {
    RF_IMAGE_FILE: "/tmp/img.raw.zst", RF_ARCH: "x86", RF_COMPRESSION: "zstd", RF_FORMAT: "", RF_SELECTOR: "runner-fleet-hash=h",
    RF_DESCRIPTION: "d", RF_TIMEOUT: "1",
  };
  // The snapshot appears once an upload has succeeded.
  const hcloud = '[ "$2" = list ] && [ -e "$OUT/uploaded" ] && echo 4711; exit 0';
  const upload = [
    'case "$1" in',
    '  upload) [ -n "${FAKE_HANG:-}" ] && sleep 5; touch "$OUT/uploaded";;',
    '  cleanup) touch "$OUT/cleaned";;',
    "esac",
  ].join("\n");

  it("uploads with the compression hcloud-upload-image names (zstd) and prints the snapshot id", () => {
    const r = run(HETZNER_UPLOAD_SCRIPT, { hcloud, "hcloud-upload-image": upload }, env);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("4711");
    expect(r.calls.find((c) => c.startsWith("hcloud-upload-image upload"))).toContain("--compression zstd");
  });

  it("an upload killed by its timeout is followed by hcloud-upload-image cleanup, and fails", () => {
    const r = run(HETZNER_UPLOAD_SCRIPT, { hcloud, "hcloud-upload-image": upload }, { ...env, FAKE_HANG: "1" });
    expect(r.code).toBe(1);
    expect(fs.existsSync(path.join(r.dir, "cleaned"))).toBe(true);
    expect(r.stderr).toContain("upload of /tmp/img.raw.zst failed (exit 124)");
  });

  it("hcloud image list and delete run under timeouts", () => {
    expect(HETZNER_UPLOAD_SCRIPT).toMatch(/timeout \S+ hcloud image list/);
    const r = run(HETZNER_DELETE_SCRIPT, { hcloud: "exit 0" }, { PULUMI_COMMAND_STDOUT: "4711" });
    expect(r.code).toBe(0);
    expect(r.calls).toEqual(["hcloud image delete 4711"]);
    expect(HETZNER_DELETE_SCRIPT).toMatch(/timeout \S+ hcloud image delete/);
  });
});
