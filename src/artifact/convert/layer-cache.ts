import { spawn } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import * as tar from "tar";
import { Hasher, digestHex, type Digest } from "../../core/digest.js";
import { OvmsError } from "../../core/errors.js";
import { safeEntryPath } from "../tar-header.js";
import type { Compression, ImageLayer } from "./image.js";
import type { ImageStore } from "./image-source.js";
import { PaxXattrScanner } from "./pax-xattrs.js";

/** EntryType is what one entry of a layer is; `whiteout` and `opaque` are the OCI markers. */
export type EntryType =
  "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" | "whiteout" | "opaque";

/**
 * LayerEntry is one entry of a layer tar, as a conversion needs it: normalized path ("" is the
 * root), metadata from the tar header (pax included), extended attributes (base64 values),
 * and for a regular file the number of its content file in the cache.
 */
export interface LayerEntry {
  path: string;
  type: EntryType;
  /** Permission bits, set-id and sticky bits included (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  size?: number;
  content?: number;
  /** A symlink's target as written; a hard link's target path, normalized. */
  target?: string;
  major?: number;
  minor?: number;
  xattrs?: Record<string, string>;
}

/** UnpackedLayer is a layer in the cache: its entries, in tar order, and where its file contents are. */
export interface UnpackedLayer {
  /** The layer's uncompressed digest (diff_id), its key in the cache. */
  diffId: Digest;
  dir: string;
  entries: LayerEntry[];
  /** Whether it was there already (shared with an earlier conversion). */
  cached: boolean;
  /** Uncompressed tar bytes. */
  bytes: number;
}

const TYPES: Record<string, EntryType | undefined> = {
  File: "file",
  OldFile: "file",
  ContiguousFile: "file",
  Directory: "dir",
  SymbolicLink: "symlink",
  Link: "hardlink",
  CharacterDevice: "char",
  BlockDevice: "block",
  FIFO: "fifo",
};

/** WHITEOUT is the prefix of an OCI whiteout file; OPAQUE marks a folder whose lower contents are hidden. */
const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";

/**
 * LayerCache keeps unpacked container image layers by their uncompressed digest (the image
 * config's diff_id), so that two images that share base layers download and unpack them once,
 * however each was compressed or pushed (known before anything is downloaded):
 * `<root>/sha256/<hex>/{entries.json, files/<n>}`. A layer's regular files are stored by
 * number, never by their path in the image, so nothing in a layer (symlinks, `..`) can make
 * the unpacking write outside its folder. Contents are read-only: conversions hard-link them.
 */
export class LayerCache {
  constructor(readonly root: string) {}

  /** dir is the folder of the layer with uncompressed digest `diffId`. */
  dir(diffId: Digest): string {
    return join(this.root, "sha256", digestHex(diffId));
  }

  /** has tells whether the layer with uncompressed digest `diffId` is in the cache. */
  has(diffId: Digest): boolean {
    return existsSync(join(this.dir(diffId), "entries.json"));
  }

  /** contentPath is the cached content of entry `n` of a layer. */
  contentPath(diffId: Digest, n: number): string {
    return join(this.dir(diffId), "files", String(n));
  }

