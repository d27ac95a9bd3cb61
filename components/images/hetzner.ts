/**
 * Hetzner Cloud: there is no image upload API. `hcloud-upload-image` (in nixpkgs) boots a
 * temporary server into rescue, writes the image to its disk, snapshots it and deletes the
 * server. A local command runs it once per content hash and prints the snapshot id; snapshots
 * are project-wide, so one serves every location.
 *
 * HCLOUD_TOKEN comes from the environment the program runs in (the hcloud provider reads the
 * same variable); it is never on the command text.
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { Arch, ImageSourceModel } from "../model";
import { COMMAND_ENV, withOnlyEnv } from "../command-env";
import { imageFilePath, imageResourceName } from "./source";

/** Upper bound for one upload: server create, rescue boot, write, snapshot, cleanup. */
export const HETZNER_UPLOAD_TIMEOUT_SECONDS = 90 * 60;

// ---------------------------------------------------------------------------------------------
// Pure parts

/** hcloud-upload-image's names for arch and compression. */
export function hcloudArch(arch: Arch): "x86" | "arm" {
  return arch === "aarch64" ? "arm" : "x86";
}

/** hcloud-upload-image's --compression values (cmd/write-to-disk.go: bz2, xz, zstd). */
export function hcloudCompression(compression: ImageSourceModel["compression"]): "bz2" | "xz" | "zstd" | "" {
  if (!compression) return "";
  if (compression === "bzip2") return "bz2";
  if (compression === "xz" || compression === "zstd") return compression;
  throw new Error(`hcloud-upload-image cannot decompress ${compression} (use an uncompressed, .bz2, .xz or .zst image)`);
}

/** Bound for one hcloud API call (image list, image delete) and for the cleanup of a failed upload. */
export const HCLOUD_CALL_TIMEOUT = "2m";
export const HCLOUD_CLEANUP_TIMEOUT = "10m";

/** The labels the snapshot carries: how the program finds it again (and only its own stack's). */
export function snapshotSelector(stack: string, image: Pick<ImageSourceModel, "arch" | "hash">): string {
  return `runner-fleet-stack=${stack},runner-fleet-arch=${image.arch},runner-fleet-hash=${image.hash}`;
}

/**
 * Upload unless a snapshot with our labels exists (a run interrupted after the upload must not
 * upload twice), then print the snapshot id on stdout. Every value comes from the environment.
 * Every hcloud call has its own timeout (Pulumi's customTimeouts stop only /bin/sh). A failed
 * upload (killed by its timeout, which skips hcloud-upload-image's own deferred cleanup: it does
 * not catch signals) is followed by `hcloud-upload-image cleanup`, which deletes every temporary
 * server and key it labelled; FleetImages runs Hetzner uploads one at a time for that reason.
 */
export const HETZNER_UPLOAD_SCRIPT = [
  "set -eu",
  `find_snapshot() { timeout ${HCLOUD_CALL_TIMEOUT} hcloud image list --type snapshot --selector "$RF_SELECTOR" --output noheader --output columns=id | head -n 1; }`,
  "id=$(find_snapshot)",
  'if [ -z "$id" ]; then',
  '  status=0',
  '  timeout "$RF_TIMEOUT" hcloud-upload-image upload --image-path "$RF_IMAGE_FILE" --architecture "$RF_ARCH" \\',
  '    ${RF_COMPRESSION:+--compression "$RF_COMPRESSION"} ${RF_FORMAT:+--format "$RF_FORMAT"} \\',
  '    --description "$RF_DESCRIPTION" --labels "$RF_SELECTOR" >&2 || status=$?',
  '  if [ "$status" -ne 0 ]; then',
  `    timeout ${HCLOUD_CLEANUP_TIMEOUT} hcloud-upload-image cleanup >&2 || echo "hcloud-upload-image cleanup failed: delete servers labelled apricote.de/created-by=hcloud-upload-image by hand" >&2`,
  '    echo "upload of $RF_IMAGE_FILE failed (exit $status)" >&2',
  '    exit 1',
  "  fi",
  "  id=$(find_snapshot)",
  "fi",
  'if [ -z "$id" ]; then echo "no snapshot labelled $RF_SELECTOR after the upload" >&2; exit 1; fi',
  'printf "%s" "$id"',
].join("\n");

