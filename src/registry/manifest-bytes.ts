import { isDigest, type Digest } from "../core/digest.js";
import { ManifestMediaTypes, MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../core/oci.js";
import { RegistryError } from "./registry-error.js";

/** MAX_MANIFEST is the largest manifest OVMS reads (the distribution spec suggests registries accept at least 4 MiB). */
export const MAX_MANIFEST = 4 << 20;

/** MANIFEST_ACCEPT is the Accept header of manifest reads: every OCI and Docker manifest type. */
export const MANIFEST_ACCEPT = ManifestMediaTypes.join(", ");

/** isManifestMediaType tells whether a descriptor names a manifest or index (not a plain blob). */
export function isManifestMediaType(mediaType: string): boolean {
  return (ManifestMediaTypes as readonly string[]).includes(mediaType);
}

/** describeManifest makes the descriptor of manifest bytes, its mediaType from the body, else the Content-Type. */
export function describeManifest(
  bytes: Buffer,
  digest: Digest,
  contentType: string | undefined,
): { descriptor: Descriptor; manifest: ImageManifest | ImageIndex } {
  let manifest: ImageManifest | ImageIndex;
  try {
    manifest = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new RegistryError(
      "MANIFEST_INVALID",
      `manifest ${digest}: not valid JSON: ${(e as Error).message}`,
    );
  }
  const ct = contentType?.split(";")[0].trim();
  const mediaType =
    manifest.mediaType ??
    (ct && isManifestMediaType(ct)
      ? ct
      : "manifests" in manifest
        ? MediaType.OciIndex
        : MediaType.OciManifest);
  const descriptor: Descriptor = { mediaType, digest, size: bytes.length };
  if (manifest.artifactType) descriptor.artifactType = manifest.artifactType;
  return { descriptor, manifest };
}

/** headerDigest reads a `Docker-Content-Digest` header, when it holds a digest. */
export function headerDigest(h: string | string[] | undefined): Digest | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  return v && isDigest(v) ? v : undefined;
}

/** readAll reads a stream into memory, refusing more than `limit` bytes. */
export async function readAll(stream: AsyncIterable<unknown>, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    const b = typeof c === "string" ? Buffer.from(c) : (c as Buffer);
    n += b.length;
    if (n > limit) throw new RegistryError("MANIFEST_INVALID", `content larger than ${limit} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** readManifestBody reads a manifest response body, refusing more than MAX_MANIFEST bytes. */
export async function readManifestBody(
  body: AsyncIterable<unknown> & { destroy(): void },
  what: string,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += (c as Buffer).length;
    if (n > MAX_MANIFEST) {
      body.destroy();
      throw new RegistryError("MANIFEST_INVALID", `${what}: larger than ${MAX_MANIFEST} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}
