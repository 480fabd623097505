import { OvmsError } from "../../core/errors.js";
import { TAR_BLOCK, paddedSize, parsePaxRecordsRaw, readTarHeader, safeEntryPath } from "../tar-header.js";

/** XATTR_PREFIX is the pax record key prefix of an extended attribute (GNU tar, star, docker, buildkit). */
const XATTR_PREFIX = "SCHILY.xattr.";

/**
 * PaxXattrScanner reads the same bytes as the tar parser, beside it, and keeps what node-tar
 * drops: the extended attributes of each entry (`SCHILY.xattr.NAME` pax records, with binary
 * values such as security.capability). It walks headers and skips bodies, and only
 * remembers the entries that carry attributes, by normalized path. Feed it with `write`.
 */
export class PaxXattrScanner {
  /** xattrs maps an entry's normalized path to its attributes (name → raw value). */
  readonly xattrs = new Map<string, Map<string, Buffer>>();
  private buf: Buffer = Buffer.alloc(0);
  /** What the next bytes are: a header, a body to keep (pax, long name) or skip, or the end. */
  private state:
    | { kind: "header" }
    | { kind: "keep" | "skip"; left: number; use?: "pax" | "name"; size: number }
    | {
        kind: "end";
      } = { kind: "header" };
  private pax?: Map<string, Buffer>;
  private longName?: string;

  /** ended tells whether the archive's end (a zero block) has been seen. */
  get ended(): boolean {
    return this.state.kind === "end";
  }

  write(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      const s = this.state;
      if (s.kind === "end") {
        this.buf = Buffer.alloc(0);
        return;
      }
      if (s.kind === "skip") {
        const n = Math.min(s.left, this.buf.length);
        this.buf = this.buf.subarray(n);
        s.left -= n;
        if (s.left > 0) return;
        this.state = { kind: "header" };
        continue;
      }
      if (s.kind === "keep") {
        if (this.buf.length < s.left) return;
        const body = this.buf.subarray(0, s.size);
        this.buf = this.buf.subarray(s.left);
        if (s.use === "pax") this.pax = parsePaxRecordsRaw(body);
        else this.longName = body.toString("utf8").replace(/\0.*$/s, "");
        this.state = { kind: "header" };
        continue;
      }
      if (this.buf.length < TAR_BLOCK) return;
      const h = readTarHeader(Buffer.from(this.buf.subarray(0, TAR_BLOCK)));
      this.buf = this.buf.subarray(TAR_BLOCK);
      if (!h) {
        this.state = { kind: "end" };
        continue;
      }
      const padded = paddedSize(h.size);
      if (h.type === "x" || h.type === "L") {
        if (h.size > 16 << 20)
          throw new OvmsError("IMAGE_UNSUPPORTED", `a tar extended header of ${h.size} bytes`);
        this.state = { kind: "keep", left: padded, size: h.size, use: h.type === "x" ? "pax" : "name" };
        continue;
      }
      if (h.type === "g" || h.type === "K") {
        this.state = { kind: "skip", left: padded, size: h.size };
        continue;
      }
      // An entry: its name and size may come from the pax header (or GNU long name) before it.
      const name = this.pax?.get("path")?.toString("utf8") ?? this.longName ?? h.name;
      const paxSize = this.pax?.get("size")?.toString("latin1");
      const size = paxSize !== undefined && /^\d+$/.test(paxSize) ? Number(paxSize) : h.size;
      const attrs = new Map<string, Buffer>();
      for (const [k, v] of this.pax ?? [])
        if (k.startsWith(XATTR_PREFIX)) attrs.set(k.slice(XATTR_PREFIX.length), v);
      const path = safeEntryPath(name);
      if (attrs.size && path !== null) this.xattrs.set(path, attrs);
      this.pax = undefined;
      this.longName = undefined;
      this.state = { kind: "skip", left: paddedSize(size), size };
    }
  }
}
