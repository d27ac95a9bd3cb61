/**
 * The image upload scripts, executed (issue 14 items 6, 12, 13). The cloud CLIs (`az`, `azcopy`,
 * `aws`, `hcloud`, `hcloud-upload-image`) are STAND-INS written here: small sh scripts that
 * record what they were called with and what they saw in their environment, and fail on demand.
 * The clouds cannot run here; the scripts' own logic (which calls, in which order, under which
 * timeouts and environment, and what fails) is what these tests check. `timeout` is real.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { AZURE_UPLOAD_SCRIPT } from "../components/images/azure";
import { PRESIGN_SCRIPT, PRESIGN_UNSET_ENV } from "../components/images/digitalocean";
import { HETZNER_DELETE_SCRIPT, HETZNER_UPLOAD_SCRIPT } from "../components/images/hetzner";

/** Runs a script with stand-in CLIs first on PATH; every call is appended to $OUT/calls. */
function run(script: string, fakes: Record<string, string>, env: Record<string, string> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-img-"));
  fs.mkdirSync(path.join(dir, "bin"));
  for (const [name, body] of Object.entries(fakes)) {
    fs.writeFileSync(path.join(dir, "bin", name), `#!/bin/sh\necho "${name} $*" >> "$OUT/calls"\n${body}\n`, { mode: 0o755 });
  }
  const r = spawnSync("/bin/sh", ["-c", script], {
    encoding: "utf8", timeout: 30_000,
    env: { ...process.env, ...env, PATH: `${path.join(dir, "bin")}:${process.env.PATH}`, OUT: dir },
  });
  const calls = fs.existsSync(path.join(dir, "calls")) ? fs.readFileSync(path.join(dir, "calls"), "utf8").trimEnd().split("\n") : [];
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, calls, dir };
}

describe("Azure upload", () => {
  const env = { RF_RESOURCE_GROUP: "rg", RF_DISK: "disk-1", RF_IMAGE_FILE: "/tmp/img.vhd", RF_TIMEOUT: "60" };
  const az = [
    'case "$2" in',
    '  grant-access) [ -n "${FAKE_NO_SAS:-}" ] && exit 0; echo "https://md-x.blob.core.windows.net/abc?sv=1&sig=SECRET";;',
    '  revoke-access) exit ${FAKE_REVOKE_EXIT:-0};;',
    "esac",
  ].join("\n");
  const azcopy = "exit ${FAKE_COPY_EXIT:-0}";

  it("success: grant, copy, then revoke; revoke is on the success path, not an ignored cleanup", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, azcopy }, env);
    expect(r.code).toBe(0);
    expect(r.calls.map((c) => c.split(" ").slice(0, 3).join(" "))).toEqual(["az disk grant-access", "azcopy copy /tmp/img.vhd", "az disk revoke-access"]);
    expect(r.stdout).not.toContain("sig=");
  });

  it("a failed revoke after the upload fails the step, naming the disk", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, azcopy }, { ...env, FAKE_REVOKE_EXIT: "1" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("az disk revoke-access disk-1 failed after the upload");
  });

  it("an empty SAS stops before azcopy, and access is still revoked", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, azcopy }, { ...env, FAKE_NO_SAS: "1" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("az disk grant-access returned no SAS URL for disk-1");
    expect(r.calls.some((c) => c.startsWith("azcopy"))).toBe(false);
    expect(r.calls.at(-1)).toMatch(/^az disk revoke-access/);
  });

  it("a failed copy revokes access on the way out", () => {
    const r = run(AZURE_UPLOAD_SCRIPT, { az, azcopy }, { ...env, FAKE_COPY_EXIT: "3" });
    expect(r.code).not.toBe(0);
    expect(r.calls.at(-1)).toMatch(/^az disk revoke-access/);
  });

  it("every az call runs under a timeout (a hung az is killed)", () => {
    expect(AZURE_UPLOAD_SCRIPT.match(/timeout \S+ az /g)?.length).toBe(2);
    expect(AZURE_UPLOAD_SCRIPT).toMatch(/timeout "\$RF_TIMEOUT" azcopy/);
  });
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