/** Deleting the resource deletes the snapshot it made (its id is the previous stdout). */
export const HETZNER_DELETE_SCRIPT = `set -eu\nif [ -n "\${PULUMI_COMMAND_STDOUT:-}" ]; then timeout ${HCLOUD_CALL_TIMEOUT} hcloud image delete "$PULUMI_COMMAND_STDOUT"; fi`;

// ---------------------------------------------------------------------------------------------
// Resource wiring

export interface HetznerImageArgs {
  /** The image: store path, hash, file (absent in offline plans), format, compression. */
  image: ImageSourceModel;
  /** Stack name: a snapshot label, so stacks sharing a project never share (or delete) snapshots. */
  stack: string;
  /**
   * Uploads this one must wait for: `hcloud-upload-image cleanup` after a failed upload deletes
   * every temporary server of the tool, so two uploads never run at once.
   */
  after?: pulumi.Resource[];
}

export class HetznerImage extends pulumi.ComponentResource {
  /** The snapshot id servers boot from. */
  readonly imageId: pulumi.Output<string>;
  /** The upload command (the next Hetzner upload waits for it). */
  readonly upload: command.local.Command;

  constructor(name: string, args: HetznerImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:HetznerImage", name, {}, opts);
    const { image } = args;
    const key = `images.hetzner.${image.arch}`;
    if (image.cloud !== "hetzner") throw new Error(`${name}: a ${image.cloud} image given to HetznerImage`);
    if (image.format !== "raw" && image.format !== "qcow2") throw new Error(`${key}: hcloud-upload-image writes raw or qcow2 images, not ${image.format}`);
    let compression: string;
    try {
      compression = hcloudCompression(image.compression);
    } catch (err) {
      throw new Error(`${key}: ${(err as Error).message}`);
    }
    const file = imageFilePath(image);

    const upload = new command.local.Command(imageResourceName(image), {
      create: withOnlyEnv(COMMAND_ENV.hetzner, HETZNER_UPLOAD_SCRIPT),
      // Without an update command, an input change would run the upload script again: it only
      // finds the existing snapshot, so that is harmless.
      delete: withOnlyEnv(COMMAND_ENV.hetzner, HETZNER_DELETE_SCRIPT),
      environment: {
        RF_IMAGE_FILE: file ?? `${image.storePath}/<image file: built at real runs>`,
        RF_ARCH: hcloudArch(image.arch),
        RF_COMPRESSION: compression,
        RF_FORMAT: image.format === "qcow2" ? "qcow2" : "",
        RF_SELECTOR: snapshotSelector(args.stack, image),
        RF_DESCRIPTION: `runner-fleet ${image.arch} ${image.hash}`,
        RF_TIMEOUT: String(HETZNER_UPLOAD_TIMEOUT_SECONDS),
      },
      triggers: [image.hash],
      // Left on: the delete needs the snapshot id, which is the previous stdout (a short id).
      addPreviousOutputInEnv: true,
    }, {
      parent: this,
      dependsOn: args.after ?? [],
      // The labels are shared by old and new copies of the same hash: delete the old one first.
      deleteBeforeReplace: true,
      customTimeouts: { create: `${HETZNER_UPLOAD_TIMEOUT_SECONDS / 60 + 5}m`, update: `${HETZNER_UPLOAD_TIMEOUT_SECONDS / 60 + 5}m` },
    });
    this.upload = upload;
    this.imageId = upload.stdout.apply((s) => (s ?? "").trim());
    this.registerOutputs({ imageId: this.imageId });
  }
}
