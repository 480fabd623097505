import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { decompressFrame } from "lz4-napi";
import {
  LZ4_MAGIC,
  RAMSNAP_FIRST_LINE,
  RAMSNAP_V2_FIRST_LINE,
  SKIPPABLE_MAGIC,
  TRAILER,
  bad,
  cutBlocks,
  type FrameRef,
  type RamsnapBlock,
  type RamsnapHeader,
  type RamsnapIndex,
  type RamsnapMetadata,
} from "./ramsnap-format.js";

/**
 * Reading RAM snapshot blobs of layouts 1 and 2 (rfc §5.5, §5.9): the structural checks, one
 * block read and verified alone, and the preload of the whole memory (from the blob and, for
 * layout 2, the parent blobs its index names).
 */

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
/** MAX_BLOCK_SIZE bounds `blockSize` (writers use 2 MiB, layout 2 256 KiB). */
const MAX_BLOCK_SIZE = 64 << 20;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HEX = /^[a-f0-9]{64}$/;

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * checkIndexShape refuses an index JSON that is not the shape of §5.5 before anything is read
 * by its numbers: every frame reference of this blob two non-negative integers inside the
 * frames' span, so a hostile index cannot ask for a read (and an allocation) of any size it
 * likes; in layout 2 every block has a SHA-256 and names only parents the index lists.
 */
function checkIndexShape(index: RamsnapIndex, frameX: number, path: string, version: 1 | 2): void {
  const frame = (f: unknown, what: string, here = true) => {
    const r = f as Partial<FrameRef> | null;
    if (typeof r !== "object" || r === null || !isCount(r.frameOffset) || !isCount(r.frameLength))
      throw bad(path, `index ${what} is not {frameOffset, frameLength}`);
    if (here && r.frameOffset + r.frameLength > frameX) throw bad(path, `index ${what} lies past the frames`);
    if (r.frameLength > MAX_BLOCK_SIZE * 2)
      throw bad(path, `index ${what} has a frame of ${r.frameLength} bytes`);
  };
  if (typeof index !== "object" || index === null || !Array.isArray(index.blocks))
    throw bad(path, "index is not {blocks, metadata, deviceState}");
  frame(index.metadata, "metadata");
  frame(index.deviceState, "deviceState");
  if (version === 2) {
    if (!Array.isArray(index.parents) || index.parents.some((p) => typeof p !== "string" || !DIGEST.test(p)))
      throw bad(path, "index parents is not a list of digests");
  } else if (index.parents !== undefined) throw bad(path, "a layout-1 index has no parents");
  index.blocks.forEach((b, i) => {
    if (typeof b !== "object" || b === null) throw bad(path, `index blocks[${i}] is not an object`);
    if (version === 1 && b.blob !== undefined)
      throw bad(path, `index blocks[${i}]: a layout-1 block has no blob`);
    frame(b, `blocks[${i}]`, b.blob === undefined);
    if (!isCount(b.guestOffset) || !isCount(b.length) || b.length === 0)
      throw bad(path, `index blocks[${i}] has no valid guestOffset/length`);
    if (version === 1) return;
    if (typeof b.sha256 !== "string" || !HEX.test(b.sha256))
      throw bad(path, `index blocks[${i}] has no sha256 (layout 2 hashes every block)`);
    if (b.blob !== undefined && !index.parents!.includes(b.blob))
      throw bad(
        path,
        `index blocks[${i}] lives in ${String(b.blob)}, which is not one of the index's parents`,
      );
  });
}

