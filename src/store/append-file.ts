import { closeSync, constants, fsyncSync, openSync, write, writeSync } from "node:fs";
import { giveAligned, takeAligned } from "./aligned.js";

/**
 * AppendFile writes a new file front to back and makes it durable, with O_DIRECT where the
 * filesystem takes it.
 *
 * Why: a buffered write puts every byte in a fresh page-cache page, and on the VMs this runs
 * on a page fault is expensive (nested virtualization: touching 296 MiB of new memory takes
 * 0.25–0.7 s). A pull spent most of its time there: `curl -o file` of a 296 MiB blob took
 * 0.80 s against 0.13 s to /dev/null, while `dd oflag=direct bs=1M` wrote the same bytes in
 * 0.13 s (and its fsync took 0.4 ms, against 0.1 s after buffered writes). So the bytes are
 * gathered in reused staging buffers of aligned memory and written past the page cache in
 * whole blocks, in the background (libuv's thread pool) while the next bytes arrive; only the
 * last partial block goes through the page cache (O_DIRECT wants aligned lengths), then one
 * fsync makes it all durable.
 *
 * Where O_DIRECT is refused (tmpfs refuses the open, some filesystems the first write), the
 * same bytes go through an ordinary descriptor: slower, never wrong. `direct` says which.
 */
export class AppendFile {
  /** bytes is how many bytes were appended. */
  bytes = 0;
  /** direct: the blocks go past the page cache (false after a fallback). */
  direct: boolean;
  private readonly dfd?: number;
  private readonly bfd: number;
  private staging?: Buffer;
  private fill = 0;
  private flushed = 0;
  private closed = false;
  /** Direct writes under way in libuv's thread pool, and the first of them to fail. */
  private inflight = 0;
  private failure?: Error;
  private drained?: () => void;

  /** open creates `path` (it must not exist), readable and writable by its owner only. */
  constructor(private readonly path: string) {
    // Created with an ordinary open (the mode and O_EXCL are what matter), then reopened direct.
    this.bfd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      this.dfd = openSync(path, constants.O_WRONLY | constants.O_DIRECT);
      this.staging = takeAligned(STAGING);
    } catch {
      this.dfd = undefined;
    }
    this.direct = this.dfd !== undefined;
  }

  /**
   * append takes `chunk` before it returns (the caller may reuse it): written, or copied into
   * a staging buffer. A write that failed in the background is thrown here or by finish.
   */
  append(chunk: Uint8Array): void {
    if (this.closed) throw new Error(`${this.path}: append after close`);
    if (this.failure) throw this.failure;
    if (!this.staging) {
      this.writeBuffered(chunk, this.flushed);
      this.flushed += chunk.length;
      this.bytes += chunk.length;
      return;
    }
    for (let off = 0; off < chunk.length;) {
      const n = Math.min(chunk.length - off, this.staging.length - this.fill);
      this.staging.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      if (this.fill === this.staging.length) this.flushFull();
    }
    this.bytes += chunk.length;
  }

  /** finish writes what is staged, fsyncs and closes: the bytes are durable when it resolves. */
  async finish(): Promise<void> {
    await this.drain();
    if (this.failure) throw this.failure;
    if (this.staging && this.fill > 0) {
      // Whole blocks go direct; the partial block at the end through the page cache.
      const whole = this.fill - (this.fill % BLOCK);
      const data = this.staging.subarray(0, this.fill);
      if (whole > 0) this.writeDirectSync(data.subarray(0, whole), this.flushed);
      if (whole < data.length) this.writeBuffered(data.subarray(whole), this.flushed + whole);
      this.flushed += data.length;
      this.fill = 0;
    }
    fsyncSync(this.bfd);
    await this.close();
  }

  /** close closes without making anything durable (the caller removes the file), once the writes under way end. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A descriptor closed under a pending write could be reused by another open meanwhile.
    await this.drain();
    if (this.staging) giveAligned(this.staging);
    this.staging = undefined;
    if (this.dfd !== undefined) closeSync(this.dfd);
    closeSync(this.bfd);
  }

  /**
   * flushFull writes the full staging buffer at `flushed`: in the background while fewer than
   * MAX_INFLIGHT writes are under way (the next bytes go to another buffer meanwhile, so
   * hashing and the disk overlap), else here and now — which is also the back-pressure.
   */
  private flushFull(): void {
    const buf = this.staging!;
    const pos = this.flushed;
    this.flushed += buf.length;
    this.fill = 0;
    if (!this.direct || this.inflight >= MAX_INFLIGHT) {
      this.writeDirectSync(buf, pos);
      return;
    }
    this.staging = takeAligned(STAGING);
    this.inflight++;
    write(this.dfd!, buf, 0, buf.length, pos, (err, n) => {
      try {
        if (err && err.code !== "EINVAL") throw err;
        if (err) this.direct = false;
        // A short write, or a refused one: the rest through the page cache.
        const done = err ? 0 : n;
        if (done < buf.length) this.writeBuffered(buf.subarray(done), pos + done);
      } catch (e) {
        this.failure ??= e as Error;
      }
      giveAligned(buf);
      if (--this.inflight === 0) this.drained?.();
    });
  }

  private drain(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => (this.drained = resolve));
  }

  /** writeDirectSync writes whole blocks at `pos`, direct when it can, else through the page cache. */
  private writeDirectSync(data: Uint8Array, pos: number): void {
    if (this.direct) {
      try {
        for (let off = 0; off < data.length;)
          off += writeSync(this.dfd!, data, off, data.length - off, pos + off);
        return;
      } catch (e) {
        // Alignment the filesystem does not take: everything from here on goes buffered.
        if ((e as NodeJS.ErrnoException).code !== "EINVAL") throw e;
        this.direct = false;
      }
    }
    this.writeBuffered(data, pos);
  }

  private writeBuffered(data: Uint8Array, pos: number): void {
    for (let off = 0; off < data.length;) off += writeSync(this.bfd, data, off, data.length - off, pos + off);
  }
}

/**
 * MAX_INFLIGHT: direct writes of one file under way at once. What matters is the bytes in
 * flight: a 512 MiB pull took ~0.67 s with 16 MiB in flight per file (1×16, 2×8, 4×4, 8×2 MiB
 * alike) and ~0.79 s with 4 MiB (1×4), its workers then waiting on the disk a tenth of a second each.
 */
const MAX_INFLIGHT = 4;

/**
 * BLOCK: direct writes are whole multiples of this, at offsets that are too (4 KiB covers
 * disks with 512-byte and 4 KiB logical blocks).
 */
const BLOCK = 4096;

/** STAGING: the size of one direct write (`dd oflag=direct` here: 1 MiB blocks 2.4 GB/s, 4 MiB 2.9 GB/s, 128 KiB 0.9 GB/s). */
const STAGING = 4 << 20;
