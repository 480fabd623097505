import { Readable } from "node:stream";
import { OvmsError } from "../core/errors.js";
import { cancelled, onAbort, sleep } from "./cancel.js";
import { RegistryError, isNetworkFailure, networkError } from "./registry-error.js";

/** COALESCE is the size downloads are passed on in (see ResumableBody.flushPending). */
const COALESCE = 1 << 20;

/** BodyResponse is what a download reads of a response: undici's, or fastGet's. */
export interface BodyResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
}

/** DownloadOptions describe one blob download that survives dropped connections. */
export interface DownloadOptions {
  /** size is the declared size: reading stops there, and more bytes are an error. */
  size: number;
  /** what names the blob in errors, e.g. `blob sha256:…`. */
  what: string;
  url: URL;
  /** open sends the GET, with `Range: bytes=<offset>-` when offset > 0; it answers 200 or 206. */
  open(offset: number): Promise<BodyResponse>;
  /** maxResumes bounds how many times a broken download is picked up again (default 5). */
  maxResumes?: number;
  /** onResume is told each time the download goes on from `offset` after a drop. */
  onResume?(offset: number): void;
  /** backoff is the wait before resume number `attempt` (see retry-policy.ts). */
  backoff(attempt: number): number;
  highWaterMark?: number;
  /** signal ends the stream with CANCELLED, its response closed. */
  signal?: AbortSignal;
}

/**
 * resumableDownload returns the bytes of a blob as one stream, even when the connection drops
 * in the middle: it asks again from where it stopped with `Range: bytes=<offset>-`
 * (distribution spec "Pulling blobs", RFC 9110 §14.2), and skips what it already has when a
 * registry ignores Range and sends the whole blob again. The consumer (the store's ingest and
 * its hasher) sees one continuous stream, so the digest is computed across the parts; nothing
 * is verified here, only the size is bounded.
 */
export function resumableDownload(o: DownloadOptions): Readable {
  return new ResumableBody(o);
}

/**
 * ResumableBody relays the response bodies of successive ranged GETs into one Readable,
 * chunk for chunk (no copy, backpressure passed on by pausing the response).
 */
class ResumableBody extends Readable {
  private offset = 0;
  private resumes = 0;
  private skip = 0;
  private body?: Readable;
  private opening = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private stopListening: () => void = () => undefined;

  constructor(private readonly o: DownloadOptions) {
    super({ highWaterMark: o.highWaterMark ?? 1 << 20 });
    this.stopListening = onAbort(o.signal, () => this.destroy(cancelled(o.what, o.signal)));
  }

  override _read(): void {
    if (this.body) this.body.resume();
    else if (!this.opening) void this.openAt();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.stopListening();
    this.body?.destroy();
    this.body = undefined;
    cb(err);
  }

  private async openAt(): Promise<void> {
    this.opening = true;
    let res: BodyResponse;
    try {
      res = await this.o.open(this.offset);
    } catch (e) {
      this.opening = false;
      // The request layer already retried this one: resuming it again would only multiply the wait.
      if (e instanceof RegistryError && e.attempts > 1) this.destroy(e);
      else await this.again(e);
      return;
    }
    this.opening = false;
    if (this.destroyed) {
      res.body.destroy();
      return;
    }
    this.skip = 0;
    if (this.offset > 0) {
      if (res.statusCode === 206) {
        const start = /^bytes (\d+)-/.exec(String(res.headers["content-range"] ?? ""))?.[1];
        if (Number(start) !== this.offset) {
          res.body.destroy();
          this.destroy(
            new RegistryError(
              "REGISTRY_ERROR",
              `${this.o.what}: asked to resume at byte ${this.offset}, the registry answered Content-Range "${res.headers["content-range"] ?? ""}"`,
            ),
          );
          return;
        }
      } else {
        // The registry ignored Range and sends the whole blob: drop what we already have.
        this.skip = this.offset;
      }
    }
    const body = res.body;
    this.body = body;
    body.on("data", (c: Buffer) => {
      let chunk = c;
      if (this.skip > 0) {
        if (chunk.length <= this.skip) {
          this.skip -= chunk.length;
          return;
        }
        chunk = chunk.subarray(this.skip);
        this.skip = 0;
      }
      this.offset += chunk.length;
      if (this.offset > this.o.size) {
        this.destroy(
          new OvmsError(
            "DIGEST_MISMATCH",
            `${this.o.what}: the registry sent more than the declared ${this.o.size} bytes`,
            {
              details: { want: this.o.size },
            },
          ),
        );
        return;
      }
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes >= COALESCE || this.offset >= this.o.size) this.flushPending(body);
    });
    body.once("end", () => {
      if (this.body !== body) return;
      this.flushPending();
      this.body = undefined;
      if (this.offset >= this.o.size) this.push(null);
      // The body ended cleanly but short: the same as a drop.
      else
        void this.again(
          Object.assign(new Error(`body ended after ${this.offset} of ${this.o.size} bytes`), {
            code: "UND_ERR_SOCKET",
          }),
        );
    });
    body.once("error", (e) => {
      if (this.body !== body) return;
      // What arrived before the drop is good: pass it on, then resume after it.
      this.flushPending();
      this.body = undefined;
      void this.again(e);
    });
  }

  /**
   * flushPending passes the gathered chunks on as one buffer. Sockets deliver 64 KiB at a
   * time; one copy into ~1 MiB pieces makes every later step (hash, write, progress) run 16
   * times less often, which on a VM (where each write wakes a thread-pool thread) is most of
   * the CPU a download costs.
   */
  private flushPending(body?: Readable): void {
    if (this.pendingBytes === 0) return;
    const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.push(buf)) body?.pause();
  }

  /** again resumes after a network failure, or ends the stream with the error. */
  private async again(e: unknown): Promise<void> {
    if (this.destroyed) return;
    if (!isNetworkFailure(e) || this.resumes >= (this.o.maxResumes ?? 5)) {
      this.destroy(
        isNetworkFailure(e) && !(e instanceof RegistryError)
          ? networkError("GET", this.o.url, e, true)
          : (e as Error),
      );
      return;
    }
    this.resumes++;
    this.o.onResume?.(this.offset);
    try {
      await sleep(this.o.backoff(this.resumes), this.o.signal);
    } catch {
      // Cancelled while waiting: the abort listener has ended the stream already.
      return;
    }
    if (!this.destroyed) await this.openAt();
  }
}
