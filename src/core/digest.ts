import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { OvmsError } from "./errors.js";

/** Digest is `sha256:` + 64 lowercase hex digits (the only algorithm OVMS v0.1 produces). */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/** isDigest tells whether `s` is a well-formed sha256 digest. */
export function isDigest(s: unknown): s is Digest {
  return typeof s === "string" && DIGEST_RE.test(s);
}

/** parseDigest returns `s` as a Digest or throws INVALID_DIGEST saying what is wrong. */
export function parseDigest(s: string, where = "digest"): Digest {
  if (isDigest(s)) return s;
  const alg = s.includes(":") ? s.slice(0, s.indexOf(":")) : "";
  const why =
    alg && alg !== "sha256"
      ? `unsupported algorithm "${alg}" (only sha256)`
      : "must be sha256: followed by 64 lowercase hex digits";
  throw new OvmsError("INVALID_DIGEST", `${where}: "${s}" is not a valid digest: ${why}`);
}

/** digestHex returns the 64 hex digits of a digest. */
export function digestHex(d: Digest): string {
  return d.slice("sha256:".length);
}

/** sha256 digests a buffer or string. */
export function sha256(data: string | Uint8Array): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** DigestMismatchError says which content failed, after how many bytes, what it got and wanted. */
export function digestMismatch(what: string, got: Digest, want: Digest, bytes: number): OvmsError {
  return new OvmsError(
    "DIGEST_MISMATCH",
    `${what}: digest mismatch after ${bytes} bytes (got ${got}, want ${want})`,
    { details: { got, want, bytes } },
  );
}

/**
 * Hasher is a pass-through stream that digests what flows through it. With an `expect`
 * it verifies at the edge: it fails at end of stream on a wrong digest or size, and as
 * soon as more bytes than the declared size arrive, so callers never re-check.
 */
export class Hasher extends Transform {
  private readonly hash: Hash = createHash("sha256");
  bytes = 0;
  private result?: Digest;

  constructor(private readonly expect?: { digest?: Digest; size?: number; what?: string }) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    const want = this.expect?.size;
    if (want !== undefined && this.bytes > want) {
      cb(
        new OvmsError(
          "DIGEST_MISMATCH",
          `${this.expect?.what ?? this.expect?.digest ?? "blob"}: more than the declared ${want} bytes`,
          { details: { want, got: this.bytes } },
        ),
      );
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const got = this.digest();
    const e = this.expect;
    const what = e?.what ?? e?.digest ?? "blob";
    if (e?.size !== undefined && this.bytes !== e.size) {
      cb(
        new OvmsError("DIGEST_MISMATCH", `${what}: got ${this.bytes} bytes, want ${e.size}`, {
          details: { want: e.size, got: this.bytes },
        }),
      );
      return;
    }
    if (e?.digest && got !== e.digest) {
      cb(digestMismatch(what, got, e.digest, this.bytes));
      return;
    }
    cb();
  }

  /** digest is the sha256 of everything seen; valid once the stream has ended. */
  digest(): Digest {
    this.result ??= `sha256:${this.hash.digest("hex")}`;
    return this.result;
  }
}
