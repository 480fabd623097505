import { copyFile, mkdtemp, rm, truncate, writeFile, open } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import * as tar from "tar";
import type { Digest } from "../core/digest.js";
import { Annotation, LayerMediaType } from "../core/media-types.js";
import type { Descriptor, ImageManifest } from "../core/oci.js";
import type { Store } from "../store/store.js";
import { encodeRamsnap } from "../artifact/ramsnap.js";
import { packDiskLayer } from "../artifact/disk-layer.js";
import { rebaseUnsafe } from "../artifact/qemu-img.js";

/**
 * Artifacts that break a rule on purpose. `ovm build` refuses to make them (it validates), so
 * they are made by editing a built artifact in place: the config and the OCI manifest are
 * rewritten as asked and the tag moved to the result, with no validation on the way.
 */

/** Editable is what an edit sees: the OCI manifest and the OVMS manifest (config), both plain JSON. */
export interface Editable {
  oci: ImageManifest;
  config: Record<string, any>;
}

/**
 * rewriteArtifact applies `edit` to the artifact tagged `tag` in `store`, writes the new
 * config and manifest and tags the result `tag`. Returns the new manifest's descriptor.
 */
export async function rewriteArtifact(
  store: Store,
  tag: string,
  edit: (a: Editable) => void | Promise<void>,
): Promise<Descriptor> {
  const desc = await store.resolve(tag);
  const oci = await store.readJson<ImageManifest>(desc.digest);
  const config = await store.readJson<Record<string, any>>(oci.config.digest);
  await edit({ oci, config });
  const bytes = Buffer.from(JSON.stringify(config, null, 2));
  const put = await store.putBlob(bytes);
  oci.config = { ...oci.config, digest: put.digest, size: put.size };
  const out = await store.putManifest(oci);
  await store.tag(out, tag);
  return out;
}

/** putLayer stores `data` and returns a layer descriptor of `role` for it. */
async function putLayer(
  store: Store,
  data: Readable | Buffer,
  role: "disk" | "ramsnap",
  title: string,
  extra: Record<string, string> = {},
): Promise<Descriptor> {
  const blob = Buffer.isBuffer(data) ? await store.putBlob(data) : await store.ingest(data);
  return {
    mediaType: LayerMediaType[role],
    digest: blob.digest,
    size: blob.size,
    annotations: { [Annotation.Role]: role, [Annotation.Title]: title, ...extra },
  };
}

/**
 * addRamSnapshot gives an artifact a RAM snapshot layer (rfc §5.2), encoded from a small
 * sparse memory file with a few non-zero pages and a made-up device state: enough for a
 * runtime to read its layout and metadata (and for the artifact suite to check them), not to
 * restore. `compression` is written as given (`zstd` makes an artifact a runtime must refuse).
 */
export async function addRamSnapshot(
  store: Store,
  tag: string,
  opts: {
    compression?: "lz4" | "zstd" | "none";
    memoryBytes?: number;
    scratch: string;
    subject?: Descriptor;
  },
): Promise<Descriptor> {
  const memoryBytes = opts.memoryBytes ?? 16 << 20;
  const dir = await mkdtemp(join(opts.scratch, "ramsnap-"));
  try {
    const mem = join(dir, "memory");
    await writeFile(mem, "");
    await truncate(mem, memoryBytes);
    const fh = await open(mem, "r+");
    try {
      for (const at of [0, 4096 * 3, memoryBytes - 4096])
        await fh.write(Buffer.alloc(4096, 0x5a), 0, 4096, at);
    } finally {
      await fh.close();
    }
    return await rewriteArtifact(store, tag, async ({ oci, config }) => {
      const chunks: Buffer[] = [];
      for await (const c of encodeRamsnap({
        metadata: {
          runtime: { name: "qemu", version: "7.2.0" },
          machine: "microvm",
          memoryBytes,
          vcpus: 1,
          cpuModel: "max",
          accel: "tcg",
          devices: config.devices ?? [],
          diskLayers: (config.diskLayers ?? []).map((d: { ref: string }) => d.ref),
        },
        deviceState: Buffer.from("conformance device state\n".repeat(64)),
        memoryFile: mem,
      }))
        chunks.push(c);
      const layer = await putLayer(store, Buffer.concat(chunks), "ramsnap", "ramsnap.lz4");
      oci.layers.push(layer);
      if (opts.subject)
        oci.subject = {
          mediaType: opts.subject.mediaType,
          digest: opts.subject.digest,
          size: opts.subject.size,
        };
      config.ramSnapshot = { ref: layer.digest, size: layer.size, compression: opts.compression ?? "lz4" };
      config.resources = { memory: memoryBytes, vcpus: 1 };
      config.runtimeHints = { ...(config.runtimeHints ?? {}), machine: "microvm" };
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * replaceDiffWithHostBacking swaps the artifact's diff layer (diskLayers[1]) for a copy of
 * `diff` whose qcow2 backing name is the host path `hostPath` instead of the parent's digest
 * (rfc §4.2 forbids it): a runtime must refuse it before its VMM opens anything.
 */
export async function replaceDiffWithHostBacking(
  store: Store,
  tag: string,
  diff: string,
  hostPath: string,
  scratch: string,
): Promise<Descriptor> {
  const dir = await mkdtemp(join(scratch, "diff-"));
  try {
    const file = join(dir, "diff.qcow2");
    await copyFile(diff, file);
    await rebaseUnsafe(file, hostPath, "qcow2");
    const packed = await packDiskLayer(file, "qcow2", dir);
    let layer: Descriptor;
    try {
      layer = await putLayer(store, packed.stream, "disk", "diff.qcow2", { [Annotation.Format]: "qcow2" });
    } finally {
      await packed.cleanup();
    }
    return await rewriteArtifact(store, tag, ({ oci, config }) => {
      const old = config.diskLayers[1].ref as Digest;
      oci.layers = oci.layers.map((l) => (l.digest === old ? layer : l));
      config.diskLayers[1] = { ...config.diskLayers[1], ref: layer.digest };
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * replaceBaseWithTwoEntries swaps the base disk layer for a tar holding the disk and a second
 * file (rfc §4.2: exactly one entry), which a runtime must refuse before extracting anything
 * into place.
 */
export async function replaceBaseWithTwoEntries(
  store: Store,
  tag: string,
  base: string,
  scratch: string,
): Promise<Descriptor> {
  const dir = await mkdtemp(join(scratch, "tar-"));
  try {
    await copyFile(base, join(dir, "disk.qcow2"));
    await writeFile(join(dir, "extra"), "a second entry no disk layer may have\n");
    const stream = tar.c({ cwd: dir, portable: true, mtime: new Date(0), noPax: true }, [
      "disk.qcow2",
      "extra",
    ]);
    const layer = await putLayer(
      store,
      Readable.from(stream as unknown as AsyncIterable<Buffer>),
      "disk",
      "base.qcow2",
      {
        [Annotation.Format]: "qcow2",
      },
    );
    return await rewriteArtifact(store, tag, ({ oci, config }) => {
      const old = config.diskLayers[0].ref as Digest;
      oci.layers = oci.layers.map((l) => (l.digest === old ? layer : l));
      config.diskLayers[0] = { ...config.diskLayers[0], ref: layer.digest };
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
