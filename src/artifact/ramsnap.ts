import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { compressFrame } from "lz4-napi";
import {
  PAGE,
  RAMSNAP_BLOCK_SIZE,
  RAMSNAP_FIRST_LINE,
  RAMSNAP_V2_BLOCK_SIZE,
  RAMSNAP_V2_FIRST_LINE,
  SKIPPABLE_MAGIC,
  TRAILER,
  cutBlocks,
  type Extent,
  type RamsnapBlock,
  type RamsnapHeader,
  type RamsnapIndex,
  type RamsnapMetadata,
} from "./ramsnap-format.js";

export * from "./ramsnap-format.js";
export { preloadRamsnap, readRamsnapBlock, readRamsnapHeader } from "./ramsnap-read.js";

/**
 * Writing the RAM snapshot blob (rfc/ovms-v0.1.md §5.2): LZ4 frames M (metadata), D (device
 * state), B0…Bn-1 (non-zero guest memory in independent blocks), then a skippable frame X
 * holding the index and a 16-byte trailer, so `lz4 -d` reads it whole and any block can be read
 * alone. Layout 2 (§5.9) stores only the blocks that differ from a parent blob's and refers
 * to the parent's frames for the rest.
 */

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

/** RamsnapInput is what a runtime captured from a paused instance. */
export interface RamsnapInput {
  metadata: Omit<RamsnapMetadata, "version" | "blockSize" | "extents" | "deviceState" | "memory">;
  deviceState: Buffer;
  /** The guest memory file (memory-backend-file), `metadata.memoryBytes` long. */
  memoryFile: string;
  /** The layout to write: 1, or 2 (default 1). */
  layout?: 1 | 2;
  /**
   * Layout 2: the parent snapshot's blob (digest and header). Blocks equal to one of its
   * layout-2 blocks (same place, length and SHA-256) are not stored again but referred to.
   */
  parent?: { digest: string; header: RamsnapHeader };
}

/** RamsnapWritten is what encodeRamsnap tells about the blob it wrote, once it is done. */
export interface RamsnapWritten {
  metadata?: RamsnapMetadata;
  index?: RamsnapIndex;
  /** The SHA-256 digest of the index JSON. */
  indexDigest?: string;
  /** Blocks and their bytes (uncompressed) stored in this blob rather than referred to. */
  stored?: { blocks: number; bytes: number };
}

/**
 * encodeRamsnap yields the blob of §5.2 (or §5.9) chunk by chunk (one frame at a time, so
 * memory use is bounded by the block size), and tells in `out` what it wrote.
 */
export async function* encodeRamsnap(input: RamsnapInput, out: RamsnapWritten = {}): AsyncGenerator<Buffer> {
  const v2 = input.layout === 2;
  const blockSize = v2 ? RAMSNAP_V2_BLOCK_SIZE : RAMSNAP_BLOCK_SIZE;
  const extents = await findExtents(input.memoryFile, input.metadata.memoryBytes);
  const blocks = cutBlocks(extents, blockSize, v2);
  const metadata: RamsnapMetadata = {
    version: v2 ? 2 : 1,
    ...input.metadata,
    blockSize,
    extents,
    deviceState: {
      size: input.deviceState.length,
      sha256: createHash("sha256").update(input.deviceState).digest("hex"),
    },
    memory: { bytes: extents.reduce((n, e) => n + e.length, 0), blocks: blocks.length },
  };
  out.metadata = metadata;
  // What the parent holds, by place: only layout-2 parents of the same memory size qualify.
  const inherited = new Map<string, RamsnapBlock>();
  const p = input.parent;
  if (v2 && p?.header.metadata.version === 2 && p.header.metadata.memoryBytes === metadata.memoryBytes) {
    for (const b of p.header.index.blocks)
      inherited.set(`${b.guestOffset}:${b.length}:${b.sha256}`, { ...b, blob: b.blob ?? p.digest });
  }
  const frame = (data: Buffer) => compressFrame(data, { contentChecksum: true });
  const index: RamsnapIndex = {
    blocks: [],
    metadata: { frameOffset: 0, frameLength: 0 },
    deviceState: { frameOffset: 0, frameLength: 0 },
  };
  const parents = new Set<string>();
  const stored = { blocks: 0, bytes: 0 };
  let offset = 0;
  const m = await frame(
    Buffer.from((v2 ? RAMSNAP_V2_FIRST_LINE : RAMSNAP_FIRST_LINE) + JSON.stringify(metadata) + "\n"),
  );
  index.metadata = { frameOffset: offset, frameLength: m.length };
  offset += m.length;
  yield m;
  const d = await frame(input.deviceState);
  index.deviceState = { frameOffset: offset, frameLength: d.length };
  offset += d.length;
  yield d;
  const fh = await open(input.memoryFile, "r");
  try {
    // Read, hash and compress a few blocks ahead on the libuv pool while the previous ones are written.
    const read = async (b: { guestOffset: number; length: number }) => {
      const buf = Buffer.alloc(b.length);
      await fh.read(buf, 0, b.length, b.guestOffset);
      if (!v2) return { frame: await frame(buf) };
      const sha256 = createHash("sha256").update(buf).digest("hex");
      const same = inherited.get(`${b.guestOffset}:${b.length}:${sha256}`);
      return same ? { sha256, same } : { sha256, frame: await frame(buf) };
    };
    const ahead: ReturnType<typeof read>[] = [];
    let next = 0;
    for (let i = 0; i < blocks.length; i++) {
      while (next < blocks.length && next < i + 4) ahead.push(read(blocks[next++]));
      const r = await ahead.shift()!;
      if (r.same) {
        index.blocks.push({
          ...blocks[i],
          sha256: r.sha256,
          blob: r.same.blob,
          frameOffset: r.same.frameOffset,
          frameLength: r.same.frameLength,
        });
        parents.add(r.same.blob!);
        continue;
      }
      const f = r.frame!;
      index.blocks.push({
        ...blocks[i],
        ...(v2 ? { sha256: r.sha256 } : {}),
        frameOffset: offset,
        frameLength: f.length,
      });
      stored.blocks++;
      stored.bytes += blocks[i].length;
      offset += f.length;
      yield f;
    }
  } finally {
    await fh.close();
  }
  if (v2) index.parents = [...parents].sort();
  const json = Buffer.from(JSON.stringify(index));
  out.index = index;
  out.indexDigest = "sha256:" + createHash("sha256").update(json).digest("hex");
  out.stored = stored;
  const x = Buffer.alloc(8 + json.length + 16);
  x.writeUInt32LE(SKIPPABLE_MAGIC, 0);
  x.writeUInt32LE(json.length + 16, 4);
  json.copy(x, 8);
  x.write(TRAILER, 8 + json.length, "ascii");
  x.writeBigUInt64LE(BigInt(offset), 8 + json.length + 8);
  yield x;
}
