import { connect, type Socket } from "node:net";
import type { BlobReader } from "../core/content.js";
import { cancelled, onAbort } from "./cancel.js";
import { parseHead } from "./fast-get.js";

/**
 * fastPutFrom sends one PUT or PATCH whose body is the next `length` bytes of `reader`, over
 * plain HTTP (loopback and --plain-http registries), where an upload's throughput is
 * everything: the counterpart of fast-get.ts. Through undici and streams, every 64 KiB of a
 * push was a fresh buffer, a trip through the stream machinery and garbage to collect: a
 * 512 MiB push cost the client 2.2 s of CPU on 2 cores, beside a registry that needs the same
 * cores (an experiment with this loop: 0.7 s, and the push 1.8x faster). Here the reader's
 * own buffers go straight to the socket and back to the reader once written.
 *
 * It resolves with the answer's status and headers (the body, small, is read and returned as
 * text), `false` when the connection fails before a byte of the request went out (the caller
 * may take the general path), and rejects when it breaks later: an Error with a network
 * code, for the caller to turn into a RegistryError. An answer that comes before the whole
 * body went out (a refusal) stops the sending. One request per connection; `signal` closes it.
 */
export function fastPutFrom(
  method: "PUT" | "PATCH",
  url: URL,
  headers: Record<string, string>,
  reader: BlobReader,
  length: number,
  opts: { timeoutMs?: number; signal?: AbortSignal; onBytes?: (n: number) => void } = {},
): Promise<FastPutAnswer | false> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const what = `${method} "${url.origin}${url.pathname}"`;
  if (opts.signal?.aborted) return Promise.reject(cancelled(what, opts.signal));
  return new Promise((resolve, reject) => {
    let sent = 0;
    let inflight = 0;
    let started = false;
    let settled = false;
    let answer: FastPutAnswer | undefined;
    let head = Buffer.alloc(0);
    let bodyLeft = -1;
    let body = "";
    const finish = (e?: Error, result?: FastPutAnswer | false) => {
      if (settled) return;
      settled = true;
      stopListening();
      socket.destroy();
      if (e) reject(e);
      else resolve(result!);
    };
    const pump = () => {
      // At most MAX_INFLIGHT buffers in the socket's queue: the reader lends no more than that.
      while (!settled && !answer && sent < length && inflight < MAX_INFLIGHT) {
        let chunk: Uint8Array | undefined;
        try {
          chunk = reader.next(length - sent);
        } catch (e) {
          finish(e as Error);
          return;
        }
        if (!chunk) {
          finish(new Error(`${what}: the content ended after ${sent} of ${length} bytes`));
          return;
        }
        sent += chunk.length;
        inflight++;
        const c = chunk;
        const more = socket.write(c, () => {
          inflight--;
          reader.release(c);
          opts.onBytes?.(c.length);
          pump();
        });
        if (!more) return; // the write callbacks pump again as the queue drains
      }
    };
    const onData = (d: Buffer) => {
      if (answer) {
        body += d.toString("utf8");
      } else {
        head = Buffer.concat([head, d]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) {
          if (head.length > MAX_HEAD) finish(new Error(`${what}: response head too large`));
          return;
        }
        const parsed = parseHead(head.subarray(0, end).toString("latin1"));
        if (!parsed) {
          finish(Object.assign(new Error(`${what}: not an HTTP answer`), { code: "UND_ERR_SOCKET" }));
          return;
        }
        answer = { statusCode: parsed.statusCode, headers: parsed.headers, body: "" };
        const len = parsed.headers["content-length"];
        bodyLeft = len !== undefined && /^\d+$/.test(len) ? Number(len) : -1;
        body = head.subarray(end + 4).toString("utf8");
      }
      if (bodyLeft >= 0 && Buffer.byteLength(body) >= bodyLeft) {
        answer.body = body;
        finish(undefined, answer);
      }
    };
    const socket: Socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(url.port || 80),
    });
    const stopListening = onAbort(opts.signal, () => finish(cancelled(what, opts.signal)));
    socket.setNoDelay(true);
    socket.setTimeout(timeoutMs, () =>
      finish(Object.assign(new Error(`no progress for ${timeoutMs} ms`), { code: "ETIMEDOUT" })),
    );
    socket.on("data", onData);
    socket.on("error", (e) => {
      // Nothing went out yet: the general path may try the same request.
      if (!started) finish(undefined, false);
      else finish(e);
    });
    socket.on("end", () => {
      // An answer without Content-Length ends with the connection.
      if (answer && bodyLeft < 0) {
        answer.body = body;
        finish(undefined, answer);
      }
    });
    socket.on("close", () =>
      finish(
        Object.assign(new Error(`connection closed after ${sent} of ${length} bytes, before an answer`), {
          code: "UND_ERR_SOCKET",
        }),
      ),
    );
    socket.on("connect", () => {
      started = true;
      const lines = [
        `${method} ${url.pathname}${url.search} HTTP/1.1`,
        `Host: ${url.host}`,
        "Connection: close",
        `Content-Length: ${length}`,
      ];
      for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
      socket.write(lines.join("\r\n") + "\r\n\r\n");
      pump();
    });
  });
}

/**
 * FastPut sends a PUT or PATCH straight from a reader over plain HTTP (fastPutFrom), with the
 * Authorization the registry wants; it resolves false, before any byte, when it declines.
 */
export type FastPut = (
  req: {
    method: "PUT" | "PATCH";
    url: URL;
    scopes: string[];
    headers: Record<string, string>;
    signal?: AbortSignal;
  },
  reader: BlobReader,
  length: number,
  onBytes?: (n: number) => void,
) => Promise<FastPutAnswer | false>;

/** FastPutAnswer is the registry's answer to a fast PUT or PATCH. */
export interface FastPutAnswer {
  statusCode: number;
  /** headers, names in lower case. */
  headers: Record<string, string>;
  body: string;
}

/** MAX_INFLIGHT: buffers of the reader queued on the socket at once. */
const MAX_INFLIGHT = 4;
const MAX_HEAD = 64 << 10;
