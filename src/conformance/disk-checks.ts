import { isDigest, type Digest } from "../core/digest.js";
import { TAR_BLOCK, paddedSize, parsePaxRecords, readTarHeader } from "../artifact/tar-header.js";
import { Skip, expect, type Check } from "./check.js";
import type { ArtifactContext } from "./artifact-source.js";

/**
 * Disk layers (rfc §4.2), read in place from their blobs: the tar must hold exactly one
 * regular file `disk.<format>`, and the image inside must be what the manifest says — qcow2
 * by its magic, its backing name the parent's digest (and nothing for the base), its backing
 * format the parent's, no external data file. The qcow2 header is read here directly
 * (https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.txt), without
 * qemu-img, so the check needs nothing installed.
 */

/** TarEntry is one entry of a layer tar as its headers describe it. */
interface TarEntry {
  name: string;
  type: string;
  size: number;
  /** data is where the entry's bytes start in the blob. */
  data: number;
  mtime: number;
  uid: number;
  gid: number;
  pax: string[];
}

/** DiskLayerInfo is what a disk layer's blob holds. */
export interface DiskLayerInfo {
  entries: TarEntry[];
  problems: string[];
  image?: Qcow2Header | { format: "raw" };
}

/** Qcow2Header is the part of a qcow2 header §4.2 is about. */
export interface Qcow2Header {
  format: "qcow2";
  version: number;
  virtualSize: number;
  backingFile?: string;
  backingFormat?: string;
  externalDataFile: boolean;
}

const octal = (b: Buffer, at: number, len: number) =>
  parseInt(
    b
      .toString("latin1", at, at + len)
      .replace(/\0.*$/s, "")
      .trim() || "0",
    8,
  );

/** readLayer walks a layer tar's headers and reads the header of the first file's image. */
export async function readLayer(a: ArtifactContext, digest: Digest): Promise<DiskLayerInfo> {
  const size = (await a.blobSize(digest)) ?? 0;
  const entries: TarEntry[] = [];
  const problems: string[] = [];
  let at = 0;
  let pax: Map<string, string> | undefined;
  while (at + TAR_BLOCK <= size) {
    const block = await a.read(digest, at, TAR_BLOCK);
    let h;
    try {
      h = readTarHeader(block);
    } catch (e) {
      problems.push(`at byte ${at}: ${(e as Error).message}`);
      break;
    }
    if (!h) break;
    const data = at + TAR_BLOCK;
    at = data + paddedSize(h.size);
    if (h.type === "x" || h.type === "g") {
      const records = parsePaxRecords(await a.read(digest, data, h.size));
      if (h.type === "x") pax = records;
      continue;
    }
    entries.push({
      name: pax?.get("path") ?? h.name,
      type: h.type,
      size: pax?.has("size") ? Number(pax.get("size")) : h.size,
      data,
      mtime: octal(block, 136, 12),
      uid: octal(block, 108, 8),
      gid: octal(block, 116, 8),
      pax: [...(pax?.keys() ?? [])],
    });
    pax = undefined;
  }
  const info: DiskLayerInfo = { entries, problems };
  const file = entries.find((e) => e.type === "0");
  if (file) {
    const head = await a.read(digest, file.data, Math.min(file.size, 1 << 16));
    info.image =
      head.length >= 4 && head.readUInt32BE(0) === 0x514649fb
        ? await qcow2(a, digest, file.data, head)
        : { format: "raw" };
  }
  return info;
}

async function qcow2(a: ArtifactContext, digest: Digest, base: number, head: Buffer): Promise<Qcow2Header> {
  const version = head.readUInt32BE(4);
  const backingOffset = Number(head.readBigUInt64BE(8));
  const backingSize = head.readUInt32BE(16);
  const q: Qcow2Header = {
    format: "qcow2",
    version,
    virtualSize: Number(head.readBigUInt64BE(24)),
    externalDataFile: false,
  };
  if (backingOffset && backingSize)
    q.backingFile = (await a.read(digest, base + backingOffset, backingSize)).toString("utf8");
  if (version >= 3) {
    // Bit 2 of the incompatible features: the image's data lives in an external data file.
    q.externalDataFile = (head.readBigUInt64BE(72) & 4n) !== 0n;
    let at = head.readUInt32BE(100);
    while (at + 8 <= head.length) {
      const type = head.readUInt32BE(at);
      const len = head.readUInt32BE(at + 4);
      if (type === 0) break;
      const data = head.subarray(at + 8, at + 8 + len).toString("utf8");
      if (type === 0xe2792aca) q.backingFormat = data;
      if (type === 0x44415441) q.externalDataFile = true;
      at += 8 + Math.ceil(len / 8) * 8;
    }
  }
  return q;
}

