import { createHash } from "node:crypto";
import { decompressFrame } from "lz4-napi";
import { isDigest, type Digest } from "../core/digest.js";
import type { ArtifactContext } from "./artifact-source.js";

/**
 * An independent reading of the RAM snapshot blob, layouts 1 and 2 (rfc §5.2–§5.5, §5.9), written from the
 * RFC's text and not from the reference runtime's reader (src/artifact/ramsnap.ts), so that the
 * two can disagree: the trailer and the skippable index frame, every LZ4 frame's header walked
 * block by block to its end (so a frame's length is found, not taken from the index), each frame
 * decompressed (the library checks the content checksum), the metadata's every rule, and the
 * index against the cut of the extents; in layout 2 each block's SHA-256, and the blocks that live
 * in parent blobs read from there. Problems are collected per rule, for one check each.
 */

const LZ4_MAGIC = 0x184d2204;
const SKIPPABLE_MAGIC = 0x184d2a5e;
const FIRST_LINE = "OVMS-RAMSNAP 1\n";
const FIRST_LINE_V2 = "OVMS-RAMSNAP 2\n";

/** RamsnapRule names the groups of §5 the problems fall in. */
export type RamsnapRule =
  "layout" | "frames" | "metadata" | "index" | "deviceState" | "blocks" | "contentSize";

/** DecodedRamsnap is what was read, and every problem found, by rule. */
export interface DecodedRamsnap {
  size: number;
  metadata?: any;
  index?: any;
  problems: Record<RamsnapRule, string[]>;
  /** readable: the trailer and index could be read, so the frames were walked (else only `layout` says anything). */
  readable: boolean;
  /** lz4Output is the SHA-256 of every frame's content, in order: what `lz4 -d` must print. */
  lz4Output?: string;
  frames: number;
}

interface FrameWalk {
  length: number;
  contentChecksum: boolean;
  contentSize?: number;
}

/**
 * walkFrame reads an LZ4 frame's header and steps over its blocks (LZ4 Frame Format 1.6.x) to
 * find where it ends; `buf` starts at the frame.
 */
export function walkFrame(buf: Buffer): FrameWalk {
  if (buf.length < 7 || buf.readUInt32LE(0) !== LZ4_MAGIC)
    throw new Error("does not start with the LZ4 frame magic 0x184D2204");
  const flg = buf[4];
  if (flg >> 6 !== 1) throw new Error(`frame version ${flg >> 6}, want 1`);
  const blockChecksum = !!(flg & 0x10);
  const hasSize = !!(flg & 0x08);
  const contentChecksum = !!(flg & 0x04);
  const dict = !!(flg & 0x01);
  let at = 6 + (hasSize ? 8 : 0) + (dict ? 4 : 0) + 1;
  const contentSize = hasSize ? Number(buf.readBigUInt64LE(6)) : undefined;
  for (;;) {
    if (at + 4 > buf.length) throw new Error("runs past its end (no end mark)");
    const word = buf.readUInt32LE(at);
    at += 4;
    if (word === 0) break;
    at += (word & 0x7fffffff) + (blockChecksum ? 4 : 0);
  }
  if (contentChecksum) at += 4;
  if (at > buf.length) throw new Error("runs past its end");
  return { length: at, contentChecksum, ...(contentSize !== undefined ? { contentSize } : {}) };
}

