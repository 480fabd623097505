import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { compressFrame, decompressFrame } from "lz4-napi";
import { OvmsError } from "../core/errors.js";
import type { Device } from "../core/manifest.generated.js";

/**
 * The RAM snapshot blob, layout v1 (rfc/ovms-v0.1.md §5.2): LZ4 frames M (metadata), D
 * (device state), B0…Bn-1 (non-zero guest memory in independent blocks), then a skippable
 * frame X holding the index and a 16-byte trailer, so `lz4 -d` reads it whole and any block
 * can be read alone.
 */
export const RAMSNAP_FIRST_LINE = "OVMS-RAMSNAP 1\n";
export const RAMSNAP_BLOCK_SIZE = 2 << 20;
const SKIPPABLE_MAGIC = 0x184d2a5e;
const LZ4_MAGIC = 0x184d2204;
const TRAILER = "OVMSIDX1";
const PAGE = 4096;

/** Extent is a run of non-zero guest RAM: offset and length within the memory backend. */
export interface Extent {
  offset: number;
  length: number;
}

/** RamsnapMetadata is frame M's JSON (§5.3). */
export interface RamsnapMetadata {
  version: 1;
  runtime: { name: string; version: string };
  machine: string;
  memoryBytes: number;
  vcpus: number;
  cpuModel: string;
  accel: string;
  devices: Device[];
  /** The instance's NIC, when it had one: a restore needs the same NIC with the same MAC. */
  network?: { mac: string };
  diskLayers: string[];
  blockSize: number;
  extents: Extent[];
  deviceState: { size: number; sha256: string };
  memory: { bytes: number; blocks: number };
}

interface FrameRef {
  frameOffset: number;
  frameLength: number;
}

/** RamsnapIndex is frame X's JSON (§5.5). */
export interface RamsnapIndex {
  blocks: ({ guestOffset: number; length: number } & FrameRef)[];
  metadata: FrameRef;
  deviceState: FrameRef;
}

function bad(what: string, why: string): OvmsError {
  return new OvmsError("RAMSNAP_INVALID", `RAM snapshot ${what}: ${why}`);
}

/**
 * findExtents scans a memory file page by page and returns its non-zero extents, merged and
 * sorted: a 1 GiB guest that touched 100 MiB yields about 100 MiB of extents.
 */
export async function findExtents(path: string, size: number): Promise<Extent[]> {
  const fh = await open(path, "r");
  const zero = Buffer.alloc(PAGE);
  const chunk = Buffer.alloc(RAMSNAP_BLOCK_SIZE);
  const out: Extent[] = [];
  try {
    for (let base = 0; base < size; base += chunk.length) {
      const n = Math.min(chunk.length, size - base);
      const { bytesRead } = await fh.read(chunk, 0, n, base);
      for (let i = 0; i < bytesRead; i += PAGE) {
        const end = Math.min(i + PAGE, bytesRead);
        const page = chunk.subarray(i, end);
        if (page.length === PAGE ? page.equals(zero) : page.every((b) => b === 0)) continue;
        const last = out[out.length - 1];
        if (last && last.offset + last.length === base + i) last.length += end - i;
        else out.push({ offset: base + i, length: end - i });
      }
    }
  } finally {
    await fh.close();
  }
  return out;
}

/** cutBlocks cuts extents into blocks of at most `blockSize` that never span two extents (§5.4). */
export function cutBlocks(extents: Extent[], blockSize: number): { guestOffset: number; length: number }[] {
  const out: { guestOffset: number; length: number }[] = [];
  for (const e of extents) {
    for (let o = 0; o < e.length; o += blockSize)
      out.push({ guestOffset: e.offset + o, length: Math.min(blockSize, e.length - o) });
  }
  return out;
}

/** RamsnapInput is what a runtime captured from a paused instance. */
export interface RamsnapInput {
  metadata: Omit<RamsnapMetadata, "version" | "blockSize" | "extents" | "deviceState" | "memory">;
  deviceState: Buffer;
  /** The guest memory file (memory-backend-file), `metadata.memoryBytes` long. */
  memoryFile: string;
}

