import { Transform, pipeline, type Readable } from "node:stream";
import { parentPort } from "node:worker_threads";
import { OvmsError } from "../core/errors.js";
import type { Descriptor } from "../core/oci.js";
import { Store } from "../store/store.js";
import type { AuthState } from "./auth.js";
import { RegistryClient } from "./client.js";
import { RegistryError } from "./registry-error.js";

/**
 * The body of a transfer worker thread (see transfer-workers.ts): it moves one large blob
 * between a registry repository and the local store — download + sha256 + write + fsync, or
 * read + sha256 + upload — so several blobs are hashed on several cores at once. It runs the
 * same code as the main thread (Repository.fetch into Store.ingest, Repository.pushBlob from
 * Store.fetch), with the client settings and authentication state the main thread learnt.
 */

/** TransferJob is one blob to move, as posted to a worker. */
export interface TransferJob {
  id: number;
  kind: "pull" | "push";
  registry: string;
  name: string;
  client: {
    plainHttp: boolean;
    caFile?: string;
    userAgent: string;
    chunkSize: number;
    highWaterMark: number;
    retry: { attempts: number; baseMs: number; maxMs: number };
  };
  auth: AuthState;
  desc: Descriptor;
  storeRoot: string;
  progress: boolean;
}

/** TransferMessage is what a worker posts back about a job. */
export type TransferMessage =
  | { id: number; type: "progress"; bytes: number }
  | { id: number; type: "done"; how: "transferred" | "mounted" }
  | { id: number; type: "error"; error: SerializedError };

/** SerializedError carries an OvmsError (or any error) across threads with its code and fields. */
export interface SerializedError {
  name: string;
  code?: string;
  message: string;
  details?: Record<string, unknown>;
  transient?: boolean;
  attempts?: number;
  method?: string;
  url?: string;
  status?: number;
}

const clients = new Map<string, RegistryClient>();
const stores = new Map<string, Promise<Store>>();

function clientFor(job: TransferJob): RegistryClient {
  const key = JSON.stringify(job.client);
  let c = clients.get(key);
  if (!c) {
    // Credentials come with each job's auth state, never from the docker config again.
    c = new RegistryClient({ ...job.client, credentials: async () => undefined });
    clients.set(key, c);
  }
  return c;
}

function storeFor(root: string): Promise<Store> {
  let s = stores.get(root);
  if (!s) {
    s = Store.open(root);
    stores.set(root, s);
  }
  return s;
}

async function run(job: TransferJob): Promise<"transferred" | "mounted"> {
  const client = clientFor(job);
  client.authorizer(job.registry).restore(job.auth);
  const repo = client.repository(
    { registry: job.registry, repository: job.name },
    { push: job.kind === "push" },
  );
  const store = await storeFor(job.storeRoot);
  let pending = 0;
  let last = Date.now();
  const flushProgress = () => {
    if (pending)
      parentPort!.postMessage({ id: job.id, type: "progress", bytes: pending } satisfies TransferMessage);
    pending = 0;
    last = Date.now();
  };
  const tick = (n: number) => {
    pending += n;
    if (Date.now() - last > 50) flushProgress();
  };
  const count = (s: Readable): Readable => {
    if (!job.progress) return s;
    const t = new Transform({
      transform(chunk: Buffer, _e, cb) {
        pending += chunk.length;
        const now = Date.now();
        if (now - last > 50) {
          parentPort!.postMessage({ id: job.id, type: "progress", bytes: pending } satisfies TransferMessage);
          pending = 0;
          last = now;
        }
        cb(null, chunk);
      },
      flush(cb) {
        if (pending)
          parentPort!.postMessage({ id: job.id, type: "progress", bytes: pending } satisfies TransferMessage);
        pending = 0;
        cb();
      },
    });
    return pipeline(s, t, () => undefined);
  };
  if (job.kind === "pull") {
    // Straight from the socket's read buffer into the store's hash and file: no copy.
    const writer = await store.openIngest({ digest: job.desc.digest, size: job.desc.size });
    if (!writer) return "transferred";
    try {
      await repo.fetchInto(job.desc, writer, { onBytes: job.progress ? tick : undefined });
      flushProgress();
      await writer.commit();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    return "transferred";
  }
  const how = await repo.pushBlob(job.desc, async () => count(await store.fetch(job.desc)));
  return how === "mounted" ? "mounted" : "transferred";
}

/** serializeError keeps what the main thread needs to rebuild the error. */
export function serializeError(e: unknown): SerializedError {
  const err = e as Partial<RegistryError> & Error;
  return {
    name: err?.name ?? "Error",
    code: err instanceof OvmsError ? err.code : (err as { code?: string })?.code,
    message: err?.message ?? String(e),
    details: err instanceof OvmsError ? err.details : undefined,
    transient: err instanceof RegistryError ? err.transient : undefined,
    attempts: err instanceof RegistryError ? err.attempts : undefined,
    method: err instanceof RegistryError ? err.method : undefined,
    url: err instanceof RegistryError ? err.url : undefined,
    status: err instanceof RegistryError ? err.status : undefined,
  };
}

parentPort?.on("message", (job: TransferJob) => {
  run(job).then(
    (how) => parentPort!.postMessage({ id: job.id, type: "done", how } satisfies TransferMessage),
    (e) =>
      parentPort!.postMessage({
        id: job.id,
        type: "error",
        error: serializeError(e),
      } satisfies TransferMessage),
  );
});
