/**
 * scripts/ensure-tools.mjs (npm's pretest): where it cannot install the checkers the tests run,
 * it stops at once with one line naming the exact command.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./support/fixtures";

describe("ensure-tools", () => {
  it("exits 0 when every checker is on PATH", () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, "scripts/ensure-tools.mjs")], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
  });

  it("without apt-get, prints one line with the exact install command and exits 1", () => {
    // A PATH with only node and sh: no cloud-init, nix-instantiate, python3, apt-get or sudo.
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), "rf-bare-path-"));
    fs.symlinkSync(process.execPath, path.join(bin, "node"));
    fs.symlinkSync("/bin/sh", path.join(bin, "sh"));
    const r = spawnSync(path.join(bin, "node"), [path.join(ROOT, "scripts/ensure-tools.mjs")], {
      encoding: "utf8", env: { PATH: bin },
    });
    expect(r.status).toBe(1);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("sudo apt-get install -y --no-install-recommends cloud-init nix-bin python3");
  });
});
