// Data disks (#23), for real on loop devices as root: nix/pkgs/runner-fleet-data-disk.sh with real
// blkid, mkfs.ext4 and mount; nix/pkgs/runner-fleet-thinpool.sh's plan (--print) on a real loop
// device and, where the kernel has device-mapper (dm-thin-pool, dm-crypt), the pool itself with
// real dmsetup and cryptsetup. This container's kernel has no device-mapper (/dev/mapper/control
// is missing), so that part skips with the reason; the plan path always runs. Needs root,
// losetup, blkid, mkfs.ext4, mkfs.ext2, mount, bash.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(__dirname, "..");
const diskScript = join(root, "nix", "pkgs", "runner-fleet-data-disk.sh");
const poolScript = join(root, "nix", "pkgs", "runner-fleet-thinpool.sh");
let scratch = "";
const loops: string[] = [];
const mounts: string[] = [];

const sh = (cmd: string[]) => execFileSync(cmd[0], cmd.slice(1), { encoding: "utf8" });
/** As writeShellApplication runs it: errexit, nounset, pipefail. */
const run = (script: string, args: string[]) => {
  const r = spawnSync("bash", ["-o", "errexit", "-o", "nounset", "-o", "pipefail", script, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};
function loopDevice(sizeMib: number): string {
  const file = join(scratch, `disk-${loops.length}.img`);
  sh(["truncate", "-s", `${sizeMib}M`, file]);
  const dev = sh(["losetup", "--find", "--show", file]).trim();
  loops.push(dev);
  return dev;
}
const fsType = (dev: string) => spawnSync("blkid", ["-p", "-o", "value", "-s", "TYPE", dev], { encoding: "utf8" }).stdout.trim();
function umount(dir: string) {
  spawnSync("umount", [dir]);
  mounts.splice(mounts.indexOf(dir), 1);
}

beforeAll(() => { scratch = mkdtempSync(join(tmpdir(), "data-disks-")); });
afterAll(() => {
  for (const m of [...mounts].reverse()) spawnSync("umount", [m]);
  for (const l of loops) spawnSync("losetup", ["-d", l]);
  rmSync(scratch, { recursive: true, force: true });
});

describe("runner-fleet-data-disk", () => {
  it("formats an empty disk once, mounts it, and never formats it again", () => {
    const dev = loopDevice(64);
    const at = join(scratch, "cache");
    expect(run(diskScript, ["--device", dev, "--mount", at, "--label", "rf-cache", "--print"]).stdout).toContain("would format ext4 (label rf-cache), then mount");
    expect(fsType(dev)).toBe("");
    const first = run(diskScript, ["--device", dev, "--mount", at, "--label", "rf-cache"]);
    expect(first.stderr).toBe("");
    expect(first.status).toBe(0);
    mounts.push(at);
    expect(first.stdout).toContain("empty: formatting ext4, label rf-cache");
    expect(fsType(dev)).toBe("ext4");
    expect(sh(["findmnt", "-n", "-o", "SOURCE", at]).trim()).toBe(dev);
    writeFileSync(join(at, "kept"), "from the first boot");
    // Running again while mounted changes nothing.
    expect(run(diskScript, ["--device", dev, "--mount", at, "--label", "rf-cache"]).stdout).toContain("already mounted");
    // The next boot: mounts what is there, formats nothing.
    umount(at);
    const second = run(diskScript, ["--device", dev, "--mount", at, "--label", "rf-cache"]);
    expect(second.status).toBe(0);
    mounts.push(at);
    expect(second.stdout).not.toContain("formatting");
    expect(readFileSync(join(at, "kept"), "utf8")).toBe("from the first boot");
  });

  it("never touches a disk that has a filesystem, even another one than it would make", () => {
    const dev = loopDevice(32);
    sh(["mkfs.ext2", "-q", "-L", "users", dev]);
    const at = join(scratch, "theirs");
    expect(run(diskScript, ["--device", dev, "--mount", at, "--label", "rf-x", "--print"]).stdout).toContain("would mount (it has ext2)");
    const r = run(diskScript, ["--device", dev, "--mount", at, "--label", "rf-x"]);
    expect(r.status).toBe(0);
    mounts.push(at);
    expect(fsType(dev)).toBe("ext2");
    expect(sh(["blkid", "-p", "-o", "value", "-s", "LABEL", dev]).trim()).toBe("users");
  });

  it("a disk that never appears: one line, exit 1, nothing made", () => {
    const at = join(scratch, "never");
    const r = run(diskScript, ["--device", "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0missing", "--mount", at, "--label", "rf-n", "--wait", "1"]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual(["runner-fleet-data-disk: /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0missing -> " + at + ": no block device after 1s"]);
    expect(existsSync(at)).toBe(false);
  });
});

describe("runner-fleet-thinpool: the plan", () => {
  it("sizes the pool from the disk: metadata 1/256 (at least 2 MiB), data the rest, encrypted with a per-boot key and discards", () => {
    const dev = loopDevice(1024);
    const r = run(poolScript, ["--name", "pool", "--disk", dev, "--state-dir", join(scratch, "containerd"), "--encrypt", "--print"]);
    expect(r.stderr).toBe("");
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe("# pool: 1024 MiB: metadata 4 MiB, data 1020 MiB, encrypted with a key for this boot only, discards on");
    expect(lines[1]).toBe(`cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /dev/urandom --allow-discards ${dev} pool-crypt`);
    expect(lines).toContain("dmsetup create pool-meta --table 0 8192 linear /dev/mapper/pool-crypt 0");
    expect(lines).toContain("dmsetup create pool-data --table 0 2088960 linear /dev/mapper/pool-crypt 8192");
    expect(lines.at(-1)).toBe("dmsetup create pool --table 0 2088960 thin-pool /dev/mapper/pool-meta /dev/mapper/pool-data 128 32768 1 skip_block_zeroing");
    // containerd forgets the snapshots of the pool it loses.
    expect(lines).toContain(`find ${join(scratch, "containerd")} -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +`);
    // --print changed nothing on the disk.
    expect(fsType(dev)).toBe("");
  });

  it("without --encrypt, no dm-crypt; a bigger disk gets proportionally more metadata", () => {
    const dev = loopDevice(4096);
    const lines = run(poolScript, ["--name", "p2", "--disk", dev, "--print"]).stdout.trim().split("\n");
    expect(lines[0]).toBe("# p2: 4096 MiB: metadata 16 MiB, data 4080 MiB");
    expect(lines.some((l) => l.startsWith("cryptsetup"))).toBe(false);
    expect(lines).toContain(`dmsetup create p2-meta --table 0 32768 linear ${dev} 0`);
  });

  it("no disk: sparse files, created only when missing (a pool from before keeps its files)", () => {
    const dir = join(scratch, "devmapper");
    const fresh = run(poolScript, ["--name", "p3", "--dir", dir, "--size-gib", "40", "--print"]).stdout;
    expect(fresh).toContain(`truncate -s 42781900800 ${dir}/data`);
    sh(["mkdir", "-p", dir]);
    writeFileSync(join(dir, "data"), "");
    writeFileSync(join(dir, "metadata"), "");
    const again = run(poolScript, ["--name", "p3", "--dir", dir, "--size-gib", "40", "--print"]).stdout;
    expect(again).not.toContain("truncate");
  });

  it("refuses what it cannot plan, with one line", () => {
    for (const args of [["--name", "x"], ["--name", "x", "--dir", "/d"], ["--name", "x", "--disk", "/d", "--dir", "/e"]]) {
      const r = run(poolScript, args);
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
    expect(run(poolScript, ["--name", "x", "--disk", join(scratch, "nope"), "--print"]).stderr).toContain("is not a block device");
  });
});

const dmReason = (() => {
  if (!existsSync("/dev/mapper/control")) return "the kernel here has no device-mapper (/dev/mapper/control is missing)";
  const targets = spawnSync("dmsetup", ["targets"], { encoding: "utf8" }).stdout ?? "";
  if (!/thin-pool/.test(targets)) return "device-mapper has no thin-pool target here";
  if (!/crypt/.test(targets)) return "device-mapper has no crypt target here";
  return "";
})();

describe.skipIf(dmReason !== "")(`runner-fleet-thinpool for real${dmReason ? ` (skipped: ${dmReason})` : ""}`, () => {
  it("builds the encrypted pool on a loop device; it discards; a second run keeps it", () => {
    const dev = loopDevice(512);
    try {
      const r = run(poolScript, ["--name", "rftest-pool", "--disk", dev, "--encrypt"]);
      expect(r.status).toBe(0);
      expect(sh(["dmsetup", "status", "rftest-pool"])).toContain("thin-pool");
      expect(sh(["dmsetup", "table", "rftest-pool-crypt"])).toContain("allow_discards");
      expect(run(poolScript, ["--name", "rftest-pool", "--disk", dev, "--encrypt"]).stdout).toContain("rftest-pool exists");
    } finally {
      for (const n of ["rftest-pool", "rftest-pool-data", "rftest-pool-meta"]) spawnSync("dmsetup", ["remove", n]);
      spawnSync("cryptsetup", ["close", "rftest-pool-crypt"]);
    }
  });
});