/** checkMetadataShape refuses metadata whose numbers a reader would trust blindly (§5.3). */
function checkMetadataShape(m: RamsnapMetadata, path: string, version: 1 | 2): void {
  if (typeof m !== "object" || m === null) throw bad(path, "metadata is not an object");
  if (m.version !== version)
    throw bad(
      path,
      `metadata.version ${String(m.version)} does not match the first line (layout ${version})`,
    );
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
 * check of §5.5 (and §5.9 for layout 2), so a truncated or altered blob is refused before
 * anything starts. A layout it does not know is refused by name.
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
    const indexBytes = await readAt(fh, x + 8, size - 16 - x - 8);
    let index: RamsnapIndex;
    try {
      index = JSON.parse(indexBytes.toString("utf8")) as RamsnapIndex;
    } catch (e) {
      throw bad(path, `index is not JSON: ${(e as Error).message}`);
    }
    // Frame M first: its first line says which layout the rest follows.
    const mFrame = (index as Partial<RamsnapIndex> | null)?.metadata;
    if (!mFrame || !isCount(mFrame.frameLength) || mFrame.frameLength > x)
      throw bad(path, "index metadata is not {frameOffset, frameLength}");
    const m = await inflate(await readAt(fh, 0, mFrame.frameLength), "metadata frame");
    if (m.length > MAX_METADATA) throw bad(path, `metadata of ${m.length} bytes`);
    const text = m.toString("utf8");
    const version = text.startsWith(RAMSNAP_FIRST_LINE) ? 1 : text.startsWith(RAMSNAP_V2_FIRST_LINE) ? 2 : 0;
    if (!version) {
      const first = /^OVMS-RAMSNAP (\S+)\n/.exec(text.slice(0, 40));
      throw bad(
        path,
        first
          ? `layout version ${first[1]} is not supported (this reader reads layouts 1 and 2)`
          : `first line is not "OVMS-RAMSNAP 1" or "OVMS-RAMSNAP 2"`,
      );
    }
    checkIndexShape(index, x, path, version);
    let metadata: RamsnapMetadata;
    try {
      metadata = JSON.parse(text.slice(RAMSNAP_FIRST_LINE.length)) as RamsnapMetadata;
    } catch (e) {
      throw bad(path, `metadata is not JSON: ${(e as Error).message}`);
    }
    checkMetadataShape(metadata, path, version);
    // This blob's frames follow each other with no gap, and the blocks are exactly the cut of the extents.
    let at = 0;
    for (const f of [
      index.metadata,
      index.deviceState,
      ...index.blocks.filter((b) => b.blob === undefined),
    ]) {
      if (f.frameOffset !== at)
        throw bad(path, `frame at ${f.frameOffset} does not follow the previous one (want ${at})`);
      at += f.frameLength;
    }
    if (at !== x) throw bad(path, `frames end at ${at}, the index starts at ${x}`);
    const want = cutBlocks(metadata.extents, metadata.blockSize, version === 2);
    if (
      want.length !== index.blocks.length ||
      want.some(
        (b, i) => b.guestOffset !== index.blocks[i].guestOffset || b.length !== index.blocks[i].length,
      )
    ) {
      throw bad(path, "index blocks do not match the metadata's extents");
    }
    const indexDigest = "sha256:" + createHash("sha256").update(indexBytes).digest("hex");
    return { metadata, index, size, indexDigest };
  } finally {
    await fh.close();
  }
}

/** BlobFiles opens a snapshot's blob and its parents by digest, once each. */
class BlobFiles {
  private readonly open = new Map<string, Promise<FileHandle>>();

  constructor(
    private readonly self: string,
    private readonly parents: ReadonlyMap<string, string>,
  ) {}

  get(digest: string | undefined): Promise<FileHandle> {
    const path = digest === undefined ? this.self : this.parents.get(digest);
    if (path === undefined)
      return Promise.reject(bad(this.self, `its index refers to parent blob ${digest}, which is not given`));
    let fh = this.open.get(path);
    if (!fh) {
      fh = open(path, "r");
      this.open.set(path, fh);
    }
    return fh;
  }

  async close(): Promise<void> {
    for (const fh of this.open.values()) await (await fh.catch(() => undefined))?.close();
  }
}

/** readBlockFrom reads block `b`, decompressed, checked against its length and (layout 2) its SHA-256. */
async function readBlockFrom(files: BlobFiles, b: RamsnapBlock, blob: string): Promise<Buffer> {
  const where = `block at ${b.guestOffset}${b.blob ? ` (in parent ${b.blob})` : ""}`;
  const data = await inflate(
    await readAt(await files.get(b.blob), b.frameOffset, b.frameLength),
    `${blob} ${where}`,
  );
  if (data.length !== b.length) throw bad(blob, `${where} is ${data.length} bytes, want ${b.length}`);
  if (b.sha256 !== undefined) {
    const sum = createHash("sha256").update(data).digest("hex");
    if (sum !== b.sha256) throw bad(blob, `${where} hashes to ${sum}, its index says ${b.sha256}`);
  }
  return data;
}

/**
 * readRamsnapBlock reads block `i` alone (§5.5 "reading one block") and verifies it on its own:
 * its LZ4 content checksum and length, and in layout 2 its SHA-256 from the index. `parents`
 * maps the digests of parent blobs to their files.
 */
export async function readRamsnapBlock(
  blob: string,
  h: RamsnapHeader,
  i: number,
  parents: ReadonlyMap<string, string> = new Map(),
): Promise<Buffer> {
  const files = new BlobFiles(blob, parents);
  try {
    return await readBlockFrom(files, h.index.blocks[i], blob);
  } finally {
    await files.close();
  }
}

/**
 * preloadRamsnap writes the memory of a snapshot into `memoryFile` (sparse, memoryBytes long)
 * and its device state into `deviceStateFile`, decompressing blocks in parallel; every frame's
 * LZ4 content checksum, every layout-2 block's SHA-256 and the device state's SHA-256 are
 * checked. A layout-2 blob's blocks that live in parent blobs are read from `parents`.
 */
export async function preloadRamsnap(
  blob: string,
  h: RamsnapHeader,
  memoryFile: string,
  deviceStateFile: string,
  parents: ReadonlyMap<string, string> = new Map(),
): Promise<void> {
  const files = new BlobFiles(blob, parents);
  const mem = await open(memoryFile, "w", 0o644);
  try {
    await mem.truncate(h.metadata.memoryBytes);
    const src = await files.get(undefined);
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
        const data = await readBlockFrom(files, b, blob);
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
    await files.close();
    await mem.close();
  }
}
