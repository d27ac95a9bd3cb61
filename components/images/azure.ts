/**
 * Azure: fixed VHD -> managed disk created for upload -> page upload (azure-upload.mjs, the SAS on
 * its stdin) through a short-lived write SAS -> managed image, in every location a host of that arch runs in.
 *
 * Why this route: a VHD must land as a page blob, and azure-native `storage.Blob` makes only
 * block and append blobs. A disk created with `createOption: Upload` needs no storage account at
 * all, and `az disk grant-access` hands out a SAS that `az disk revoke-access` takes back.
 */
import * as compute from "@pulumi/azure-native/compute";
import * as resources from "@pulumi/azure-native/resources";
import * as command from "@pulumi/command";
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import type { Arch, ImageSourceModel } from "../model";
import { COMMAND_ENV, withOnlyEnv } from "../command-env";
import { checkAzureVhd, imageFilePath, imageResourceName } from "./source";

/** Upper bound for one upload (grant, copy, revoke). */
export const AZURE_UPLOAD_TIMEOUT_SECONDS = 3 * 3600;

// ---------------------------------------------------------------------------------------------
// Pure parts

/** Hyper-V generation: nixpkgs' x86_64 Azure image boots legacy BIOS (V1); aarch64 is UEFI only (V2). */
export function hyperVGeneration(arch: Arch): "V1" | "V2" {
  return arch === "aarch64" ? "V2" : "V1";
}

/** Bound for one `az` call (grant-access, revoke-access): az has no timeout of its own. */
export const AZ_CALL_TIMEOUT = "5m";

/**
 * The uploader the script runs (components/images/azure-upload.mjs), relative to the project
 * directory: the engine starts providers there (plugin.go `cmd.Dir = pwd`, the project root) and
 * pulumi-command runs a local command in its provider's directory when `dir` is unset. Relative,
 * so the command's inputs are the same on every machine.
 */
export const AZURE_UPLOADER = "components/images/azure-upload.mjs";

/**
 * The upload script. Every value comes from the environment, so nothing variable (and no SAS) is
 * on the command text Pulumi records. The SAS goes from az's stdout into a shell variable of the
 * pipe's left side (never exported) and from there, with the builtin printf, into the uploader's
 * standard input: it is never an argument or in an environment, so `ps` and /proc show it to
 * nobody. An empty one fails. The key is `accessSAS` in the aaz-generated command (its serialized
 * name) and `accessSas` in older az releases; JMESPath is case-sensitive, so the query takes either.
 * sh has no pipefail: a failed grant leaves a mark in the temporary directory that fails the script
 * after the pipe (the uploader, given no SAS, has sent nothing).
 * On success access is revoked and a failed revoke fails the upload (the disk would stay in
 * ActiveUpload and the image step would fail confusingly); on failure the revoke is best effort.
 * Every az call and the upload run under a timeout.
 */
export const AZURE_UPLOAD_SCRIPT = [
  "set -eu",
  `uploader=${AZURE_UPLOADER}`,
  '[ -f "$uploader" ] || { echo "$uploader: not found: the upload runs in the project directory" >&2; exit 1; }',
  'work=$(mktemp -d)',
  `revoke() { timeout ${AZ_CALL_TIMEOUT} az disk revoke-access --resource-group "$RF_RESOURCE_GROUP" --name "$RF_DISK" >/dev/null; }`,
  'granted=no',
  'cleanup() { if [ "$granted" = yes ]; then revoke 2>/dev/null || echo "warning: az disk revoke-access $RF_DISK failed; revoke it by hand" >&2; fi; rm -rf "$work"; }',
  "trap cleanup EXIT",
  'granted=yes',
  "rc=0",
  "{",
  `  if sas=$(timeout ${AZ_CALL_TIMEOUT} az disk grant-access --resource-group "$RF_RESOURCE_GROUP" --name "$RF_DISK" --access-level Write --duration-in-seconds "$RF_TIMEOUT" --query "accessSAS || accessSas" --output tsv); then`,
  '    if [ -n "$sas" ]; then printf \'%s\\n\' "$sas"; else echo "az disk grant-access returned no SAS URL for $RF_DISK" >&2; : > "$work/grant-failed"; fi',
  '  else echo "az disk grant-access for $RF_DISK failed (exit $?)" >&2; : > "$work/grant-failed"; fi',
  '} | timeout "$RF_TIMEOUT" node "$uploader" "$RF_IMAGE_FILE" || rc=$?',
  '[ ! -e "$work/grant-failed" ] || exit 1',
  '[ "$rc" = 0 ] || exit "$rc"',
  'granted=no',
  'revoke || { echo "az disk revoke-access $RF_DISK failed after the upload: the disk stays in ActiveUpload" >&2; exit 1; }',
  'echo "uploaded $RF_IMAGE_FILE to disk $RF_DISK"',
].join("\n");

/** The resource group holding a location's images. */
export function azureGroupName(stack: string, location: string): string {
  return `runner-fleet-${stack}-images-${location}`;
}

