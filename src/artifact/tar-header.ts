import { OvmsError } from "../core/errors.js";

/**
 * The parts of the tar format (POSIX ustar and pax, with the GNU long-name extension) needed to
 * index an archive without unpacking it. Pure: callers read the 512-byte blocks.
 * https://pubs.opengroup.org/onlinepubs/9699919799/utilities/pax.html#tag_20_92_13_06
 */

/** TAR_BLOCK is the size of a tar header and the unit entry bodies are padded to. */
export const TAR_BLOCK = 512;

/** TarHeader is what one 512-byte header block says. */
export interface TarHeader {
  /** The name as the block records it (ustar prefix joined); a pax `path` or GNU long name overrides it. */
  name: string;
  /**
   * The typeflag: "0" plain file (an old NUL flag reads as "0"), "5" folder, "x" pax header of
   * the next entry, "g" global pax header, "L"/"K" GNU long name/link name of the next entry.
   */
  type: string;
  /** Bytes of body that follow the header (before padding). */
  size: number;
}

/** paddedSize is how many bytes a body of `size` bytes takes in the archive. */
export function paddedSize(size: number): number {
  return Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
}

/**
 * readTarHeader decodes one header block; undefined for an all-zero block (the end of the
 * archive). A block whose checksum does not add up is not a tar header, and says so.
 */
export function readTarHeader(block: Buffer): TarHeader | undefined {
  if (block.length !== TAR_BLOCK) throw invalid(`a header is ${TAR_BLOCK} bytes, got ${block.length}`);
  if (block.every((b) => b === 0)) return undefined;
  const want = readOctal(block, 148, 8, "checksum");
  // The sum is over the block with the checksum field read as spaces; old tars summed signed bytes.
  let unsigned = 8 * 0x20;
  let signed = 8 * 0x20;
  for (let i = 0; i < TAR_BLOCK; i++) {
    if (i >= 148 && i < 156) continue;
    unsigned += block[i];
    signed += block[i] > 127 ? block[i] - 256 : block[i];
  }
  if (want !== unsigned && want !== signed)
    throw invalid(`header checksum ${want} does not match the header (${unsigned})`);
  let name = text(block, 0, 100);
  // Only POSIX ustar ("ustar\0") has a prefix field; GNU ("ustar  \0") keeps times there.
  if (block.toString("latin1", 257, 263) === "ustar\0") {
    const prefix = text(block, 345, 155);
    if (prefix) name = `${prefix}/${name}`;
  }
  const flag = String.fromCharCode(block[156]);
  return { name, type: flag === "\0" ? "0" : flag, size: readSize(block) };
}

/**
 * parsePaxRecords reads a pax extended header body: records of the form
 * `LENGTH KEY=VALUE\n`, where LENGTH counts the whole record in bytes, so values may hold
 * any byte, newlines included.
 */
export function parsePaxRecords(body: Buffer): Map<string, string> {
  return new Map([...parsePaxRecordsRaw(body)].map(([k, v]) => [k, v.toString("utf8")]));
}

/**
 * parsePaxRecordsRaw is parsePaxRecords with each value as the bytes it holds: the values of
 * `SCHILY.xattr.*` records (extended attributes such as security.capability) are binary.
 */
export function parsePaxRecordsRaw(body: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let at = 0;
  // A body is padded with NULs to the block; records stop at the first one.
  while (at < body.length && body[at] !== 0) {
    const space = body.indexOf(0x20, at);
    const len = space > at ? Number(body.toString("latin1", at, space)) : NaN;
    if (!Number.isSafeInteger(len) || len <= space - at + 1 || at + len > body.length)
      throw invalid(`malformed pax record at byte ${at}`);
    const record = body.subarray(space + 1, at + len);
    const eq = record.indexOf(0x3d);
    if (eq <= 0 || record[record.length - 1] !== 0x0a) throw invalid(`malformed pax record at byte ${at}`);
    out.set(record.toString("utf8", 0, eq), Buffer.from(record.subarray(eq + 1, record.length - 1)));
    at += len;
  }
  return out;
}

/**
 * safeEntryPath normalizes an entry name the way an extraction would write it (leading `/`
 * and `./` dropped, no trailing `/`; the archive's root reads as ""), or null when a `..`
 * part would climb out of it.
 */
export function safeEntryPath(name: string): string | null {
  const parts = name.split("/");
  if (parts.includes("..")) return null;
  return parts.filter((p) => p !== "" && p !== ".").join("/");
}

/** readSize reads the size field: octal text, or base-256 (GNU, for bodies of 8 GiB and more). */
function readSize(block: Buffer): number {
  // Some writers leave a folder's size empty.
  if (!(block[124] & 0x80)) return text(block, 124, 12).trim() === "" ? 0 : readOctal(block, 124, 12, "size");
  if (block[124] !== 0x80) throw invalid("negative size");
  let n = 0;
  for (let i = 125; i < 136; i++) n = n * 256 + block[i];
  if (!Number.isSafeInteger(n)) throw invalid("size too large");
  return n;
}

function readOctal(block: Buffer, at: number, len: number, field: string): number {
  const s = text(block, at, len).trim();
  if (!/^[0-7]+$/.test(s)) throw invalid(`${field} field "${s}" is not an octal number`);
  return parseInt(s, 8);
}

/** text reads a NUL-terminated field. */
function text(block: Buffer, at: number, len: number): string {
  const field = block.subarray(at, at + len);
  const end = field.indexOf(0);
  return field.toString("utf8", 0, end < 0 ? len : end);
}

function invalid(why: string): OvmsError {
  return new OvmsError("MANIFEST_INVALID", why);
}
