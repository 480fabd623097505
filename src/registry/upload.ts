import { Readable } from "node:stream";
import type { Descriptor } from "../core/oci.js";
import type { BlobReader } from "../core/content.js";
import type { FastPut } from "./fast-put.js";
import { RegistryError, isNetworkFailure, networkError, responseError } from "./registry-error.js";
import { repositoryScope } from "./auth.js";
import type { TransportRequest, TransportResponse } from "./transport.js";

/** UploadResult says how a blob got into the repository. */
export type UploadResult = "uploaded" | "mounted";

/** UploadTarget is the repository an upload goes to: its name, its URLs and its requests. */
export interface UploadTarget {
  /** name is the repository path, e.g. `demo/vm`. */
  readonly name: string;
  url(path: string): URL;
  pushScopes(): string[];
  send(req: TransportRequest): Promise<TransportResponse>;
}

/** UploadOptions tune one upload. */
export interface UploadOptions {
  /** mountFrom names another repository of the same registry that may hold the blob. */
  mountFrom?: string;
  /** chunkSize: larger blobs go in PATCH chunks of this size. */
  chunkSize: number;
  signal?: AbortSignal;
  /**
   * fast: where the client speaks plain HTTP to the registry and the blob comes from a local
   * store, its bytes go from the store's reader straight to the socket (fast-put.ts).
   */
  fast?: { put: FastPut; reader: () => Promise<BlobReader>; onBytes?: (n: number) => void };
}

/** PushSource is where a pushed blob may come from besides its opened content: another repository to mount it from, a local reader for the fast path, and who hears of the bytes that path moves. */
export interface PushSource {
  mountFrom?: string;
  reader?: () => Promise<BlobReader>;
  onBytes?: (n: number) => void;
}

/** CANCEL_DELETE_MS bounds the DELETE of a cancelled upload: Ctrl-C must not wait on a slow registry. */
const CANCEL_DELETE_MS = 2_000;

/**
 * uploadBlob puts one blob into a repository (distribution spec "Pushing blobs"):
 * - `POST …/blobs/uploads/?mount=<digest>&from=<repo>` first when the blob may be in another
 *   repository of the same registry: a 201 means it was mounted and nothing is sent;
 * - otherwise the session the POST opened takes the bytes: one streamed `PUT ?digest=` for
 *   blobs up to `chunkSize`, else `PATCH` chunks with `Content-Range` and a closing `PUT`.
 * The content is opened only when it is needed. A failed or cancelled upload is abandoned
 * (DELETE) and never resent from here: the copy that called this starts over from a HEAD,
 * so no write is applied twice.
 */
