// A small OCI image layout written from scratch (one gzip layer of random bytes, a config and a
// manifest, OCI image-spec 1.0 layout), so the registry tests and the bench need no image from a
// network: `skopeo copy oci:<dir>:<tag> docker://...` pushes it.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

/** A ustar archive holding one regular file. */
function tarOne(name: string, data: Buffer): Buffer {
  const header = Buffer.alloc(512, 0);
  header.write(name, 0, "utf8");
  header.write("0000644\0", 100);
  header.write("0000000\0", 108);
  header.write("0000000\0", 116);
  header.write(data.length.toString(8).padStart(11, "0") + "\0", 124);
  header.write("00000000000\0", 136);
  header.write("        ", 148);
  header.write("0", 156);
  header.write("ustar\0" + "00", 257);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512, 0);
  return Buffer.concat([header, data, pad, Buffer.alloc(1024, 0)]);
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Writes the layout to `dir` with one image tagged `tag`; returns the blob digests (sha256:...). */
export function writeOciImage(dir: string, tag: string, layerBytes: number): { manifest: string; blobs: string[] } {
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  const blob = (b: Buffer) => { const d = sha(b); writeFileSync(join(dir, "blobs", "sha256", d), b); return `sha256:${d}`; };
  const raw = tarOne("payload.bin", randomBytes(layerBytes));
  const gz = gzipSync(raw);
  const layer = blob(gz);
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: [`sha256:${sha(raw)}`] } }));
  const configDigest = blob(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layer, size: gz.length }],
  }));
  const manifestDigest = blob(manifest);
  writeFileSync(join(dir, "index.json"), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: manifestDigest, size: manifest.length, annotations: { "org.opencontainers.image.ref.name": tag } }],
  }));
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  return { manifest: manifestDigest, blobs: [configDigest, layer] };
}
