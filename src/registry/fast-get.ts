import { connect, type Socket } from "node:net";
import { cancelled, onAbort } from "./cancel.js";

/**
 * fastGetInto is a minimal HTTP/1.1 GET for blob bodies over plain HTTP (loopback and
 * --plain-http registries), used where throughput is everything. A Node socket normally
 * delivers 64 KiB per read in a freshly allocated buffer; each one costs page faults, a
 * garbage-collection share, a trip through the HTTP parser and several stream hops. Here the
 * socket reads straight into one reused buffer (`onread`) and every read is handed,
 * synchronously, to `target.data` (which hashes and writes it before returning): no copy, no
 * allocation per read. On a 2-core VM this halves the CPU a pull costs.
 *
 * It only takes the easy answers: a 200 or 206 with a Content-Length, no transfer coding, and
 * what `target.accept` agrees to. For anything else (401, redirects, 429, 5xx, chunked bodies)
 * or a connection that fails before the response head, it resolves `false` before any body
 * byte is delivered, and the caller repeats the request on the general path (undici, with
 * authentication, redirects and retries). A connection lost in the body rejects with a
 * network error code (the caller resumes with Range). One request per connection. When
 * `signal` fires, the socket is closed at once and the promise rejects with CANCELLED.
 */

/** FastGetTarget receives a response: `accept` decides on its head, `data` gets the body in order. */
export interface FastGetTarget {
  accept(status: number, headers: Record<string, string>): boolean;
  /** data must be done with `view` when it returns: the buffer is read into again. */
  data(view: Buffer): void;
}

/**
 * READ_BUFFER is small enough to stay in the CPU cache while it is received into, hashed and
 * written out (measured: 128 KiB pulls 2 GiB ~20% faster than 1 MiB, and with half the
 * kernel time).
 */
const READ_BUFFER = 128 << 10;
const MAX_HEAD = 64 << 10;

/** fastGetInto: see above. `timeoutMs` (default 60 s) bounds the wait for each read. */
export function fastGetInto(
  url: URL,
  headers: Record<string, string>,
  target: FastGetTarget,
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<boolean> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const what = `GET "${url.origin}${url.pathname}"`;
  if (opts.signal?.aborted) return Promise.reject(cancelled(what, opts.signal));
  return new Promise((resolve, reject) => {
    let head: Buffer | undefined = Buffer.alloc(0);
    let left = 0;
    let state: "head" | "body" | "done" = "head";
    /** finish settles once; `final` errors (the target's, a cancel) are never handed to the general path. */
    const finish = (e?: Error, result = true, final = false) => {
      if (state === "done") return;
      const before = state === "head";
      state = "done";
      stopListening();
      socket.destroy();
      if (!e) resolve(result);
      // Before the head nothing was delivered: the general path can do it all again.
      else if (before && !final) resolve(false);
      else reject(e);
    };
    const deliver = (b: Buffer) => {
      const view = b.length > left ? b.subarray(0, left) : b;
      left -= view.length;
      try {
        if (view.length) target.data(view);
      } catch (e) {
        finish(e as Error, true, true);
        return;
      }
      if (left === 0) finish();
    };
    const socket: Socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(url.port || 80),
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER),
        callback: (n: number, buf: Uint8Array) => {
          if (state === "done") return false;
          const b = Buffer.from(buf.buffer, buf.byteOffset, n);
          if (state === "body") {
            deliver(b);
            return true;
          }
          head = Buffer.concat([head!, b]);
          const end = head.indexOf("\r\n\r\n");
          if (end < 0) {
            if (head.length > MAX_HEAD) finish(new Error("response head too large"));
            return true;
          }
          const parsed = parseHead(head.subarray(0, end).toString("latin1"));
          const rest = head.subarray(end + 4);
          head = undefined;
          const len = parsed?.headers["content-length"];
          let take = false;
          try {
            take =
              !!parsed &&
              (parsed.statusCode === 200 || parsed.statusCode === 206) &&
              len !== undefined &&
              /^\d+$/.test(len) &&
              !parsed.headers["transfer-encoding"] &&
              target.accept(parsed.statusCode, parsed.headers);
          } catch (e) {
            finish(e as Error, true, true);
            return false;
          }
          if (!take) {
            finish(undefined, false);
            return false;
          }
          state = "body";
          left = Number(len);
          if (left === 0) finish();
          else if (rest.length) deliver(rest);
          return true;
        },
      },
    });
    const stopListening = onAbort(opts.signal, () => finish(cancelled(what, opts.signal), true, true));
    socket.setNoDelay(true);
    socket.setTimeout(timeoutMs, () =>
      finish(Object.assign(new Error(`no data for ${timeoutMs} ms`), { code: "UND_ERR_BODY_TIMEOUT" })),
    );
    socket.on("error", (e) => finish(e));
    socket.on("close", () =>
      // A body cut short is a dropped connection, which the download resumes.
      finish(
        Object.assign(new Error(`connection closed with ${left} body bytes missing`), {
          code: "UND_ERR_SOCKET",
        }),
      ),
    );
    socket.on("connect", () => {
      const lines = [
        `GET ${url.pathname}${url.search} HTTP/1.1`,
        `Host: ${url.host}`,
        "Connection: close",
        "Accept-Encoding: identity",
      ];
      for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
      socket.write(lines.join("\r\n") + "\r\n\r\n");
    });
  });
}

export function parseHead(text: string): { statusCode: number; headers: Record<string, string> } | undefined {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (!m) return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
  }
  return { statusCode: Number(m[1]), headers };
}
