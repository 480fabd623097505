import { open, stat } from "node:fs/promises";
import { PassThrough, type Readable } from "node:stream";
import type { LogRecord } from "../types.js";

/**
 * serialLog streams the serial console file `path` as LogRecords, one per line. With `tail`
 * it starts with the last lines only (complete ones, when following). With `follow` and
 * `ended` (the instance still runs) it keeps polling the file for new lines until `ended`
 * resolves or the stream is destroyed; a last line without a newline is given at the end.
 * Records carry `stream` (default `serial`; a container's stderr file is read as `stderr`).
 */
export async function serialLog(
  path: string,
  opts: { follow?: boolean; tail?: number; ended?: Promise<void>; stream?: LogRecord["stream"] } = {},
): Promise<Readable> {
  const stream = opts.stream ?? "serial";
  const out = new PassThrough({ objectMode: true });
  let offset = 0;
  let partial = "";
  const emit = (text: string, final: boolean): LogRecord[] => {
    partial += text;
    const lines = partial.split(/\r?\n/);
    partial = final ? "" : lines.pop()!;
    if (final && lines[lines.length - 1] === "") lines.pop();
    const ts = new Date().toISOString();
    return lines.map((line) => ({ ts, stream, line }));
  };
  // One read at a time: a poll that takes longer than the interval (a busy host) must not run
  // beside the next one, which would read the same bytes twice or find the offset already past
  // the size it saw.
  let reading: Promise<string> | undefined;
  const readMore = (): Promise<string> => {
    const next = (reading ?? Promise.resolve("")).then(readOnce, readOnce);
    reading = next.catch(() => "");
    return next;
  };
  const readOnce = async (): Promise<string> => {
    const st = await stat(path).catch(() => undefined);
    if (!st || st.size <= offset) return "";
    const fh = await open(path, "r");
    try {
      const buf = Buffer.alloc(st.size - offset);
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      offset += bytesRead;
      return buf.subarray(0, bytesRead).toString("utf8");
    } finally {
      await fh.close();
    }
  };
  let records = emit(await readMore(), !opts.follow);
  if (opts.tail !== undefined) records = opts.tail === 0 ? [] : records.slice(-opts.tail);
  for (const r of records) out.write(r);
  if (!opts.follow || !opts.ended) {
    for (const r of emit("", true)) out.write(r);
    out.end();
    return out;
  }
  let done = false;
  const poll = setInterval(async () => {
    if (done) return;
    const text = await readMore().catch(() => "");
    // Reads are chained, so text read before finish() began is written before its end.
    if (!out.writableEnded && !out.destroyed) for (const r of emit(text, false)) out.write(r);
  }, 50);
  const finish = async () => {
    if (done) return;
    done = true;
    clearInterval(poll);
    for (const r of emit(await readMore(), true)) out.write(r);
    out.end();
  };
  void opts.ended.then(finish);
  out.on("close", () => {
    done = true;
    clearInterval(poll);
  });
  return out;
}

/**
 * mergeRecords interleaves record streams as their records come (each stream's own order is
 * kept) and ends when all have ended; destroying it destroys them.
 */
export function mergeRecords(streams: Readable[]): Readable {
  const out = new PassThrough({ objectMode: true });
  let open = streams.length;
  for (const s of streams) {
    s.on("data", (r) => {
      if (!out.write(r)) {
        s.pause();
        out.once("drain", () => s.resume());
      }
    });
    s.on("end", () => {
      if (--open === 0) out.end();
    });
    s.on("error", (e) => out.destroy(e));
  }
  out.on("close", () => streams.forEach((s) => s.destroy()));
  return out;
}

/**
 * watchFirstOutput polls the serial console file `path` until the guest has written to it,
 * then calls `onOutput` once (boot_ms: start request to first console output). It stops early
 * when `booting` says the instance is gone. Returns the function that stops it.
 */
export function watchFirstOutput(path: string, booting: () => boolean, onOutput: () => void): () => void {
  const t = setInterval(async () => {
    const st = await stat(path).catch(() => undefined);
    if (!booting()) return clearInterval(t);
    if (st && st.size > 0) {
      clearInterval(t);
      onOutput();
    }
  }, 10);
  return () => clearInterval(t);
}
