import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import type { Dispatcher } from "undici";
import { OvmsError } from "../spec/errors.js";
import { RegistryError, isNetworkFailure, networkError } from "./registry-error.js";

/** DownloadOptions describe one blob download that survives dropped connections. */
export interface DownloadOptions {
  /** size is the declared size: reading stops there, and more bytes are an error. */
  size: number;
  /** what names the blob in errors, e.g. `blob sha256:…`. */
  what: string;
  url: URL;
  /** open sends the GET, with `Range: bytes=<offset>-` when offset > 0; it answers 200 or 206. */
  open(offset: number): Promise<Dispatcher.ResponseData>;
  /** maxResumes bounds how many times a broken download is picked up again (default 5). */
  maxResumes?: number;
  /** onResume is told each time the download goes on from `offset` after a drop. */
  onResume?(offset: number): void;
  backoff(attempt: number): number;
  highWaterMark?: number;
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
  const maxResumes = o.maxResumes ?? 5;
  async function* parts(): AsyncGenerator<Buffer> {
    let offset = 0;
    let resumes = 0;
    const again = async (e: unknown): Promise<void> => {
      if (!isNetworkFailure(e) || resumes >= maxResumes) {
        if (isNetworkFailure(e) && !(e instanceof RegistryError)) throw networkError("GET", o.url, e, true);
        throw e;
      }
      resumes++;
      o.onResume?.(offset);
      await sleep(o.backoff(resumes));
    };
    for (;;) {
      let res: Dispatcher.ResponseData;
      try {
        res = await o.open(offset);
      } catch (e) {
        await again(e);
        continue;
      }
      let skip = 0;
      if (offset > 0) {
        if (res.statusCode === 206) {
          const start = /^bytes (\d+)-/.exec(String(res.headers["content-range"] ?? ""))?.[1];
          if (Number(start) !== offset) {
            await res.body.dump();
            throw new RegistryError(
              "REGISTRY_ERROR",
              `${o.what}: asked to resume at byte ${offset}, the registry answered Content-Range "${res.headers["content-range"] ?? ""}"`,
            );
          }
        } else {
          skip = offset;
        }
      }
      try {
        for await (const c of res.body) {
          let chunk = c as Buffer;
          if (skip > 0) {
            if (chunk.length <= skip) {
              skip -= chunk.length;
              continue;
            }
            chunk = chunk.subarray(skip);
            skip = 0;
          }
          offset += chunk.length;
          if (offset > o.size) {
            throw new OvmsError("SIZE_MISMATCH", `${o.what}: the registry sent more than the declared ${o.size} bytes`, {
              details: { want: o.size },
            });
          }
          yield chunk;
        }
      } catch (e) {
        await again(e);
        continue;
      }
      if (offset >= o.size) return;
      // The body ended cleanly but short: the same as a drop.
      await again(Object.assign(new Error(`body ended after ${offset} of ${o.size} bytes`), { code: "UND_ERR_SOCKET" }));
    }
  }
  return Readable.from(parts(), { objectMode: false, highWaterMark: o.highWaterMark ?? 1 << 20 });
}