export async function uploadBlob(
  repo: UploadTarget,
  desc: Descriptor,
  open: () => Promise<Readable>,
  opts: UploadOptions,
): Promise<UploadResult> {
  const signal = opts.signal;
  const what = `blob ${desc.digest}`;
  const post = repo.url("blobs/uploads/");
  const scopes = repo.pushScopes();
  if (opts.mountFrom && opts.mountFrom !== repo.name) {
    post.searchParams.set("mount", desc.digest);
    post.searchParams.set("from", opts.mountFrom);
    scopes.push(repositoryScope(opts.mountFrom, ["pull"]));
  }
  // Opening a session twice is harmless (the spare one expires), so the POST may be retried.
  const started = await repo.send({
    method: "POST",
    url: post,
    scopes,
    headers: { "content-length": "0" },
    ok: [201, 202],
    retry: true,
    context: what,
    signal,
  });
  await started.body.dump();
  if (started.statusCode === 201 && opts.mountFrom) return "mounted";
  let location = locationOf(started.headers.location, post, what);

  // The body goes through the fast path (a local store's reader straight to the socket) while
  // it takes the requests; if it declines the first one, the general path does it all.
  let fast = opts.fast;
  let reader: BlobReader | undefined;
  let content: Readable | undefined;
  let chunks: ChunkReader | undefined;
  let sentAny = false;
  const sendBody = async (
    method: "PUT" | "PATCH",
    url: URL,
    n: number,
    headers: Record<string, string>,
    ok: number[],
  ): Promise<Record<string, string | string[] | undefined>> => {
    if (fast) {
      reader ??= await fast.reader();
      let answer;
      try {
        answer = await fast.put({ method, url, scopes, headers, signal }, reader, n, fast.onBytes);
      } catch (e) {
        if (isNetworkFailure(e) && !(e instanceof RegistryError)) throw networkError(method, url, e, true);
        throw e;
      }
      if (answer) {
        sentAny = true;
        if (!ok.includes(answer.statusCode))
          throw responseError(method, url, answer.statusCode, answer.body, what);
        return answer.headers;
      }
      if (sentAny) throw networkError(method, url, new Error("the connection could not be made again"), true);
      fast = undefined;
    }
    content ??= await open();
    let body: Readable = content;
    if (method === "PATCH") {
      chunks ??= new ChunkReader(content[Symbol.asyncIterator]() as AsyncIterator<Buffer>);
      body = Readable.from(chunks.take(n), { objectMode: false });
    }
    const res = await repo.send({
      method,
      url,
      scopes,
      headers: { ...headers, "content-length": String(n) },
      body,
      ok,
      retry: false,
      context: what,
      signal,
    });
    await res.body.dump();
    return res.headers;
  };

  try {
    if (desc.size <= opts.chunkSize) {
      location.searchParams.set("digest", desc.digest);
      const put = await sendBody(
        "PUT",
        location,
        desc.size,
        { "content-type": "application/octet-stream" },
        [201],
      );
      checkDigest(put["docker-content-digest"], desc, what);
      return "uploaded";
    }
    for (let offset = 0; offset < desc.size;) {
      const n = Math.min(opts.chunkSize, desc.size - offset);
      const patch = await sendBody(
        "PATCH",
        location,
        n,
        { "content-type": "application/octet-stream", "content-range": `${offset}-${offset + n - 1}` },
        [202],
      );
      offset += n;
      const range = /^(?:bytes=)?0-(\d+)$/.exec(String(patch.range ?? ""));
      if (range && Number(range[1]) !== offset - 1) {
        throw new RegistryError(
          "BLOB_UPLOAD_INVALID",
          `${what}: the registry holds bytes 0-${range[1]} after a chunk ending at ${offset - 1}`,
        );
      }
      location = locationOf(patch.location, location, what);
    }
    location.searchParams.set("digest", desc.digest);
    const put = await repo.send({
      method: "PUT",
      url: location,
      scopes,
      headers: { "content-length": "0" },
      ok: [201],
      retry: false,
      context: what,
      signal,
    });
    await put.body.dump();
    checkDigest(put.headers["docker-content-digest"], desc, what);
    return "uploaded";
  } catch (e) {
    content?.destroy();
    // Best effort: free the registry's half-written session (briefly, when cancelled).
    await repo
      .send({
        method: "DELETE",
        url: location,
        scopes,
        ok: [204, 404],
        retry: false,
        signal: signal?.aborted ? AbortSignal.timeout(CANCEL_DELETE_MS) : undefined,
      })
      .then((r) => r.body.dump())
      .catch(() => undefined);
    throw e;
  } finally {
    reader?.close();
  }
}

function locationOf(h: string | string[] | undefined, base: URL, what: string): URL {
  const v = Array.isArray(h) ? h[0] : h;
  if (!v)
    throw new RegistryError("REGISTRY_ERROR", `${what}: the registry opened an upload without a Location`);
  return new URL(v, base);
}

function checkDigest(h: string | string[] | undefined, desc: Descriptor, what: string): void {
  const got = Array.isArray(h) ? h[0] : h;
  if (got && got !== desc.digest) {
    throw new RegistryError("DIGEST_MISMATCH", `${what}: the registry stored it as ${got}`);
  }
}

/**
 * ChunkReader cuts one byte stream into consecutive pieces of chosen lengths without copying
 * more than the one buffer that straddles a boundary.
 */
class ChunkReader {
  private pending?: Buffer;

  constructor(private readonly it: AsyncIterator<Buffer>) {}

  async *take(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      let buf = this.pending;
      this.pending = undefined;
      if (!buf) {
        const r = await this.it.next();
        if (r.done) return;
        buf = r.value;
      }
      if (buf.length > left) {
        this.pending = buf.subarray(left);
        buf = buf.subarray(0, left);
      }
      left -= buf.length;
      yield buf;
    }
  }
}
