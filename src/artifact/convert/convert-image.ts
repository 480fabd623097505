import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { sha256 } from "../../core/digest.js";
import { OvmsError } from "../../core/errors.js";
import type { OvmsManifest } from "../../core/manifest.generated.js";
import { Annotation, MediaType } from "../../core/media-types.js";
import type { Platform } from "../../core/oci.js";
import type { Store } from "../../store/store.js";
import { assembleArtifact, type PartBlob } from "../assemble.js";
import { storeDiskLayer } from "../disk-layer.js";
import { run } from "../exec.js";
import { bootstrapFromImage } from "./bootstrap.js";
import { buildExt4 } from "./ext4.js";
import { CONTAINER_CMDLINE, guestAssets } from "./guest.js";
import { resolveImage } from "./image.js";
import type { ImageStore } from "./image-source.js";
import { LayerCache } from "./layer-cache.js";
import { RootFs } from "./rootfs.js";
import { artifactIdentity, createdTime, type ConvertOptions, type ConvertResult } from "./options.js";

/** DEFAULT_SIZE_BUFFER is the free space a converted root filesystem gets beyond its content. */
export const DEFAULT_SIZE_BUFFER = 256 << 20;
/** DEFAULT_MAX_SIZE is the largest root filesystem a conversion makes unless told otherwise. */
export const DEFAULT_MAX_SIZE = 64 * 2 ** 30;
/** DEFAULT_PLATFORM is what v0.1 guests are (rfc §3.9). */
export const DEFAULT_PLATFORM: Platform = { os: "linux", architecture: "amd64" };

/** convertCacheDir is where a store keeps unpacked container image layers (shared by conversions). */
export function convertCacheDir(store: Store): string {
  return join(store.workDir, "convert", "layers");
}

/**
 * convertImage turns a container image into a containerMode artifact in `store`, tagged
 * `opts.tag` (rfc §2.5): its layers, unpacked once into the layer cache, are merged into one
 * root filesystem written as an ext4 qcow2 disk layer; the generic kernel and the OVMS-Init
 * initrd boot it; the image's config becomes the bootstrap config; the image's digest and
 * name are recorded as the manifest's base annotations. The same image gives the same digests.
 */
