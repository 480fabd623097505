import type { Readable } from "node:stream";
import { isDigest, type Digest } from "../../core/digest.js";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import { MediaType } from "../../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest, Platform } from "../../core/oci.js";
import { formatPlatform, selectPlatform } from "../../registry/platform.js";
import type { ImageStore } from "./image-source.js";

/**
 * The OCI image config (image-spec config.md), the members a conversion reads.
 * https://github.com/opencontainers/image-spec/blob/v1.1.0/config.md
 */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  created?: string;
  config?: {
    User?: string;
    ExposedPorts?: Record<string, unknown>;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    StopSignal?: string;
    Labels?: Record<string, string> | null;
  };
  rootfs?: { type?: string; diff_ids?: string[] };
}

/** Compression is how a layer blob is compressed. */
export type Compression = "none" | "gzip" | "zstd";

/** LAYER_TYPES are the layer media types a conversion reads, and how each is compressed. */
export const LAYER_TYPES: Readonly<Record<string, Compression>> = {
  "application/vnd.oci.image.layer.v1.tar": "none",
  "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
  "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
};

const CONFIG_TYPES = [
  "application/vnd.oci.image.config.v1+json",
  "application/vnd.docker.container.image.v1+json",
];

/** ImageLayer is one layer to apply: its blob, how it is compressed, and its uncompressed digest. */
export interface ImageLayer {
  descriptor: Descriptor;
  compression: Compression;
  diffId: Digest;
}

/** ResolvedImage is a container image ready to convert: its manifest for one platform and its config. */
export interface ResolvedImage {
  /** The platform's image manifest (what the artifact records as its base digest). */
  descriptor: Descriptor;
  /** The index or list it was picked from, when there was one. */
  index?: Descriptor;
  manifest: ImageManifest;
  config: ImageConfig;
  layers: ImageLayer[];
}

/** MAX_CONFIG bounds an image config read into memory. */
const MAX_CONFIG = 8 << 20;

/**
 * resolveImage reads an image for `platform` (linux/amd64 in v0.1): an index or Docker list
 * picks the platform's manifest; the config must be an image config of that platform; there
 * must be layers, of types this converter reads, with one diff_id each. Anything else is
 * IMAGE_UNSUPPORTED, saying what was found.
 */
export async function resolveImage(src: ImageStore, platform: Platform): Promise<ResolvedImage> {
  const top = await src.manifest();
  let doc = parse<ImageManifest | ImageIndex>(top.bytes, `${src.name}: manifest`);
  let descriptor = top.descriptor;
  let index: Descriptor | undefined;
  if ("manifests" in doc && Array.isArray(doc.manifests)) {
    index = top.descriptor;
    let pick: Descriptor;
    try {
      pick = selectPlatform(doc as ImageIndex, platform, src.name);
    } catch (e) {
      if (!isOvmsError(e, "NO_MATCHING_PLATFORM")) throw e;
      throw new OvmsError(
        "IMAGE_UNSUPPORTED",
        `${e.message} (OVMS v0.1 runs linux/amd64 guests only, rfc §10)`,
        {
          cause: e,
        },
      );
    }
    const m = await src.manifest(pick);
    doc = parse<ImageManifest>(m.bytes, `${src.name}: manifest ${pick.digest}`);
    descriptor = { ...m.descriptor, platform: pick.platform! };
  }
  const manifest = doc as ImageManifest;
  if (
    manifest.artifactType === MediaType.OvmsManifest ||
    manifest.config?.mediaType === MediaType.OvmsManifest
  )
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${src.name} is already an OVMS artifact: run it (ovm run), there is nothing to convert`,
    );
  if (!manifest.config || !CONFIG_TYPES.includes(manifest.config.mediaType))
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${src.name}: not a container image (config media type ${manifest.config?.mediaType ?? "missing"}, artifactType ${manifest.artifactType ?? "unset"})`,
    );
  if (manifest.config.size > MAX_CONFIG)
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${src.name}: image config of ${manifest.config.size} bytes is too large`,
    );
  const config = parse<ImageConfig>(
    await readAll(await src.blob(manifest.config)),
    `${src.name}: image config`,
  );
  const want = formatPlatform(platform);
  const got = `${config.os ?? "?"}/${config.architecture ?? "?"}`;
  if (config.os !== platform.os || config.architecture !== platform.architecture)
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${src.name}: the image is for ${got}, and OVMS v0.1 runs ${want} guests only (rfc §10)`,
    );
  const layers = manifest.layers ?? [];
  if (layers.length === 0)
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${src.name}: the image has no layers, so no root filesystem to boot`,
    );
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layers.length)
    throw new OvmsError(
      "IMAGE_UNSUPPORTED",
      `${src.name}: the config lists ${diffIds.length} diff_ids for ${layers.length} layers`,
    );
  return {
    descriptor,
    ...(index ? { index } : {}),
    manifest,
    config,
    layers: layers.map((l, i) => {
      const compression = LAYER_TYPES[l.mediaType];
      if (!compression)
        throw new OvmsError(
          "IMAGE_UNSUPPORTED",
          `${src.name}: layer ${i} ${l.digest} has media type ${l.mediaType}, which is not a filesystem layer this converter reads (${Object.keys(LAYER_TYPES).join(", ")})`,
        );
      if (!isDigest(diffIds[i]))
        throw new OvmsError(
          "IMAGE_UNSUPPORTED",
          `${src.name}: diff_id ${i} "${diffIds[i]}" is not a sha256 digest`,
        );
      return { descriptor: l, compression, diffId: diffIds[i] as Digest };
    }),
  };
}

function parse<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString("utf8")) as T;
  } catch (e) {
    throw new OvmsError("IMAGE_UNSUPPORTED", `${what} is not valid JSON: ${(e as Error).message}`);
  }
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of s) {
    n += (c as Buffer).length;
    if (n > MAX_CONFIG)
      throw new OvmsError("IMAGE_UNSUPPORTED", `image config larger than ${MAX_CONFIG} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}
