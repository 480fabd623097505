import { open } from "node:fs/promises";
import { isDigest, type Digest } from "../core/digest.js";
import { OvmsError } from "../core/errors.js";
import type { Descriptor } from "../core/oci.js";
import { isPathLike } from "../api/paths.js";
import type { Store } from "../store/store.js";
import { LayoutSource } from "../artifact/layout-source.js";
import { Skip } from "./check.js";

/**
 * ArtifactContext is an artifact under check, read from a local OCI layout store: the exact
 * bytes of its OCI manifest, both manifests parsed as plain JSON (nothing is trusted to have
 * the right shape: checking the shape is the point), and random access to its blobs.
 */
export class ArtifactContext {
  /** oci is the OCI manifest as parsed, whatever it holds. */
  oci: any;
  /** config is the OVMS manifest (the config blob) as parsed, when it could be read. */
  config: any;
  /** configError says why the config could not be read. */
  configError?: string;
  private readonly memos = new Map<string, Promise<unknown>>();

  constructor(
    readonly store: Store,
    readonly reference: string,
    readonly descriptor: Descriptor,
    readonly bytes: Buffer,
  ) {
    this.oci = JSON.parse(bytes.toString("utf8"));
  }

  /** load reads the artifact `reference` names in `store` (its manifest verified against its digest). */
  static async load(store: Store, reference: string): Promise<ArtifactContext> {
    const descriptor = await store.resolve(reference);
    const bytes = await store.readBlob(descriptor.digest);
    const ctx = new ArtifactContext(store, reference, descriptor, bytes);
    try {
      const d = ctx.oci?.config?.digest;
      if (!isDigest(d)) throw new Error(`config.digest ${JSON.stringify(d)} is not a digest`);
      ctx.config = JSON.parse((await store.readBlob(d)).toString("utf8"));
    } catch (e) {
      ctx.configError = (e as Error).message;
    }
    return ctx;
  }

  /** once computes `key` once per artifact (a decoded ramsnap, a disk's header). */
  once<T>(key: string, fn: () => Promise<T>): Promise<T> {
    let p = this.memos.get(key) as Promise<T> | undefined;
    if (!p) {
      p = fn();
      p.catch(() => undefined);
      this.memos.set(key, p);
    }
    return p;
  }

  /** needConfig returns the OVMS manifest, or skips a check that needs it. */
  needConfig(): any {
    if (this.config === undefined || typeof this.config !== "object" || this.config === null)
      throw new Skip(`no OVMS manifest to check (${this.configError ?? "the config is not an object"})`);
    return this.config;
  }

  /** layers are the OCI manifest's layer descriptors (an empty list when it has none). */
  get layers(): Descriptor[] {
    return Array.isArray(this.oci?.layers) ? this.oci.layers : [];
  }

  /** layer finds the layer descriptor of `digest`. */
  layer(digest: unknown): Descriptor | undefined {
    return this.layers.find((l) => l.digest === digest);
  }

  /** blobSize is the size of a blob in the store, or undefined when it is missing. */
  blobSize(digest: Digest): Promise<number | undefined> {
    return this.store.blobSize(digest);
  }

  /** read reads `length` bytes of a blob at `offset` (fewer at its end). */
  async read(digest: Digest, offset: number, length: number): Promise<Buffer> {
    const fh = await open(this.store.blobPath(digest), "r");
    try {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  /** blobPath is the file of a blob (for tools that read it whole, like lz4). */
  blobPath(digest: Digest): string {
    return this.store.blobPath(digest);
  }
}

/**
 * fetchArtifact brings what `given` names into `store` for checking: a path to an OCI layout
 * folder (`PATH` or `PATH:NAME`) is copied from the layout, anything else is a reference —
 * taken from `local` when it is there, else pulled from its registry. Returns the reference
 * to read it by in `store`. Every blob is verified on the way in.
 */
export async function fetchArtifact(
  given: string,
  local: Store,
  store: Store,
  pull: (ref: string, into: Store) => Promise<void>,
): Promise<{ store: Store; reference: string; from: string }> {
  if (isPathLike(given)) {
    const colon = given.lastIndexOf(":");
    const hasName = colon > 0 && !given.slice(colon).includes("/");
    const dir = hasName ? given.slice(0, colon) : given;
    const src = await LayoutSource.open(dir);
    let root: string;
    if (hasName) root = (await src.resolve(given.slice(colon + 1))).digest;
    else {
      const found = await src.artifacts();
      if (found.length !== 1)
        throw new OvmsError("USAGE", `${dir} holds ${found.length} OVMS artifacts: name one as ${dir}:NAME`);
      root = found[0].digest;
    }
    const { copy } = await import("../registry/copy.js");
    await copy(src, root, store, undefined, { referrers: false, workers: false });
    return { store, reference: root, from: `the OCI layout ${dir}` };
  }
  try {
    await local.resolve(given);
    return { store: local, reference: given, from: `the store ${local.root}` };
  } catch (e) {
    if (!(e instanceof OvmsError) || e.code !== "NOT_FOUND") throw e;
  }
  try {
    await pull(given, store);
  } catch (e) {
    const code = e instanceof OvmsError ? e.code : "ARTIFACT_NOT_FOUND";
    throw new OvmsError(
      code,
      `${given}: not in the store ${local.root}, and pulling it failed: ${(e as Error).message}`,
      { cause: e },
    );
  }
  return { store, reference: given, from: "its registry" };
}