/**
 * encodeRamsnap yields the blob of §5.2 chunk by chunk (one frame at a time, so memory use is
 * bounded by the block size), with the metadata it wrote.
 */
export async function* encodeRamsnap(
  input: RamsnapInput,
  out: { metadata?: RamsnapMetadata } = {},
): AsyncGenerator<Buffer> {
  const extents = await findExtents(input.memoryFile, input.metadata.memoryBytes);
  const blocks = cutBlocks(extents, RAMSNAP_BLOCK_SIZE);
  const metadata: RamsnapMetadata = {
    version: 1,
    ...input.metadata,
    blockSize: RAMSNAP_BLOCK_SIZE,
    extents,
    deviceState: {
      size: input.deviceState.length,
      sha256: createHash("sha256").update(input.deviceState).digest("hex"),
    },
    memory: { bytes: extents.reduce((n, e) => n + e.length, 0), blocks: blocks.length },
  };
  out.metadata = metadata;
  const frame = (data: Buffer) => compressFrame(data, { contentChecksum: true });
  const index: RamsnapIndex = {
    blocks: [],
    metadata: { frameOffset: 0, frameLength: 0 },
    deviceState: { frameOffset: 0, frameLength: 0 },
  };
  let offset = 0;
  const m = await frame(Buffer.from(RAMSNAP_FIRST_LINE + JSON.stringify(metadata) + "\n"));
  index.metadata = { frameOffset: offset, frameLength: m.length };
  offset += m.length;
  yield m;
  const d = await frame(input.deviceState);
  index.deviceState = { frameOffset: offset, frameLength: d.length };
  offset += d.length;
  yield d;
  const fh = await open(input.memoryFile, "r");
  try {
    // Compress a few blocks ahead on the libuv pool while the previous ones are written.
    const read = async (b: { guestOffset: number; length: number }) => {
      const buf = Buffer.alloc(b.length);
      await fh.read(buf, 0, b.length, b.guestOffset);
      return frame(buf);
    };
    const ahead: Promise<Buffer>[] = [];
    let next = 0;
    for (let i = 0; i < blocks.length; i++) {
      while (next < blocks.length && next < i + 4) ahead.push(read(blocks[next++]));
      const f = await ahead.shift()!;
      index.blocks.push({ ...blocks[i], frameOffset: offset, frameLength: f.length });
      offset += f.length;
      yield f;
    }
  } finally {
    await fh.close();
  }
  const json = Buffer.from(JSON.stringify(index));
  const x = Buffer.alloc(8 + json.length + 16);
  x.writeUInt32LE(SKIPPABLE_MAGIC, 0);
  x.writeUInt32LE(json.length + 16, 4);
  json.copy(x, 8);
  x.write(TRAILER, 8 + json.length, "ascii");
  x.writeBigUInt64LE(BigInt(offset), 8 + json.length + 8);
  yield x;
}

/** RamsnapHeader is what a reader learns from the trailer, the index and frame M. */
export interface RamsnapHeader {
  metadata: RamsnapMetadata;
  index: RamsnapIndex;
  size: number;
}

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  if (bytesRead !== length) throw bad("read", `truncated at ${offset + bytesRead}`);
  return buf;
}

async function inflate(buf: Buffer, what: string): Promise<Buffer> {
  if (buf.length < 4 || buf.readUInt32LE(0) !== LZ4_MAGIC) throw bad(what, "is not an LZ4 frame");
  try {
    return await decompressFrame(buf);
  } catch (e) {
    throw bad(what, `does not decompress: ${(e as Error).message}`);
  }
}