/** decodeRamsnap reads the ramsnap blob `ref` of an artifact and checks it against §5.2–§5.5. */
export async function decodeRamsnap(a: ArtifactContext, ref: unknown): Promise<DecodedRamsnap> {
  const problems: Record<RamsnapRule, string[]> = {
    layout: [],
    frames: [],
    metadata: [],
    index: [],
    deviceState: [],
    blocks: [],
    contentSize: [],
  };
  const out: DecodedRamsnap = { size: 0, problems, frames: 0, readable: false };
  if (!isDigest(ref)) {
    problems.layout.push(`ramSnapshot.ref ${ref} is not a digest`);
    return out;
  }
  const digest = ref as Digest;
  const size = (await a.blobSize(digest)) ?? 0;
  out.size = size;
  if (size < 24) {
    problems.layout.push(`the blob has ${size} bytes`);
    return out;
  }
  // Trailer and index (§5.5 steps 1–2).
  const trailer = await a.read(digest, size - 16, 16);
  if (trailer.toString("latin1", 0, 8) !== "OVMSIDX1") {
    problems.layout.push(`the last 16 bytes do not start with OVMSIDX1`);
    return out;
  }
  const x = Number(trailer.readBigUInt64LE(8));
  if (!(x >= 0 && x + 24 <= size)) {
    problems.layout.push(`the trailer's offset ${x} is outside the blob`);
    return out;
  }
  const head = await a.read(digest, x, 8);
  if (head.readUInt32LE(0) !== SKIPPABLE_MAGIC)
    problems.layout.push(`frame X at ${x} is not a skippable frame 0x184D2A5E`);
  if (x + 8 + head.readUInt32LE(4) !== size)
    problems.layout.push(
      `trailer offset ${x} + 8 + frame X size ${head.readUInt32LE(4)} is not the blob length ${size}`,
    );
  try {
    out.index = JSON.parse((await a.read(digest, x + 8, size - 16 - x - 8)).toString("utf8"));
  } catch (e) {
    problems.layout.push(`the index is not JSON: ${(e as Error).message}`);
    return out;
  }
  const idx = out.index;
  out.readable = true;
  const frameRefs: {
    what: string;
    frameOffset: number;
    frameLength: number;
    blob?: string;
    sha256?: string;
  }[] = [
    { what: "frame M", ...idx?.metadata },
    { what: "frame D", ...idx?.deviceState },
    ...(Array.isArray(idx?.blocks) ? idx.blocks : []).map((b: any, i: number) => ({
      what: `frame B${i}`,
      ...b,
    })),
  ];
  const parents: unknown[] = Array.isArray(idx?.parents) ? idx.parents : [];
  // Frames follow each other from 0 to X with no gap (§5.5), and each is a checked LZ4 frame (§5.2 rule 1).
  let at = 0;
  const lz4 = createHash("sha256");
  // Frames M and D are kept to read; of a memory block only its decompressed length matters here.
  const contents: Buffer[] = [];
  const blockLengths: number[] = [];
  for (const [i, f] of frameRefs.entries()) {
    // Layout 2: a block that lives in a parent blob (§5.9) is read from there; it is not a frame of this blob.
    const here = f.blob === undefined;
    if (!here && (!isDigest(f.blob) || !parents.includes(f.blob))) {
      problems.index.push(`${f.what} lives in ${String(f.blob)}, which the index's parents do not list`);
      blockLengths.push(NaN);
      continue;
    }
    if (here && f.frameOffset !== at)
      problems.layout.push(`${f.what} starts at ${f.frameOffset}, the previous frame ends at ${at}`);
    if (!Number.isSafeInteger(f.frameLength) || f.frameLength <= 0) {
      problems.layout.push(`${f.what} has frameLength ${f.frameLength}`);
      return out;
    }
    const buf = await a.read(here ? digest : (f.blob as Digest), f.frameOffset, f.frameLength);
    if (here) {
      at = f.frameOffset + f.frameLength;
      out.frames++;
    }
    let walk: FrameWalk;
    try {
      walk = walkFrame(buf);
    } catch (e) {
      problems.frames.push(`${f.what} at ${f.frameOffset} ${(e as Error).message}`);
      if (i < 2) contents.push(Buffer.alloc(0));
      else blockLengths.push(NaN);
      continue;
    }
    if (walk.length !== f.frameLength)
      problems.frames.push(`${f.what} is ${walk.length} bytes, the index says ${f.frameLength}`);
    if (!walk.contentChecksum) problems.frames.push(`${f.what} has no content checksum`);
    if (walk.contentSize === undefined) problems.contentSize.push(`${f.what} has no content size`);
    try {
      const data = await decompressFrame(buf);
      if (here) lz4.update(data);
      if (f.sha256 !== undefined && createHash("sha256").update(data).digest("hex") !== f.sha256)
        problems.blocks.push(`${f.what} does not hash to its index sha256 ${f.sha256}`);
      if (i < 2) contents.push(data);
      else blockLengths.push(data.length);
    } catch (e) {
      problems.frames.push(`${f.what} does not decompress: ${(e as Error).message}`);
      if (i < 2) contents.push(Buffer.alloc(0));
      else blockLengths.push(NaN);
    }
  }
  if (at !== x) problems.layout.push(`the frames end at ${at}, frame X starts at ${x}`);
  out.lz4Output = lz4.digest("hex");
  checkMetadata(contents[0], out);
  const meta = out.metadata;
  if (meta && contents[1]) {
    const d = contents[1];
    const sum = createHash("sha256").update(d).digest("hex");
    if (d.length !== meta.deviceState?.size)
      problems.deviceState.push(`frame D holds ${d.length} bytes, metadata says ${meta.deviceState?.size}`);
    if (sum !== meta.deviceState?.sha256)
      problems.deviceState.push(`frame D hashes to ${sum}, metadata says ${meta.deviceState?.sha256}`);
  }
  if (meta) checkIndex(idx, meta, blockLengths, problems);
  return out;
}