  /**
   * unpack returns a layer from the cache, or reads it from `src` first: the blob verified
   * against its digest while it streams, decompressed, its tar verified against the image's
   * diff_id, every entry recorded and every regular file's content written. The folder
   * appears complete or not at all (temp folder, then rename).
   */
  async unpack(
    src: ImageStore,
    layer: ImageLayer,
    what: string,
    signal?: AbortSignal,
  ): Promise<UnpackedLayer> {
    const diffId = layer.diffId;
    const dir = this.dir(diffId);
    const existing = await readFile(join(dir, "entries.json"), "utf8").catch(() => undefined);
    if (existing) {
      const doc = JSON.parse(existing) as { bytes: number; entries: LayerEntry[] };
      return { diffId, dir, entries: doc.entries, cached: true, bytes: doc.bytes };
    }
    await mkdir(join(this.root, "sha256"), { recursive: true });
    const tmp = await mkdtemp(join(this.root, ".unpack-"));
    try {
      await mkdir(join(tmp, "files"));
      const blob = await src.blob(layer.descriptor, signal);
      const { entries, bytes } = await readLayer(blob, layer, tmp, what);
      await writeFile(
        join(tmp, "entries.json"),
        JSON.stringify({ diffId, blob: layer.descriptor.digest, bytes, entries }),
      );
      await rename(tmp, dir).catch(async (e: NodeJS.ErrnoException) => {
        // Another conversion unpacked the same layer first; its copy is as good as ours.
        if (e.code !== "ENOTEMPTY" && e.code !== "EEXIST") throw e;
      });
      return { diffId, dir, entries, cached: false, bytes };
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
}

/**
 * readLayer parses one layer blob into `dir`: decompress, hash against the diff_id, and feed
 * the tar both to node-tar (entries and file contents) and to the xattr scanner.
 */
async function readLayer(
  blob: Readable,
  layer: ImageLayer,
  dir: string,
  what: string,
): Promise<{ entries: LayerEntry[]; bytes: number }> {
  const plain = decompress(blob, layer.compression, what);
  const hasher = new Hasher({ digest: layer.diffId, what: `${what}: uncompressed (diff_id)` });
  plain.on("error", (e) => hasher.destroy(e));
  plain.pipe(hasher);
  const scanner = new PaxXattrScanner();
  const entries: LayerEntry[] = [];
  const writes: Promise<unknown>[] = [];
  let failure: Error | undefined;
  const fail = (e: Error) => (failure ??= e);
  const parser = new tar.Parser();
  let empty = false;
  parser.on("warn", (code: string, message: string) => {
    if (code === "TAR_ENTRY_INFO") return;
    // A tar of nothing but its end blocks is a valid (empty) layer; node-tar calls it unrecognized.
    if (code === "TAR_BAD_ARCHIVE" && entries.length === 0) empty = true;
    else fail(bad(what, message));
  });
  parser.on("error", (e: Error) => fail(bad(what, e.message)));
  parser.on("entry", (e: tar.ReadEntry) => {
    try {
      const entry = toEntry(e, entries.length, what);
      entries.push(entry);
      if (entry.type === "file") {
        const ws = createWriteStream(join(dir, "files", String(entry.content)), { mode: 0o644 });
        e.pipe(ws);
        writes.push(finished(ws).then(() => chmod(join(dir, "files", String(entry.content)), 0o444)));
      } else {
        e.resume();
      }
    } catch (err) {
      fail(err as Error);
      e.resume();
    }
  });
  let bytes = 0;
  const chunks = hasher[Symbol.asyncIterator]();
  try {
    for (let r = await chunks.next(); !r.done; r = await chunks.next()) {
      const b = r.value as Buffer;
      bytes += b.length;
      try {
        scanner.write(b);
      } catch (e) {
        fail(e instanceof OvmsError ? bad(what, e.message) : (e as Error));
      }
      if (failure) throw failure;
      if (!parser.write(b)) await new Promise((r) => parser.once("drain", r));
    }
    await new Promise<void>((resolve) => {
      parser.once("end", () => resolve());
      parser.end();
    });
    await Promise.all(writes);
  } catch (e) {
    await Promise.allSettled(writes);
    // Bytes that do not parse are most often bytes that are not what the digest promised:
    // read to the end, so the blob's (or the diff_id's) check can say so.
    if (!(e instanceof OvmsError && e.code === "DIGEST_MISMATCH")) {
      try {
        for (let r = await chunks.next(); !r.done; r = await chunks.next());
      } catch (d) {
        if (d instanceof OvmsError && d.code === "DIGEST_MISMATCH") throw d;
      }
    }
    plain.destroy();
    throw e instanceof OvmsError ? e : bad(what, (e as Error).message);
  }
  if (failure) throw failure;
  if (empty && !scanner.ended) throw bad(what, "not a tar archive");
  for (const e of entries) {
    const attrs = scanner.xattrs.get(e.path);
    if (attrs && e.type !== "whiteout" && e.type !== "opaque")
      e.xattrs = Object.fromEntries([...attrs].map(([k, v]) => [k, v.toString("base64")]));
  }
  return { entries, bytes };
}

/** toEntry turns a node-tar entry into a LayerEntry (whiteouts recognised by name), or says why it cannot. */
function toEntry(e: tar.ReadEntry, n: number, what: string): LayerEntry {
  const path = safeEntryPath(e.path);
  if (path === null) throw bad(what, `entry "${e.path}" climbs out of the root with ..`);
  const base = posix.basename(path);
  const meta = {
    mode: (e.mode ?? 0o644) & 0o7777,
    uid: e.uid ?? 0,
    gid: e.gid ?? 0,
    mtime: Math.max(0, Math.floor((e.mtime?.getTime() ?? 0) / 1000)),
  };
  if (base === OPAQUE)
    return { path: posix.dirname(path) === "." ? "" : posix.dirname(path), type: "opaque", ...meta };
  if (base.startsWith(WHITEOUT)) {
    const parent = posix.dirname(path);
    const name = base.slice(WHITEOUT.length);
    if (!name || name === "." || name === "..") throw bad(what, `whiteout "${e.path}" names nothing`);
    return { path: parent === "." ? name : `${parent}/${name}`, type: "whiteout", ...meta };
  }
  const type = TYPES[e.type];
  if (!type)
    throw bad(what, `entry "${e.path}" is of tar type ${e.type}, which a root filesystem cannot hold`);
  const out: LayerEntry = { path, type, ...meta };
  if (type === "file") {
    out.content = n;
    out.size = e.size ?? 0;
  } else if (type === "symlink") {
    out.target = e.linkpath ?? "";
  } else if (type === "hardlink") {
    const target = safeEntryPath(e.linkpath ?? "");
    if (target === null || target === "") throw bad(what, `hard link "${e.path}" points at "${e.linkpath}"`);
    out.target = target;
  } else if (type === "char" || type === "block") {
    out.major = e.header.devmaj ?? 0;
    out.minor = e.header.devmin ?? 0;
  }
  return out;
}

/** decompress undoes a layer's compression: zlib for gzip, the zstd tool for zstd. */
function decompress(blob: Readable, how: Compression, what: string): Readable {
  if (how === "none") return blob;
  if (how === "gzip") {
    const gunzip = createGunzip();
    blob.on("error", (e) => gunzip.destroy(e));
    return blob.pipe(gunzip);
  }
  const out = new PassThrough();
  const child = spawn("zstd", ["-d", "-c", "-q"], { stdio: ["pipe", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  child.on("error", (e) =>
    out.destroy(new OvmsError("TOOL_MISSING", `${what}: zstd is needed for a zstd layer: ${e.message}`)),
  );
  child.on("exit", (code) => {
    if (code !== 0) out.destroy(bad(what, `zstd -d failed (${code}): ${err.trim()}`));
  });
  blob.on("error", (e) => out.destroy(e));
  blob.pipe(child.stdin);
  child.stdout.pipe(out);
  return out;
}

function bad(what: string, why: string): OvmsError {
  return new OvmsError("IMAGE_UNSUPPORTED", `${what}: ${why}`);
}
