import { Transform, pipeline, type Readable } from "node:stream";
import { parentPort } from "node:worker_threads";
import type { ContentStore, StoreHandoff } from "../core/content.js";
import { OvmsError } from "../core/errors.js";
import type { Descriptor } from "../core/oci.js";
import { Store } from "../store/store.js";
import { cancelled } from "./cancel.js";
import { RegistryClient } from "./client.js";
import type { RegistryHandoff } from "./registry-endpoint.js";
import { RegistryError } from "./registry-error.js";

/**
 * The body of a transfer worker thread (see transfer-workers.ts): it moves one large blob
 * between two stores described by their handoffs — typically download + sha256 + write +
 * fsync, or read + sha256 + upload — so several blobs are hashed on several cores at once. It
 * runs the same code as the main thread (Repository.fetchInto into Store.openIngest, or the
 * destination's push from the source's fetch), with the client settings and authentication
 * state the main thread learnt. A job is cancelled by a message; what it half-wrote goes.
 */

/** LayoutHandoff is the local store as plain data (what Store declares as its handoff). */
export interface LayoutHandoff extends StoreHandoff {
  readonly kind: "layout";
  root: string;
}

/** TransferJob is one blob to move, as posted to a worker. */
export interface TransferJob {
  id: number;
  src: StoreHandoff;
  dst: StoreHandoff;
  desc: Descriptor;
  progress: boolean;
}

/** TransferCommand is what the main thread posts: a job to run, or one to cancel. */
export type TransferCommand = { type: "run"; job: TransferJob } | { type: "cancel"; id: number };

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
const running = new Map<number, AbortController>();

function isLayout(h: StoreHandoff): h is LayoutHandoff {
  return h.kind === "layout";
}

function isRegistry(h: StoreHandoff): h is RegistryHandoff {
  return h.kind === "registry";
}

function openLayout(h: LayoutHandoff): Promise<Store> {
  let s = stores.get(h.root);
  if (!s) {
    s = Store.open(h.root);
    stores.set(h.root, s);
  }
  return s;
}

function openRepository(h: RegistryHandoff) {
  const key = JSON.stringify(h.client);
  let c = clients.get(key);
  if (!c) {
    // Credentials come with each job's auth state, never from the docker config again.
    c = new RegistryClient({ ...h.client, credentials: async () => undefined });
    clients.set(key, c);
  }
  c.authorizer(h.registry).restore(h.auth);
  return c.repository({ registry: h.registry, repository: h.name }, { push: h.push });
}

function open(h: StoreHandoff): Promise<ContentStore> | ContentStore {
  if (isLayout(h)) return openLayout(h);
  if (isRegistry(h)) return openRepository(h);
  throw new OvmsError("INTERNAL", `transfer worker: no store of kind "${h.kind}"`);
}

async function run(job: TransferJob, signal: AbortSignal): Promise<"transferred" | "mounted"> {
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
        tick(chunk.length);
        cb(null, chunk);
      },
      flush(cb) {
        flushProgress();
        cb();
      },
    });
    return pipeline(s, t, () => undefined);
  };
  if (isRegistry(job.src) && isLayout(job.dst)) {
    // Straight from the socket's read buffer into the store's hash and file: no copy.
    const repo = openRepository(job.src);
    const store = await openLayout(job.dst);
    const writer = await store.openIngest({ digest: job.desc.digest, size: job.desc.size });
    if (!writer) return "transferred";
    try {
      await repo.fetchInto(job.desc, writer, { onBytes: job.progress ? tick : undefined, signal });
      flushProgress();
      if (signal.aborted) throw cancelled(`blob ${job.desc.digest}`, signal);
      await writer.commit();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    return "transferred";
  }
  const src = await open(job.src);
  const dst = await open(job.dst);
  const verify = !dst.capabilities?.verifiesOnPush;
  const fetch = async () => count(await src.fetch(job.desc, { verify, signal }));
  if (dst.capabilities?.pushBlob) {
    const onBytes = job.progress ? tick : undefined;
    const how = await dst.capabilities.pushBlob(job.desc, fetch, { from: src, signal, onBytes });
    flushProgress();
    return how;
  }
  await dst.push(job.desc, await fetch(), { signal });
  return "transferred";
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

parentPort?.on("message", (cmd: TransferCommand) => {
  if (cmd.type === "cancel") {
    running.get(cmd.id)?.abort();
    return;
  }
  const job = cmd.job;
  const controller = new AbortController();
  running.set(job.id, controller);
  run(job, controller.signal)
    .then(
      (how) => parentPort!.postMessage({ id: job.id, type: "done", how } satisfies TransferMessage),
      (e) =>
        parentPort!.postMessage({
          id: job.id,
          type: "error",
          error: serializeError(e),
        } satisfies TransferMessage),
    )
    .finally(() => running.delete(job.id));
});