/** MAX_METADATA bounds frame M, decompressed (a metadata of a 1 TiB guest's extents is far below it). */
const MAX_METADATA = 64 << 20;
/** MAX_BLOCK_SIZE bounds `blockSize` (v0.1 writers use 2 MiB). */
const MAX_BLOCK_SIZE = 64 << 20;

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * checkIndexShape refuses an index JSON that is not the shape of §5.5 before anything is read
 * by its numbers: every frame reference two non-negative integers inside the frames' span,
 * so a hostile index cannot ask for a read (and an allocation) of any size it likes.
 */
function checkIndexShape(index: RamsnapIndex, frameX: number, path: string): void {
  const frame = (f: unknown, what: string) => {
    const r = f as Partial<FrameRef> | null;
    if (typeof r !== "object" || r === null || !isCount(r.frameOffset) || !isCount(r.frameLength))
      throw bad(path, `index ${what} is not {frameOffset, frameLength}`);
    if (r.frameOffset + r.frameLength > frameX) throw bad(path, `index ${what} lies past the frames`);
  };
  if (typeof index !== "object" || index === null || !Array.isArray(index.blocks))
    throw bad(path, "index is not {blocks, metadata, deviceState}");
  frame(index.metadata, "metadata");
  frame(index.deviceState, "deviceState");
  index.blocks.forEach((b, i) => {
    frame(b, `blocks[${i}]`);
    if (!isCount(b.guestOffset) || !isCount(b.length) || b.length === 0)
      throw bad(path, `index blocks[${i}] has no valid guestOffset/length`);
  });
}

/** checkMetadataShape refuses metadata whose numbers a reader would trust blindly (§5.3). */
function checkMetadataShape(m: RamsnapMetadata, path: string): void {
  if (typeof m !== "object" || m === null) throw bad(path, "metadata is not an object");
  if (!isCount(m.memoryBytes) || m.memoryBytes === 0) throw bad(path, "metadata.memoryBytes is not a size");
  if (!isCount(m.vcpus) || m.vcpus === 0) throw bad(path, "metadata.vcpus is not a count");
  if (!isCount(m.blockSize) || m.blockSize === 0 || m.blockSize > MAX_BLOCK_SIZE)
    throw bad(path, `metadata.blockSize ${String(m.blockSize)} is not in 1..${MAX_BLOCK_SIZE}`);
  if (!Array.isArray(m.diskLayers) || m.diskLayers.some((d) => typeof d !== "string"))
    throw bad(path, "metadata.diskLayers is not a list of digests");
  if (typeof m.deviceState !== "object" || m.deviceState === null || !isCount(m.deviceState.size))
    throw bad(path, "metadata.deviceState is not {size, sha256}");
  if (!Array.isArray(m.extents)) throw bad(path, "metadata.extents is not a list");
  let end = 0;
  for (const [i, e] of m.extents.entries()) {
    if (typeof e !== "object" || e === null || !isCount(e.offset) || !isCount(e.length) || e.length === 0)
      throw bad(path, `metadata.extents[${i}] is not {offset, length > 0}`);
    if (e.offset < end) throw bad(path, `metadata.extents[${i}] overlaps or is out of order`);
    end = e.offset + e.length;
    if (end > m.memoryBytes) throw bad(path, `metadata.extents[${i}] ends past memoryBytes`);
  }
}

/**
 * readRamsnapHeader reads a blob's trailer, index and metadata and runs every structural
 * check of §5.5, so a truncated or altered blob is refused before anything starts.
 */