export async function convertImage(
  store: Store,
  src: ImageStore,
  opts: ConvertOptions,
): Promise<ConvertResult> {
  const say = opts.progress ?? (() => {});
  const signal = opts.signal;
  const check = (what: string) => {
    if (signal?.aborted) throw new OvmsError("CANCELLED", `conversion of ${src.name}: cancelled ${what}`);
  };
  const t0 = performance.now();
  const timings: Record<string, number> = {};
  const lap = (k: string, since: number) => (timings[k] = Math.round(performance.now() - since));
  const { name, version, reference } = artifactIdentity(opts);
  const guest = await guestAssets({ kernel: opts.kernel, initrd: opts.initrd });

  let t = performance.now();
  const image = await resolveImage(src, opts.platform ?? DEFAULT_PLATFORM);
  say(`image ${src.name} ${image.descriptor.digest}: ${image.layers.length} layer(s)`);
  const cache = new LayerCache(convertCacheDir(store));
  const layers: NonNullable<ConvertResult["layers"]> = [];
  for (const [i, l] of image.layers.entries()) {
    const lt = performance.now();
    const what = `layer ${i + 1}/${image.layers.length} ${l.descriptor.digest}`;
    check(`before ${what}`);
    if (!cache.has(l.diffId)) say(`${what}: downloading and unpacking ${mib(l.descriptor.size)} MiB`);
    const u = await cache.unpack(src, l, what, signal);
    layers.push({
      digest: l.descriptor.digest,
      diffId: u.diffId,
      cached: u.cached,
      bytes: u.bytes,
      entries: u.entries.length,
    });
    say(
      `${what}: ${u.cached ? "cached" : `downloaded and unpacked ${mib(u.bytes)} MiB in ${secs(lt)} s`} (${u.entries.length} entries)`,
    );
  }
  lap("layersMs", t);

  t = performance.now();
  const time = createdTime(image.config.created);
  const root = new RootFs(time);
  for (const l of image.layers) {
    const doc = JSON.parse(await readFile(join(cache.dir(l.diffId), "entries.json"), "utf8"));
    root.apply(l.diffId, doc.entries);
  }
  const readText = async (p: string) => {
    const n = root.find(p);
    return n?.type === "file" && n.content
      ? readFile(cache.contentPath(n.content.layer, n.content.n), "utf8")
      : undefined;
  };
  const bootstrap = await bootstrapFromImage(image.config, readText);
  lap("mergeMs", t);
  check("before making the root filesystem");

  await mkdir(join(store.workDir, "convert"), { recursive: true });
  const work = await mkdtemp(join(store.workDir, "convert", "work-"));
  try {
    t = performance.now();
    const raw = join(work, "rootfs.raw");
    const disk = await buildExt4(root, cache, work, raw, {
      sizeBuffer: opts.sizeBuffer ?? DEFAULT_SIZE_BUFFER,
      maxSize: opts.maxSize ?? DEFAULT_MAX_SIZE,
      time,
      // From the layers' uncompressed digests: the same filesystem content gives the same
      // UUID whatever compression or manifest encoding the image travelled in.
      uuid: uuidOf(image.layers.map((l) => l.diffId).join(",")),
      progress: say,
      ...(signal ? { signal } : {}),
    });
    const qcow2 = join(work, "rootfs.qcow2");
    await run("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2], {
      timeoutMs: 30 * 60_000,
      ...(signal ? { signal } : {}),
    });
    check("before storing the artifact");
    await rm(raw, { force: true });
    lap("filesystemMs", t);

    t = performance.now();
    const { blob: diskBlob, layer } = await storeDiskLayer(store, qcow2, "qcow2", work);
    say(`disk layer ${diskBlob.digest} (${mib(diskBlob.size)} MiB qcow2, ${mib(disk.sizeBytes)} MiB ext4)`);
    const kernel = await store.ingest(createReadStream(guest.kernel));
    const initrd = await store.ingest(createReadStream(guest.initrd));
    const bootBytes = Buffer.from(JSON.stringify(bootstrap, null, 2) + "\n");
    const boot = await store.putBlob(bootBytes);
    const blobs = new Map<string, PartBlob>([
      ["kernel", { size: kernel.size, title: basename(guest.kernel) }],
      ["initrd", { size: initrd.size, title: "ovms-init.img" }],
      ["diskLayers[0]", { size: diskBlob.size, title: "rootfs.qcow2" }],
      ["bootstrap", { size: boot.size, title: "bootstrap.json" }],
    ]);
    const labels = Object.fromEntries(
      Object.entries(image.config.config?.Labels ?? {}).filter(([, v]) => typeof v === "string"),
    );
    const manifest: OvmsManifest = {
      schemaVersion: 1,
      mediaType: MediaType.OvmsManifest,
      name,
      version,
      kernel: { ref: kernel.digest, size: kernel.size, args: CONTAINER_CMDLINE },
      initrd: { ref: initrd.digest, size: initrd.size },
      diskLayers: [layer],
      bootstrap: { ref: boot.digest, size: boot.size },
      resources: { memory: opts.memory ?? 256 << 20, vcpus: opts.cpus ?? 1 },
      metadata: {
        created: new Date(time * 1000).toISOString().replace(/\.\d{3}Z$/, "Z"),
        description: `container image ${src.name} (${image.descriptor.digest}), converted by ovm convert`,
        ...(Object.keys(labels).length ? { labels } : {}),
        platform: { arch: "x86_64", uefi: false },
      },
      containerMode: true,
    };
    const { descriptor } = await assembleArtifact(store, manifest, {
      what: `conversion of ${src.name}`,
      blob: (part) => blobs.get(part.path)!,
      annotations: { [Annotation.BaseDigest]: image.descriptor.digest, [Annotation.BaseName]: src.name },
    });
    await store.tag(descriptor, reference);
    lap("storeMs", t);
    timings.totalMs = Math.round(performance.now() - t0);
    say(`tagged ${reference} ${descriptor.digest} in ${secs(t0)} s`);
    return {
      reference,
      descriptor,
      manifest,
      source: { kind: "image", name: src.name, digest: image.descriptor.digest },
      bootstrap,
      layers,
      disk,
      timings,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** uuidOf makes a filesystem UUID from a text (an image's diff_ids): the same text, the same UUID. */
export function uuidOf(text: string): string {
  const h = sha256(`ovms-rootfs:${text}`).slice(7, 39).split("");
  h[12] = "4"; // version 4 layout, variant 10xx: a well-formed UUID
  h[16] = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16);
  const s = h.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20, 32)}`;
}

function mib(n: number): string {
  return (n / (1 << 20)).toFixed(1);
}

function secs(since: number): string {
  return ((performance.now() - since) / 1000).toFixed(1);
}