type C = Check<ArtifactContext>;
const must = { level: "artifact" as const, requirement: "MUST" as const };

/** eachDisk runs `fn` on every disk layer and collects its problems; skips when there is none. */
async function eachDisk(
  a: ArtifactContext,
  fn: (d: any, i: number, info: DiskLayerInfo, all: any[]) => string[],
): Promise<string[]> {
  const list: any[] = Array.isArray(a.needConfig().diskLayers) ? a.config.diskLayers : [];
  if (!list.length) throw new Skip("no disk layers");
  const out: string[] = [];
  for (const [i, d] of list.entries()) {
    if (!isDigest(d?.ref) || (await a.blobSize(d.ref)) === undefined) {
      out.push(`diskLayers[${i}]: blob ${d?.ref} is missing`);
      continue;
    }
    const info = await a.once(`disk ${d.ref}`, () => readLayer(a, d.ref));
    out.push(...fn(d, i, info, list).map((p) => `diskLayers[${i}]: ${p}`));
  }
  return out;
}

/** DISK_CHECKS are §4.2. */
export const DISK_CHECKS: C[] = [
  {
    ...must,
    id: "artifact.disk.tar",
    section: "§4.2",
    title: "a disk layer is a tar of exactly one regular file disk.<format>, no prefix",
    async run(a) {
      const bad = await eachDisk(a, (d, _i, info) => {
        const p = [...info.problems];
        const names = info.entries.map((e) => `${e.name} (type ${e.type})`);
        if (info.entries.length !== 1)
          p.push(`the tar holds ${info.entries.length} entries: ${names.join(", ")}`);
        else if (info.entries[0].type !== "0" || info.entries[0].name !== `disk.${d.format}`)
          p.push(`the entry is ${names[0]}, want the regular file disk.${d.format}`);
        return p;
      });
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    requirement: "SHOULD",
    id: "artifact.disk.reproducible",
    section: "§4.2",
    title: "layer tars are reproducible: mtime 0, owner 0, no extended times",
    async run(a) {
      const bad = await eachDisk(a, (_d, _i, info) =>
        info.entries.flatMap((e) => [
          ...(e.mtime !== 0 ? [`${e.name} has mtime ${e.mtime}`] : []),
          ...(e.uid !== 0 || e.gid !== 0 ? [`${e.name} is owned by ${e.uid}:${e.gid}`] : []),
          ...e.pax.filter((k) => /time$/.test(k)).map((k) => `${e.name} has a pax ${k}`),
        ]),
      );
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    id: "artifact.disk.image",
    section: "§4.2, §2.2",
    title: "the image is of its declared format, and size (and virtualSize) are the image's",
    async run(a) {
      const bad = await eachDisk(a, (d, _i, info) => {
        const f = info.entries.find((e) => e.type === "0");
        if (!f || !info.image) return ["no disk file to read"];
        const p: string[] = [];
        if (info.image.format !== d.format)
          p.push(`the file is ${info.image.format}, the manifest says ${d.format}`);
        if (d.size !== f.size) p.push(`size ${d.size}, the file in the tar has ${f.size} bytes`);
        if (
          info.image.format === "qcow2" &&
          d.virtualSize !== undefined &&
          d.virtualSize !== info.image.virtualSize
        )
          p.push(`virtualSize ${d.virtualSize}, the qcow2 header says ${info.image.virtualSize}`);
        return p;
      });
      expect(!bad.length, bad.join("; "));
    },
  },
  {
    ...must,
    id: "artifact.disk.backing",
    section: "§4.2",
    title:
      "the base has no backing file; a diff's backing name is its parent's digest, of the parent's format; no data file",
    async run(a) {
      const bad = await eachDisk(a, (d, i, info, all) => {
        const img = info.image;
        if (!img || img.format !== "qcow2") return [];
        const p: string[] = [];
        if (img.externalDataFile) p.push("uses an external data file");
        if (i === 0 && img.backingFile !== undefined)
          p.push(`the base layer has the backing file "${img.backingFile}"`);
        if (i > 0) {
          const parent = all[i - 1];
          // Whether `parent` itself names the layer before is S3's; the image must point there.
          if (img.backingFile !== parent?.ref)
            p.push(`backing name "${img.backingFile ?? ""}", want the parent's digest ${parent?.ref}`);
          if (img.backingFormat !== parent?.format)
            p.push(`backing format ${img.backingFormat ?? "not recorded"}, the parent is ${parent?.format}`);
        }
        return p;
      });
      expect(!bad.length, bad.join("; "));
    },
  },
];