export async function readRamsnapHeader(path: string): Promise<RamsnapHeader> {
  const fh = await open(path, "r");
  try {
    const size = (await fh.stat()).size;
    if (size < 16) throw bad(path, `only ${size} bytes`);
    const trailer = await readAt(fh, size - 16, 16);
    if (trailer.toString("ascii", 0, 8) !== TRAILER) throw bad(path, "no OVMSIDX1 trailer (truncated?)");
    const x = Number(trailer.readBigUInt64LE(8));
    if (x < 0 || x + 24 > size) throw bad(path, `index offset ${x} is outside the blob`);
    const head = await readAt(fh, x, 8);
    if (head.readUInt32LE(0) !== SKIPPABLE_MAGIC) throw bad(path, "frame X is not a skippable frame");
    if (x + 8 + head.readUInt32LE(4) !== size) throw bad(path, "frame X does not end the blob");
    if (size - 24 - x > MAX_METADATA * 4) throw bad(path, `index of ${size - 24 - x} bytes`);
    let index: RamsnapIndex;
    try {
      index = JSON.parse((await readAt(fh, x + 8, size - 16 - x - 8)).toString("utf8")) as RamsnapIndex;
    } catch (e) {
      throw bad(path, `index is not JSON: ${(e as Error).message}`);
    }
    checkIndexShape(index, x, path);
    const m = await inflate(await readAt(fh, 0, index.metadata.frameLength), "metadata frame");
    if (m.length > MAX_METADATA) throw bad(path, `metadata of ${m.length} bytes`);
    const text = m.toString("utf8");
    if (!text.startsWith(RAMSNAP_FIRST_LINE)) throw bad(path, `first line is not "OVMS-RAMSNAP 1"`);
    let metadata: RamsnapMetadata;
    try {
      metadata = JSON.parse(text.slice(RAMSNAP_FIRST_LINE.length)) as RamsnapMetadata;
    } catch (e) {
      throw bad(path, `metadata is not JSON: ${(e as Error).message}`);
    }
    checkMetadataShape(metadata, path);
    // Frames follow each other with no gap, and the blocks are exactly the cut of the extents.
    let at = 0;
    for (const f of [index.metadata, index.deviceState, ...index.blocks]) {
      if (f.frameOffset !== at)
        throw bad(path, `frame at ${f.frameOffset} does not follow the previous one (want ${at})`);
      at += f.frameLength;
    }
    if (at !== x) throw bad(path, `frames end at ${at}, the index starts at ${x}`);
    const want = cutBlocks(metadata.extents, metadata.blockSize);
    if (
      want.length !== index.blocks.length ||
      want.some(
        (b, i) => b.guestOffset !== index.blocks[i].guestOffset || b.length !== index.blocks[i].length,
      )
    ) {
      throw bad(path, "index blocks do not match the metadata's extents");
    }
    return { metadata, index, size };
  } finally {
    await fh.close();
  }
}

/**
 * preloadRamsnap writes the memory of a snapshot into `memoryFile` (sparse, memoryBytes long)
 * and its device state into `deviceStateFile`, decompressing blocks in parallel; every frame's
 * LZ4 content checksum and the device state's SHA-256 are checked.
 */
export async function preloadRamsnap(
  blob: string,
  h: RamsnapHeader,
  memoryFile: string,
  deviceStateFile: string,
): Promise<void> {
  const src = await open(blob, "r");
  const mem = await open(memoryFile, "w", 0o644);
  try {
    await mem.truncate(h.metadata.memoryBytes);
    const dev = await inflate(
      await readAt(src, h.index.deviceState.frameOffset, h.index.deviceState.frameLength),
      "device state frame",
    );
    const sum = createHash("sha256").update(dev).digest("hex");
    if (dev.length !== h.metadata.deviceState.size || sum !== h.metadata.deviceState.sha256) {
      throw bad(blob, `device state does not match its metadata (size ${dev.length}, sha256 ${sum})`);
    }
    const parallel = 4;
    let next = 0;
    const worker = async () => {
      while (next < h.index.blocks.length) {
        const b = h.index.blocks[next++];
        const data = await inflate(
          await readAt(src, b.frameOffset, b.frameLength),
          `block at ${b.guestOffset}`,
        );
        if (data.length !== b.length)
          throw bad(blob, `block at ${b.guestOffset} is ${data.length} bytes, want ${b.length}`);
        await mem.write(data, 0, data.length, b.guestOffset);
      }
    };
    await Promise.all(Array.from({ length: parallel }, worker));
    const out = await open(deviceStateFile, "w", 0o644);
    try {
      await out.writeFile(dev);
    } finally {
      await out.close();
    }
  } finally {
    await src.close();
    await mem.close();
  }
}