/** Names inside a location's image resource group (content-addressed, so never reused for other bytes). */
export function azureNames(image: Pick<ImageSourceModel, "arch" | "hash">): { disk: string; image: string } {
  return { disk: `rf-${image.arch}-${image.hash}-upload`, image: `rf-${image.arch}-${image.hash}` };
}

// ---------------------------------------------------------------------------------------------
// Shared: one resource group per location for every image

export interface AzureImageStoreArgs {
  /** Every location some Azure image goes to (sorted, unique). */
  locations: string[];
  /** Stack name: part of the resource group names, unique per subscription. */
  stack: string;
}

export class AzureImageStore extends pulumi.ComponentResource {
  private readonly groups = new Map<string, { group: resources.ResourceGroup; name: string }>();

  constructor(name: string, args: AzureImageStoreArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:AzureImageStore", name, {}, opts);
    if (args.locations.length === 0) throw new Error(`${name}: no location to store images in`);
    for (const location of args.locations) {
      const groupName = azureGroupName(args.stack, location);
      const group = new resources.ResourceGroup(`azure-images-${location}`, {
        resourceGroupName: groupName,
        location,
        tags: { "runner-fleet": "images" },
      }, { parent: this });
      this.groups.set(location, { group, name: groupName });
    }
    this.registerOutputs({});
  }

  /** A location's resource group, and its name (known before it exists). */
  group(location: string): { group: resources.ResourceGroup; name: string } {
    const found = this.groups.get(location);
    if (!found) throw new Error(`no Azure image resource group in ${location}`);
    return found;
  }
}

// ---------------------------------------------------------------------------------------------
// One image, in every location it is needed

export interface AzureImageArgs {
  /** The image: store path, hash, file (absent in offline plans), format. */
  image: ImageSourceModel;
  /** The locations hosts of this arch run in (sorted, unique). */
  locations: string[];
  /** The shared resource groups. */
  store: AzureImageStore;
}

export class AzureImage extends pulumi.ComponentResource {
  /** Managed image id by location. */
  readonly imageIds: Record<string, pulumi.Output<string>> = {};

  constructor(name: string, args: AzureImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:AzureImage", name, {}, opts);
    const { image, store } = args;
    const key = `images.azure.${image.arch}`;
    if (image.cloud !== "azure") throw new Error(`${name}: a ${image.cloud} image given to AzureImage`);
    if (image.format !== "vhd" || image.compression) throw new Error(`${key}: Azure needs an uncompressed fixed-size VHD`);
    const file = imageFilePath(image);
    // Real runs: the disk is created at exactly the file's size, which must be a fixed VHD.
    // Offline plans without the file leave the size to the real run.
    let uploadSizeBytes: number | undefined;
    if (file && fs.existsSync(file)) {
      const problem = checkAzureVhd(file);
      if (problem) throw new Error(`${key}: ${problem}`);
      uploadSizeBytes = fs.statSync(file).size;
    }
    const names = azureNames(image);
    const generation = hyperVGeneration(image.arch);
    const tags = { "runner-fleet": "images", "runner-fleet-hash": image.hash, "runner-fleet-arch": image.arch };

    for (const location of args.locations) {
      const id = imageResourceName(image, location);
      const { group, name: groupName } = store.group(location);
      const disk = new compute.Disk(id, {
        resourceGroupName: groupName,
        location,
        diskName: names.disk,
        creationData: { createOption: "Upload", ...(uploadSizeBytes !== undefined ? { uploadSizeBytes } : {}) },
        osType: "Linux",
        hyperVGeneration: generation,
        sku: { name: "Standard_LRS" },
        tags,
      }, { parent: this, dependsOn: [group] });
      const upload = new command.local.Command(id, {
        create: withOnlyEnv(COMMAND_ENV.azure, AZURE_UPLOAD_SCRIPT),
        environment: {
          RF_RESOURCE_GROUP: groupName,
          RF_DISK: names.disk,
          RF_IMAGE_FILE: file ?? `${image.storePath}/<image file: built at real runs>`,
          RF_TIMEOUT: String(AZURE_UPLOAD_TIMEOUT_SECONDS),
        },
        // Output of az could carry the SAS: keep it out of Pulumi's logs.
        logging: "none",
        // An upload happens once, at create (a new image is a new disk and a new command). A
        // changed script or environment on an existing one runs this no-op: a second grant on a
        // disk already made into an image would fail the update.
        update: "true",
        triggers: [image.hash],
        addPreviousOutputInEnv: false,
      }, {
        parent: this,
        dependsOn: [disk],
        customTimeouts: { create: `${AZURE_UPLOAD_TIMEOUT_SECONDS / 60 + 5}m`, update: `${AZURE_UPLOAD_TIMEOUT_SECONDS / 60 + 5}m` },
      });
      const managed = new compute.Image(id, {
        resourceGroupName: groupName,
        location,
        imageName: names.image,
        hyperVGeneration: generation,
        storageProfile: {
          osDisk: { osType: "Linux", osState: "Generalized", managedDisk: { id: disk.id } },
        },
        tags,
      }, { parent: this, dependsOn: [upload] });
      this.imageIds[location] = managed.id;
    }
    this.registerOutputs({ imageIds: this.imageIds });
  }
}
