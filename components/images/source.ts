/**
 * Where a Nix-built image comes from, and its content address. Pure apart from reading the
 * file system (a result link, the image directory).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Arch, Cloud, ImageSourceModel } from "../model";

/** Nix store paths: /nix/store/<32 chars of nix base32>-<name>. */
const STORE_PATH = /^\/nix\/store\/([0-9a-df-np-sv-z]{32})-[^/]+/;

/** The image formats each cloud can import, and the file extension nixpkgs gives each. */
export const CLOUD_FORMATS: Record<Cloud, ImageSourceModel["format"][]> = {
  aws: ["vhd", "raw"],
  azure: ["vhd"],
  hetzner: ["raw", "qcow2"],
  digitalocean: ["raw", "qcow2", "vhdx", "vmdk"],
};

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
  [/\.(raw|img)\.zst$/, "raw", undefined],
];

export function storeHash(storePath: string): string | undefined {
  return STORE_PATH.exec(storePath)?.[1];
}

export function formatOf(file: string): { format: ImageSourceModel["format"]; compression?: ImageSourceModel["compression"] } | undefined {
  for (const [pattern, format, compression] of EXTENSIONS) {
    if (pattern.test(file)) {
      // zstd is not accepted anywhere we upload to; report it as unknown.
      if (/\.zst$/.test(file)) return undefined;
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
  opts: { baseDir: string; requireFiles: boolean },
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
  const hash = storeHash(storePath);
  if (!hash) {
    return {
      ok: false,
      problems: [{
        key: `${keyBase}.path`,
        message: exists
          ? `${input.path} does not resolve into /nix/store; point it at a nix build result`
          : `${input.path} does not exist; build it first (nix build ./nix#image-${cloud}-${arch} -o ${input.path}) or give the /nix/store path`,
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
  if (cloud === "azure" && detected.compression) {
    return { ok: false, problems: [{ key: `${keyBase}.path`, message: "Azure needs an uncompressed fixed-size VHD" }] };
  }
  const image: ImageSourceModel = { cloud, arch, storePath, hash, format: detected.format };
  if (file) image.file = file;
  if (detected.compression) image.compression = detected.compression;
  return warning ? { ok: true, image, warning } : { ok: true, image };
}
