/**
 * Where a Nix-built image comes from, and its content address. Pure apart from reading the
 * file system (a result link, the image directory).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Arch, Cloud, ImageSourceModel } from "../model";

/** Nix store paths: /nix/store/<32 chars of nix base32>-<name>. */
export const NIX_STORE = "/nix/store";
const storePathPattern = (storeDir: string) => new RegExp(`^${storeDir.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}/([0-9a-df-np-sv-z]{32})-[^/]+`);

/** The image formats each cloud can import, and the file extension nixpkgs gives each. */
export const CLOUD_FORMATS: Record<Cloud, ImageSourceModel["format"][]> = {
  aws: ["vhd", "raw"],
  azure: ["vhd"],
  hetzner: ["raw", "qcow2"],
  digitalocean: ["raw", "qcow2", "vhdx", "vmdk"],
};

/**
 * Compressions each cloud's import takes: AWS import-snapshot and Azure disks read the bytes as
 * they are; hcloud-upload-image decompresses bz2, xz and zstd on its temporary server
 * (hcloudimages/client.go assembleCommand); DigitalOcean decompresses gzip and bzip2 itself.
 */
export const CLOUD_COMPRESSIONS: Record<Cloud, NonNullable<ImageSourceModel["compression"]>[]> = {
  aws: [],
  azure: [],
  hetzner: ["bzip2", "xz", "zstd"],
  digitalocean: ["gzip", "bzip2"],
};

const MIB = 1024 * 1024;

/**
 * Azure takes only a fixed-size VHD whose size is a whole number of MiB plus the 512-byte footer.
 * Reads the last 512 bytes (the footer) of the file, nothing else. Returns what is wrong, if anything.
 */
export function checkAzureVhd(file: string): string | undefined {
  const size = fs.statSync(file).size;
  if (size < MIB + 512 || (size - 512) % MIB !== 0) {
    return `${file} is ${size} bytes; Azure needs a fixed VHD of a whole number of MiB plus the 512-byte footer (qemu-img convert -O vpc -o subformat=fixed,force_size)`;
  }
  const footer = Buffer.alloc(512);
  const fd = fs.openSync(file, "r");
  try {
    fs.readSync(fd, footer, 0, 512, size - 512);
  } finally {
    fs.closeSync(fd);
  }
  if (footer.toString("latin1", 0, 8) !== "conectix") return `${file} has no VHD footer (cookie "conectix"); is it a raw image renamed .vhd?`;
  // Disk type at offset 60: 2 fixed, 3 dynamic, 4 differencing.
  const type = footer.readUInt32BE(60);
  if (type !== 2) return `${file} is a ${type === 3 ? "dynamic" : type === 4 ? "differencing" : `type ${type}`} VHD; Azure needs a fixed-size VHD`;
  return undefined;
}

const EXTENSIONS: Array<[RegExp, ImageSourceModel["format"], ImageSourceModel["compression"]?]> = [
  [/\.vhd$/, "vhd"],
  [/\.vhdx$/, "vhdx"],
  [/\.vmdk$/, "vmdk"],
  [/\.qcow2$/, "qcow2"],
  [/\.qcow2\.gz$/, "qcow2", "gzip"],
  [/\.qcow2\.bz2$/, "qcow2", "bzip2"],
  [/\.(raw|img)$/, "raw"],
  [/\.(raw|img)\.gz$/, "raw", "gzip"],
  [/\.(raw|img)\.bz2$/, "raw", "bzip2"],
  [/\.qcow2\.xz$/, "qcow2", "xz"],
  [/\.(raw|img)\.xz$/, "raw", "xz"],
  [/\.qcow2\.zst$/, "qcow2", "zstd"],
  [/\.(raw|img)\.zst$/, "raw", "zstd"],
];

/** The hash of a store path (`storeDir` is /nix/store except in tests with a fake store). */
/** The nixpkgs image variant nix/flake.nix builds for each cloud (packages.<system>.<role>-<variant>). */
export const NIX_VARIANT: Record<Cloud, string> = { aws: "amazon", azure: "azure", hetzner: "raw", digitalocean: "qcow2" };

export function storeHash(storePath: string, storeDir = NIX_STORE): string | undefined {
  return storePathPattern(storeDir).exec(storePath)?.[1];
}

export function formatOf(file: string): { format: ImageSourceModel["format"]; compression?: ImageSourceModel["compression"] } | undefined {
  for (const [pattern, format, compression] of EXTENSIONS) {
    if (pattern.test(file)) {
      return compression ? { format, compression } : { format };
    }
  }
  return undefined;
}

export interface ImageInput {
  path: string;
  file?: string;
}

export type ResolveResult =
  | { ok: true; image: ImageSourceModel; warning?: string }
  | { ok: false; problems: Array<{ key: string; message: string }> };

/**
 * Resolves `images.<cloud>.<arch>`. A result link is followed to its store path; a store path
 * may be given directly (pinning the exact image). When `requireFiles` is false (the offline
 * plan), an image that is not built on this machine is only a warning: its hash is in its path.
 */
