import { createReadStream } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import { OvmsError } from "../core/errors.js";
import { LayoutSource, type LayoutFiles } from "./layout-source.js";
import { TAR_BLOCK, paddedSize, parsePaxRecords, readTarHeader, safeEntryPath } from "./tar-header.js";

/** TarEntry is where the body of one plain file lies in a tar. */
export interface TarEntry {
  offset: number;
  size: number;
}

/** TarIndex is the plain files of a tar by normalized path, and the top-level names of all entries. */
export interface TarIndex {
  files: Map<string, TarEntry>;
  tops: Set<string>;
}

// Extension headers (pax records, GNU long names) are small; a huge one is not a layout's.
const MAX_EXTENSION = 1 << 20;

/** isTarFile tells whether a file is a tar archive (ustar magic at offset 257, POSIX or GNU). */
export async function isTarFile(file: string): Promise<boolean> {
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(8);
    const { bytesRead } = await fh.read(buf, 0, 8, 257);
    return bytesRead >= 5 && buf.subarray(0, 5).toString("latin1") === "ustar";
  } finally {
    await fh.close();
  }
}

/**
 * indexTar reads the headers of a tar (seeking past the bodies, never reading them) and
 * returns where each plain file's body lies. Anything but plain files and folders (links,
 * devices), and any name with a `..` part, is refused with the entry named: a layout tar
 * holds nothing else, and no later reader has to think about them.
 */
export async function indexTar(file: string): Promise<TarIndex> {
  const files = new Map<string, TarEntry>();
  const tops = new Set<string>();
  const fh = await open(file, "r");
  try {
    const total = (await fh.stat()).size;
    const block = Buffer.alloc(TAR_BLOCK);
    let pos = 0;
    let pax: Map<string, string> | undefined;
    let longName: string | undefined;
    // An archive may end without its two zero blocks, but never inside a header or a body.
    while (pos < total) {
      if (pos + TAR_BLOCK > total) throw unreadable(file, `truncated header at byte ${pos}`);
      await readAt(file, fh, block, pos);
      const h = readTar(file, block, pos);
      if (!h) break;
      const body = pos + TAR_BLOCK;
      if (h.type === "x" || h.type === "g" || h.type === "L" || h.type === "K") {
        if (h.size > MAX_EXTENSION) throw unreadable(file, `a ${h.size}-byte extended header at byte ${pos}`);
        if (body + h.size > total) throw unreadable(file, `truncated extended header at byte ${pos}`);
        const data = Buffer.alloc(h.size);
        await readAt(file, fh, data, body);
        // Global pax headers (git archive writes one) and GNU link names say nothing a layout needs.
        if (h.type === "x") pax = parseRecords(file, data, pos);
        if (h.type === "L")
          longName = data.toString("utf8", 0, data.includes(0) ? data.indexOf(0) : data.length);
        pos = body + paddedSize(h.size);
        continue;
      }
      const name = pax?.get("path") ?? longName ?? h.name;
      let size = h.size;
      if (pax?.has("size")) {
        size = Number(pax.get("size"));
        if (!Number.isSafeInteger(size) || size < 0)
          throw unreadable(file, `"${name}": bad pax size "${pax.get("size")}"`);
      }
      pax = longName = undefined;
      // Old tars mark a folder as a file whose name ends in "/"; a folder has no body.
      const type = h.type === "0" && name.endsWith("/") ? "5" : h.type;
      if (type === "5") size = 0;
      const path = safeEntryPath(name);
      if (path === null || (type !== "0" && type !== "5"))
        throw new OvmsError(
          "MANIFEST_INVALID",
          `${file}: the tar holds "${name}", which is not a plain file or folder`,
        );
      if (body + size > total) throw unreadable(file, `"${name}" is truncated`);
      if (type === "0") files.set(path, { offset: body, size });
      if (path) tops.add(path.split("/")[0]);
      pos = body + paddedSize(size);
    }
  } finally {
    await fh.close();
  }
  return { files, tops };
}

/**
 * tarFiles serves the files of a layout tar as byte ranges of the tar file. The layout is at
 * the tar's root (`tar -C layout -cf x.tar .`) or in its one top folder (`tar -cf x.tar layout`).
 */
export async function tarFiles(file: string): Promise<LayoutFiles> {
  const { files, tops } = await indexTar(file);
  const top = tops.size === 1 ? [...tops][0] : undefined;
  const prefix =
    !files.has("oci-layout") && top !== undefined && files.has(`${top}/oci-layout`) ? `${top}/` : "";
  return {
    where: file,
    size: async (path) => files.get(prefix + path)?.size,
    open: async (path) => {
      const e = files.get(prefix + path);
      // LayoutSource names the tar and the file; this says what is wrong with them.
      if (!e) throw new OvmsError("ARTIFACT_INCOMPLETE", "no such file in the tar");
      // createReadStream's `end` is inclusive, so an empty file cannot be asked for as a range.
      if (e.size === 0) return Readable.from([]);
      return createReadStream(file, { start: e.offset, end: e.offset + e.size - 1 });
    },
  };
}

/** openLayoutTar reads an OCI layout from a tar in place: nothing is extracted. */
export async function openLayoutTar(file: string): Promise<LayoutSource> {
  return LayoutSource.over(await tarFiles(file));
}

async function readAt(file: string, fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
  if (bytesRead !== buf.length) throw unreadable(file, `short read at byte ${pos}`);
}

function readTar(file: string, block: Buffer, pos: number) {
  try {
    return readTarHeader(block);
  } catch (e) {
    throw unreadable(file, `header at byte ${pos}: ${(e as Error).message}`, e);
  }
}

function parseRecords(file: string, data: Buffer, pos: number): Map<string, string> {
  try {
    return parsePaxRecords(data);
  } catch (e) {
    throw unreadable(file, `pax header at byte ${pos}: ${(e as Error).message}`, e);
  }
}

function unreadable(file: string, why: string, cause?: unknown): OvmsError {
  return new OvmsError("MANIFEST_INVALID", `${file}: not a readable tar: ${why}`, { cause });
}
