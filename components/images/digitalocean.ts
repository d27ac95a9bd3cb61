/**
 * DigitalOcean: image file -> private Spaces bucket -> short-lived presigned URL -> custom image,
 * in every region a host of that arch runs in.
 *
 * DigitalOcean fetches a custom image from a URL. The object stays private: a local command
 * presigns a GET URL valid for PRESIGN_SECONDS, once, when the image is created. A public-read
 * object under an unguessable key would need no extra tool, but it would stay readable by anyone
 * holding the URL for as long as it exists (and the hash in the key is not secret: it is in the
 * stack config). The URL is a Pulumi secret; the custom image ignores later URL changes because
 * DigitalOcean reads it only at creation.
 */
import * as command from "@pulumi/command";
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import type { ImageSourceModel } from "../model";
import { COMMAND_ENV, withOnlyEnv } from "../command-env";
import { imageFilePath, imageObjectKey, imageResourceName } from "./source";

/** How long DigitalOcean has to start fetching the image. */
export const PRESIGN_SECONDS = 2 * 3600;

// ---------------------------------------------------------------------------------------------
// Pure parts

/** Droplet region -> the Spaces region nearest to it (not every datacenter hosts Spaces). */
const SPACES_REGION: Record<string, string> = {
  nyc1: "nyc3", nyc2: "nyc3", nyc3: "nyc3",
  sfo1: "sfo3", sfo2: "sfo2", sfo3: "sfo3",
  ams2: "ams3", ams3: "ams3",
  sgp1: "sgp1", lon1: "lon1", fra1: "fra1", tor1: "tor1", blr1: "blr1", syd1: "syd1", atl1: "atl1",
};

export function spacesRegion(dropletRegion: string): string {
  const found = SPACES_REGION[dropletRegion];
  if (!found) throw new Error(`no Spaces region known near DigitalOcean region ${dropletRegion} (components/images/digitalocean.ts)`);
  return found;
}

/** Formats and compressions DigitalOcean imports (VDI is never produced by nixpkgs here). */
export function checkDigitalOceanImage(image: Pick<ImageSourceModel, "format" | "compression" | "arch">): string | undefined {
  if (!["raw", "qcow2", "vhdx", "vmdk"].includes(image.format)) return `DigitalOcean cannot import ${image.format} images (raw, qcow2, vhdx, vmdk)`;
  if (image.compression && !["gzip", "bzip2"].includes(image.compression)) return `DigitalOcean decompresses only gzip and bzip2`;
  if (image.arch !== "x86_64") return "DigitalOcean droplets are x86_64 only";
  return undefined;
}

/**
 * What the presign must not inherit from the deploy machine: botocore's environment provider
 * takes AWS_SESSION_TOKEN or AWS_SECURITY_TOKEN along with the key pair (an OIDC session sets
 * them), and would sign the Spaces URL with it; AWS_CREDENTIAL_EXPIRATION would make the keys
 * "refreshable"; a profile or config file could bring other settings. The Spaces keys are the
 * only credentials, and no AWS config file is read.
 */
export const PRESIGN_UNSET_ENV = [
  "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CREDENTIAL_EXPIRATION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
  "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
  "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
  "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
] as const;

/**
 * Presigns a GET for the object with the AWS CLI against the Spaces endpoint. The Spaces keys
 * come from the environment the provider uses too (SPACES_ACCESS_KEY_ID / SPACES_SECRET_ACCESS_KEY),
 * by name only: no key is on the command text. The CLI runs under `env -u` for every variable
 * of PRESIGN_UNSET_ENV, with /dev/null as its config and credentials files, and a timeout.
 */
export const PRESIGN_SCRIPT = [
  "set -eu",
  'if [ -z "${SPACES_ACCESS_KEY_ID:-}" ] || [ -z "${SPACES_SECRET_ACCESS_KEY:-}" ]; then echo "SPACES_ACCESS_KEY_ID and SPACES_SECRET_ACCESS_KEY must be set to presign the image URL" >&2; exit 1; fi',
  `url=$(env ${PRESIGN_UNSET_ENV.map((v) => `-u ${v}`).join(" ")} \\`,
  '  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_ACCESS_KEY_ID="$SPACES_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$SPACES_SECRET_ACCESS_KEY" \\',
  '  timeout 2m aws s3 presign "s3://$RF_BUCKET/$RF_KEY" --endpoint-url "https://$RF_REGION.digitaloceanspaces.com" --region "$RF_REGION" --expires-in "$RF_EXPIRES")',
  'case "$url" in "https://$RF_REGION.digitaloceanspaces.com/"*) ;; *) echo "aws s3 presign printed no Spaces URL" >&2; exit 1;; esac',
  'case "$url" in *X-Amz-Security-Token*) echo "the presigned URL carries a session token; refusing to hand it to DigitalOcean" >&2; exit 1;; esac',
  'printf "%s" "$url"',
].join("\n");

