import { OvmsError } from "../core/errors.js";
import type { Device } from "../core/manifest.generated.js";

/**
 * The RAM snapshot blob's shared vocabulary (rfc/ovms-v0.1.md §5.2–§5.5): the two layouts'
 * first lines, frame magics, metadata and index shapes, and the cut of memory into blocks.
 * Layout 1: every block in the blob, cut from each extent's start. Layout 2 (§5.9): blocks cut
 * on a fixed grid, each with its SHA-256 in the index, and a block may live in a parent blob.
 */
export const RAMSNAP_FIRST_LINE = "OVMS-RAMSNAP 1\n";
/** RAMSNAP_V2_FIRST_LINE opens frame M of a layout-2 blob. */
export const RAMSNAP_V2_FIRST_LINE = "OVMS-RAMSNAP 2\n";
/** RAMSNAP_BLOCK_SIZE is a layout-1 writer's block size. */
export const RAMSNAP_BLOCK_SIZE = 2 << 20;
/** RAMSNAP_V2_BLOCK_SIZE is a layout-2 writer's grid: small enough that a child stores little. */
export const RAMSNAP_V2_BLOCK_SIZE = 256 << 10;
export const SKIPPABLE_MAGIC = 0x184d2a5e;
export const LZ4_MAGIC = 0x184d2204;
export const TRAILER = "OVMSIDX1";
export const PAGE = 4096;

/** Extent is a run of non-zero guest RAM: offset and length within the memory backend. */
export interface Extent {
  offset: number;
  length: number;
}

/** RamsnapMetadata is frame M's JSON (§5.3). */
export interface RamsnapMetadata {
  version: 1 | 2;
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

/** FrameRef is where a frame lies in a blob. */
export interface FrameRef {
  frameOffset: number;
  frameLength: number;
}

/**
 * RamsnapBlock is one index entry: the guest RAM it holds and where its frame is. Layout 2
 * adds the SHA-256 of its decompressed bytes and, when the frame lives in a parent blob, that
 * blob's digest (absent: this blob).
 */
export type RamsnapBlock = { guestOffset: number; length: number; sha256?: string; blob?: string } & FrameRef;

/** RamsnapIndex is frame X's JSON (§5.5; `parents` in layout 2 only, §5.9). */
export interface RamsnapIndex {
  blocks: RamsnapBlock[];
  metadata: FrameRef;
  deviceState: FrameRef;
  /** The parent blobs the blocks refer to (layout 2), each a layer of the artifact. */
  parents?: string[];
}

/** RamsnapHeader is what a reader learns from the trailer, the index and frame M. */
export interface RamsnapHeader {
  metadata: RamsnapMetadata;
  index: RamsnapIndex;
  size: number;
  /** The SHA-256 digest of the index JSON as stored (what a manifest's `ramSnapshot.indexDigest` names). */
  indexDigest: string;
}

/** bad is the error of a blob that breaks the layout. */
export function bad(what: string, why: string): OvmsError {
  return new OvmsError("RAMSNAP_INVALID", `RAM snapshot ${what}: ${why}`);
}

/**
 * cutBlocks cuts extents into blocks that never span two extents (§5.4): layout 1 cuts each
 * extent from its start into `blockSize` pieces; layout 2 (`grid`) cuts it at every multiple of
 * `blockSize` in guest RAM, so a block's place does not move when memory around it changes.
 */
export function cutBlocks(
  extents: Extent[],
  blockSize: number,
  grid = false,
): { guestOffset: number; length: number }[] {
  const out: { guestOffset: number; length: number }[] = [];
  for (const e of extents) {
    const end = e.offset + e.length;
    for (let o = e.offset; o < end;) {
      const next = grid
        ? Math.min(end, (Math.floor(o / blockSize) + 1) * blockSize)
        : Math.min(end, o + blockSize);
      out.push({ guestOffset: o, length: next - o });
      o = next;
    }
  }
  return out;
}