/** checkMetadata parses frame M and checks §5.3. */
function checkMetadata(m: Buffer | undefined, out: DecodedRamsnap): void {
  const p = out.problems.metadata;
  const text = m?.toString("utf8") ?? "";
  const version = text.startsWith(FIRST_LINE) ? 1 : text.startsWith(FIRST_LINE_V2) ? 2 : 0;
  if (!version) {
    p.push(`frame M does not start with "OVMS-RAMSNAP 1\\n" or "OVMS-RAMSNAP 2\\n"`);
    return;
  }
  if (!text.endsWith("\n")) p.push("frame M does not end with a newline");
  let meta: any;
  try {
    meta = JSON.parse(text.slice(FIRST_LINE.length));
  } catch (e) {
    p.push(`frame M's JSON does not parse: ${(e as Error).message}`);
    return;
  }
  out.metadata = meta;
  const int = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (meta.version !== version) p.push(`version ${meta.version}, the first line says ${version}`);
  if (typeof meta.runtime?.name !== "string" || typeof meta.runtime?.version !== "string")
    p.push("runtime {name, version} missing");
  if (typeof meta.machine !== "string") p.push("machine missing");
  if (!int(meta.memoryBytes) || meta.memoryBytes === 0) p.push(`memoryBytes ${meta.memoryBytes}`);
  if (!int(meta.vcpus) || meta.vcpus === 0) p.push(`vcpus ${meta.vcpus}`);
  for (const k of ["cpuModel", "accel"]) if (typeof meta[k] !== "string") p.push(`${k} missing`);
  if (!Array.isArray(meta.devices)) p.push("devices is not an array");
  if (!Array.isArray(meta.diskLayers) || !meta.diskLayers.every(isDigest))
    p.push("diskLayers is not an array of digests");
  const wantBlock = version === 1 ? 2097152 : 262144;
  if (meta.blockSize !== wantBlock)
    p.push(`blockSize ${meta.blockSize}: layout ${version} writers use ${wantBlock}`);
  if (!Array.isArray(meta.extents)) {
    p.push("extents is not an array");
    return;
  }
  let end = 0;
  let bytes = 0;
  meta.extents.forEach((e: any, i: number) => {
    if (!int(e?.offset) || !int(e?.length) || e.length === 0)
      p.push(`extents[${i}] ${JSON.stringify(e)} is not {offset, length > 0}`);
    else {
      if (e.offset < end) p.push(`extents[${i}] at ${e.offset} overlaps or is out of order`);
      if (e.offset + e.length > meta.memoryBytes) p.push(`extents[${i}] ends past memoryBytes`);
      end = e.offset + e.length;
      bytes += e.length;
    }
  });
  if (meta.memory?.bytes !== bytes)
    p.push(`memory.bytes ${meta.memory?.bytes}, the extents add up to ${bytes}`);
  if (!int(meta.deviceState?.size) || !/^[a-f0-9]{64}$/.test(meta.deviceState?.sha256 ?? ""))
    p.push("deviceState {size, sha256} malformed");
}

/** checkIndex checks §5.4–§5.5: index.blocks is the cut of the extents, and each block's frame holds exactly its length. */
function checkIndex(
  idx: any,
  meta: any,
  blockLengths: number[],
  problems: Record<RamsnapRule, string[]>,
): void {
  if (idx?.metadata?.frameOffset !== 0)
    problems.index.push(`metadata.frameOffset is ${idx?.metadata?.frameOffset}, want 0`);
  const want: { guestOffset: number; length: number }[] = [];
  for (const e of Array.isArray(meta.extents) ? meta.extents : []) {
    if (meta.version === 2) {
      // Layout 2 cuts at every multiple of blockSize in guest RAM (§5.9).
      for (let o = e.offset; o < e.offset + e.length;) {
        const next = Math.min(e.offset + e.length, (Math.floor(o / meta.blockSize) + 1) * meta.blockSize);
        want.push({ guestOffset: o, length: next - o });
        o = next;
      }
    } else
      for (let o = 0; o < e.length; o += meta.blockSize)
        want.push({ guestOffset: e.offset + o, length: Math.min(meta.blockSize, e.length - o) });
  }
  if (meta.version === 2 && blocks0(idx).some((b: any) => typeof b?.sha256 !== "string"))
    problems.index.push("a layout-2 block has no sha256");
  const blocks = Array.isArray(idx?.blocks) ? idx.blocks : [];
  if (blocks.length !== meta.memory?.blocks)
    problems.index.push(`${blocks.length} blocks, memory.blocks says ${meta.memory?.blocks}`);
  if (blocks.length !== want.length)
    problems.index.push(`${blocks.length} blocks, the extents cut into ${want.length}`);
  blocks.forEach((b: any, i: number) => {
    const w = want[i];
    if (w && (b.guestOffset !== w.guestOffset || b.length !== w.length))
      problems.index.push(
        `blocks[${i}] is (${b.guestOffset}, ${b.length}), the cut gives (${w.guestOffset}, ${w.length})`,
      );
    const got = blockLengths[i];
    if (got !== b.length)
      problems.blocks.push(`frame B${i} decompresses to ${got} bytes, its block is ${b.length}`);
  });
}

/** blocks0 is the index's blocks as an array (empty when absent). */
function blocks0(idx: any): any[] {
  return Array.isArray(idx?.blocks) ? idx.blocks : [];
}