// ---------------------------------------------------------------------------------------------
// Shared: one private Spaces bucket per Spaces region

export interface DigitalOceanImageStoreArgs {
  /** Every Spaces region an image is stored in (sorted, unique). */
  spacesRegions: string[];
}

export class DigitalOceanImageStore extends pulumi.ComponentResource {
  private readonly buckets = new Map<string, digitalocean.SpacesBucket>();

  constructor(name: string, args: DigitalOceanImageStoreArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:DigitalOceanImageStore", name, {}, opts);
    if (args.spacesRegions.length === 0) throw new Error(`${name}: no region to store images in`);
    for (const region of args.spacesRegions) {
      this.buckets.set(region, new digitalocean.SpacesBucket(`do-images-${region}`, { region, acl: "private" }, { parent: this }));
    }
    this.registerOutputs({});
  }

  bucket(region: string): digitalocean.SpacesBucket {
    const found = this.buckets.get(region);
    if (!found) throw new Error(`no Spaces image bucket in ${region}`);
    return found;
  }
}

// ---------------------------------------------------------------------------------------------
// One image, in every region it is needed

export interface DigitalOceanImageArgs {
  /** The image: store path, hash, file (absent in offline plans), format, compression. */
  image: ImageSourceModel;
  /** The droplet regions hosts of this arch run in (sorted, unique). */
  regions: string[];
  /** The shared Spaces buckets. */
  store: DigitalOceanImageStore;
}

export class DigitalOceanImage extends pulumi.ComponentResource {
  /** Custom image id by droplet region. */
  readonly imageIds: Record<string, pulumi.Output<string>> = {};

  constructor(name: string, args: DigitalOceanImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:images:DigitalOceanImage", name, {}, opts);
    const { image, store } = args;
    if (image.cloud !== "digitalocean") throw new Error(`${name}: a ${image.cloud} image given to DigitalOceanImage`);
    const problem = checkDigitalOceanImage(image);
    if (problem) throw new Error(`images.digitalocean.${image.arch}: ${problem}`);
    const file = imageFilePath(image);
    const key = imageObjectKey(image);

    // One object (and one presigned URL) per Spaces region, shared by the droplet regions near it.
    const urls = new Map<string, pulumi.Output<string>>();
    for (const spaces of [...new Set(args.regions.map(spacesRegion))].sort()) {
      const id = imageResourceName(image, spaces);
      const bucket = store.bucket(spaces);
      const object = new digitalocean.SpacesBucketObject(id, {
        region: spaces,
        bucket: bucket.id, // a Spaces bucket's id is its name
        key,
        acl: "private",
        // A path the provider reads at upload time; offline plans upload nothing.
        ...(file ? { source: file } : {}),
        contentType: "application/octet-stream",
      }, { parent: this });
      const presign = new command.local.Command(id, {
        create: withOnlyEnv(COMMAND_ENV.spaces, PRESIGN_SCRIPT),
        environment: { RF_BUCKET: bucket.id, RF_KEY: object.key, RF_REGION: spaces, RF_EXPIRES: String(PRESIGN_SECONDS) },
        logging: "none",
        triggers: [image.hash],
        addPreviousOutputInEnv: false,
      }, { parent: this, additionalSecretOutputs: ["stdout"], customTimeouts: { create: "5m" } });
      urls.set(spaces, pulumi.secret(presign.stdout.apply((s) => (s ?? "").trim())));
    }

    for (const region of args.regions) {
      const custom = new digitalocean.CustomImage(imageResourceName(image, region), {
        name: `runner-fleet-${image.arch}-${image.hash}`,
        url: urls.get(spacesRegion(region))!,
        regions: [region],
        // The API's enum has no NixOS.
        distribution: "Unknown",
        description: `runner-fleet NixOS ${image.arch} image ${image.hash}`,
      }, { parent: this, ignoreChanges: ["url"] });
      this.imageIds[region] = custom.id;
    }
    this.registerOutputs({ imageIds: this.imageIds });
  }
}
