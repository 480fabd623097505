import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { MediaType } from "../core/media-types.js";
import type { Descriptor } from "../core/oci.js";
import type { Device } from "../core/manifest.generated.js";
import type { DiskLayer, OvmsManifest } from "../core/manifest.generated.js";
import { parseReference, formatReference } from "../core/reference.js";
import { OvmsError } from "../core/errors.js";
import type { Digest } from "../core/digest.js";
import type { Store } from "../store/store.js";
import type { Artifact } from "./artifact.js";
import { assembleArtifact, type PartBlob } from "./assemble.js";
import { storeDiskLayer } from "./disk-layer.js";
import { encodeRamsnap, readRamsnapHeader, type RamsnapMetadata, type RamsnapWritten } from "./ramsnap.js";

/**
 * SnapshotCapture is what a runtime hands over while the guest is paused for a snapshot:
 * the device state, the guest memory file and the overlay, plus the facts a ramsnap's
 * metadata records. The caller packs them (artifact/snapshot) before the guest resumes.
 */
export interface SnapshotCapture {
  instanceId: string;
  runtime: { name: string; version: string };
  machine: "microvm" | "q35";
  accel: "kvm" | "tcg";
  cpuModel: string;
  memoryBytes: number;
  vcpus: number;
  cmdline: string;
  devices: Pick<Device, "type" | "name" | "size">[];
  /** The instance's NIC, when it had one (its device state is part of the snapshot). */
  network?: { mac: string };
  deviceState: Buffer;
  memoryFile: string;
  /** The instance's overlay (qcow2 over the artifact's top disk layer), if it has disks. */
  overlay?: string;
  artifact: { reference: string; digest: Digest };
}

/** SnapshotResult is the snapshot artifact written to the store (rfc §5.8). */
export interface SnapshotResult {
  reference: string;
  descriptor: Descriptor;
  ramsnap: {
    digest: Digest;
    size: number;
    metadata: RamsnapMetadata;
    /** Memory blocks (and their uncompressed bytes) this blob stores rather than refers to. */
    stored: { blocks: number; bytes: number };
    /** The earlier generations' blobs it refers to (rfc §5.9). */
    parents: { ref: string; size: number }[];
  };
  manifest: OvmsManifest;
  /** Bytes of the blobs this snapshot wrote: the ramsnap and the overlay's diff layer. */
  bytesWritten: number;
}

/**
 * packSnapshot turns what a runtime captured from a paused instance into a snapshot artifact:
 * the source's layers, the overlay as a new qcow2 diff (backed by the top layer's digest),
 * and the ramsnap blob; `subject` points at the source manifest. Memory and disk must be of the
 * same moment: the runtime hands over copies made while the guest was paused, or the live files
 * while it still is.
 */
export async function packSnapshot(
  store: Store,
  source: Artifact,
  c: SnapshotCapture,
  tag: string,
): Promise<SnapshotResult> {
  const ref = parseReference(tag);
  if (!ref.tag || ref.digest)
    throw new OvmsError("INVALID_REFERENCE", `${tag}: a snapshot needs a tag reference`);
  const m = source.ovms;
  // The source's layers are kept as they are; the overlay and the ramsnap are new.
  const blobs = new Map<string, PartBlob>(
    source.oci.layers.filter((l) => l.mediaType !== MediaType.RamSnapshot).map((l) => [l.digest, l]),
  );
  // The source's RAM snapshot blobs (its own and its parents'): the new one refers to their blocks.
  const ramLayers = new Map(
    source.oci.layers
      .filter((l) => l.mediaType === MediaType.RamSnapshot)
      .map((l) => [l.digest as string, l]),
  );
  const parent = m.ramSnapshot
    ? {
        digest: m.ramSnapshot.ref,
        header: await readRamsnapHeader(store.blobPath(m.ramSnapshot.ref as Digest)),
      }
    : undefined;
  const diskLayers: DiskLayer[] = [...(m.diskLayers ?? [])];
  const scratch = await mkdtemp(join(store.workDir, "ingest", "snap-"));
  let bytesWritten = 0;
  try {
    if (c.overlay && diskLayers.length) {
      const parent = diskLayers[diskLayers.length - 1];
      const { blob, layer } = await storeDiskLayer(store, c.overlay, "qcow2", scratch, parent);
      blobs.set(blob.digest, { size: blob.size, title: "snapshot-overlay.qcow2" });
      bytesWritten += blob.size;
      diskLayers.push(layer);
    }
    const out: RamsnapWritten = {};
    const ram = await store.ingest(
      Readable.from(
        encodeRamsnap(
          {
            metadata: {
              runtime: c.runtime,
              machine: c.machine,
              memoryBytes: c.memoryBytes,
              vcpus: c.vcpus,
              cpuModel: c.cpuModel,
              accel: c.accel,
              devices: c.devices.map((d) => ({ type: d.type, name: d.name, size: d.size! })),
              ...(c.network ? { network: { mac: c.network.mac } } : {}),
              diskLayers: diskLayers.map((d) => d.ref),
            },
            deviceState: c.deviceState,
            memoryFile: c.memoryFile,
            layout: 2,
            ...(parent ? { parent } : {}),
          },
          out,
        ),
      ),
    );
    blobs.set(ram.digest, { size: ram.size, title: "ram.ovms-ramsnap.lz4" });
    bytesWritten += ram.size;
    const parents = (out.index!.parents ?? []).map((d) => {
      const l = ramLayers.get(d);
      if (!l)
        throw new OvmsError(
          "INTERNAL",
          `snapshot ${tag}: parent RAM snapshot ${d} is not a layer of the source`,
        );
      blobs.set(l.digest, l);
      return { ref: d, size: l.size };
    });
    const manifest: OvmsManifest = {
      ...m,
      version: ref.tag,
      kernel: { ...m.kernel, args: c.cmdline },
      ramSnapshot: {
        ref: ram.digest,
        size: ram.size,
        compression: "lz4",
        preload_hint: true,
        mlock_required: false,
        indexDigest: out.indexDigest!,
        ...(parents.length ? { parents } : {}),
      },
      resources: { memory: c.memoryBytes, vcpus: c.vcpus },
      runtimeHints: { ...(m.runtimeHints ?? {}), machine: c.machine },
      metadata: { ...(m.metadata ?? {}), created: new Date().toISOString().replace(/\.\d{3}Z$/, "Z") },
    };
    if (diskLayers.length) manifest.diskLayers = diskLayers;
    // The snapshot's device state holds a NIC or none, whatever the source declared (rfc §2.4 S7).
    if (c.network) manifest.network = { ...(m.network ?? {}), required: true };
    else delete manifest.network;
    const { descriptor } = await assembleArtifact(store, manifest, {
      what: `snapshot ${tag}`,
      blob: (part) => blobs.get(part.ref)!,
      subject: source.descriptor,
    });
    const reference = formatReference({ ...ref, digest: undefined });
    await store.tag(descriptor, reference);
    return {
      reference,
      descriptor,
      ramsnap: { ...ram, metadata: out.metadata!, stored: out.stored!, parents },
      manifest,
      bytesWritten,
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