export function resolveImageSource(
  cloud: Cloud,
  arch: Arch,
  input: ImageInput,
  opts: { baseDir: string; requireFiles: boolean; storeDir?: string },
): ResolveResult {
  const keyBase = `images.${cloud}.${arch}`;
  const given = path.isAbsolute(input.path) ? input.path : path.resolve(opts.baseDir, input.path);
  let storePath = given;
  let exists = false;
  try {
    storePath = fs.realpathSync(given);
    exists = true;
  } catch {
    exists = false;
  }
  const hash = storeHash(storePath, opts.storeDir);
  if (!hash) {
    return {
      ok: false,
      problems: [{
        key: `${keyBase}.path`,
        message: exists
          ? `${input.path} does not resolve into /nix/store; point it at a nix build result`
          : `${input.path} does not exist; build it first (nix build ./nix#packages.${arch}-linux.<role>-${NIX_VARIANT[cloud]} -o ${input.path}) or give the /nix/store path`,
      }],
    };
  }
  if (!exists) {
    if (opts.requireFiles) {
      return {
        ok: false,
        problems: [{ key: `${keyBase}.path`, message: `${storePath} is not on this machine; build or substitute it before uploading` }],
      };
    }
    return finish(cloud, arch, storePath, hash, input.file, keyBase, `${keyBase}: ${storePath} is not built here; the plan uses the hash in its path`);
  }
  let file = input.file;
  if (!file) {
    const stat = fs.statSync(storePath);
    if (stat.isDirectory()) {
      const candidates = fs.readdirSync(storePath).filter((name) => formatOf(name));
      if (candidates.length !== 1) {
        return {
          ok: false,
          problems: [{
            key: `${keyBase}.file`,
            message: candidates.length === 0
              ? `no image file (.vhd, .raw, .img, .qcow2, optionally .gz/.bz2) in ${storePath}`
              : `several image files in ${storePath} (${candidates.join(", ")}); name one with file`,
          }],
        };
      }
      file = candidates[0];
    } else {
      file = path.basename(storePath);
      storePath = path.dirname(storePath);
    }
  } else if (!fs.existsSync(path.join(storePath, file))) {
    return { ok: false, problems: [{ key: `${keyBase}.file`, message: `${file} does not exist in ${storePath}` }] };
  }
  return finish(cloud, arch, storePath, hash, file, keyBase);
}

function finish(
  cloud: Cloud,
  arch: Arch,
  storePath: string,
  hash: string,
  file: string | undefined,
  keyBase: string,
  warning?: string,
): ResolveResult {
  // Without a file name (offline plan) assume the format nixpkgs builds for the cloud.
  const detected = file ? formatOf(file) : { format: CLOUD_FORMATS[cloud][0] };
  if (!detected) {
    return { ok: false, problems: [{ key: `${keyBase}.file`, message: `cannot tell the image format of ${file}` }] };
  }
  if (!CLOUD_FORMATS[cloud].includes(detected.format)) {
    return {
      ok: false,
      problems: [{ key: `${keyBase}.path`, message: `${detected.format} images cannot be imported into ${cloud} (accepted: ${CLOUD_FORMATS[cloud].join(", ")})` }],
    };
  }
  if (detected.compression && !CLOUD_COMPRESSIONS[cloud].includes(detected.compression)) {
    const accepted = CLOUD_COMPRESSIONS[cloud];
    return {
      ok: false,
      problems: [{
        key: `${keyBase}.path`,
        message: cloud === "azure"
          ? "Azure needs an uncompressed fixed-size VHD"
          : `${cloud} cannot import ${detected.compression}-compressed images (${accepted.length ? `accepted: none or ${accepted.join(", ")}` : "give it uncompressed"})`,
      }],
    };
  }
  // Checked only when the file is here (real runs, or a plan on a machine that built it).
  if (cloud === "azure" && file && fs.existsSync(path.join(storePath, file))) {
    const problem = checkAzureVhd(path.join(storePath, file));
    if (problem) return { ok: false, problems: [{ key: `${keyBase}.path`, message: problem }] };
  }
  const image: ImageSourceModel = { cloud, arch, storePath, hash, format: detected.format };
  if (file) image.file = file;
  if (detected.compression) image.compression = detected.compression;
  return warning ? { ok: true, image, warning } : { ok: true, image };
}

// ---------------------------------------------------------------------------------------------
// Names and paths every cloud's image component shares (pure).

/**
 * The logical name of an image's resources: cloud, arch and content hash, plus the region for
 * per-region copies. A new hash is a new name, so Pulumi creates the new image before it deletes
 * the old one; an unchanged hash is the same name, so nothing is uploaded again.
 */
export function imageResourceName(image: Pick<ImageSourceModel, "cloud" | "arch" | "hash">, region?: string): string {
  return [image.cloud, image.arch, image.hash, ...(region ? [region] : [])].join("-");
}

/** The image file on this machine; undefined in offline plans of images not built here. */
export function imageFilePath(image: ImageSourceModel): string | undefined {
  return image.file ? path.join(image.storePath, image.file) : undefined;
}

const COMPRESSION_SUFFIX = { gzip: ".gz", bzip2: ".bz2", xz: ".xz", zstd: ".zst" } as const;

/**
 * The object key an image is stored under in a bucket: deterministic from arch, hash and format,
 * so an offline plan and a real run name the same object.
 */
export function imageObjectKey(image: ImageSourceModel): string {
  const suffix = image.compression ? COMPRESSION_SUFFIX[image.compression] : "";
  return `runner-fleet/${image.arch}-${image.hash}.${image.format}${suffix}`;
}
