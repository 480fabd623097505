import type { Readable } from "node:stream";
import type { Descriptor } from "./oci.js";

/** SignalOptions carry the AbortSignal that cancels an operation (Ctrl-C in `ovm`). */
export interface SignalOptions {
  signal?: AbortSignal;
}

/** ContentFetchOptions tune one read of a ContentStore. */
export interface ContentFetchOptions extends SignalOptions {
  /**
   * verify checks size and digest while streaming (default true). A copy turns it off when
   * the destination verifies what it is given, so the bytes are hashed once; a store may
   * verify anyway.
   */
  verify?: boolean;
}

/**
 * BlobReader lends a blob's bytes synchronously and in order, in buffers it owns (see
 * ContentCapabilities.openReader): what an upload that writes to its socket itself reads from.
 */
export interface BlobReader {
  readonly size: number;
  /**
   * next returns up to `max` of the next bytes, in a buffer lent until `release`, or
   * undefined at the end. The bytes are verified as they go: the call that would hand out the
   * last bytes throws instead when the blob is not what its digest says.
   */
  next(max: number): Uint8Array | undefined;
  /** release gives a buffer back once its bytes are written. */
  release(chunk: Uint8Array): void;
  close(): void;
}

/**
 * StoreHandoff describes a ContentStore as plain data that can cross to a worker thread,
 * which opens the same store again there; `kind` says which opener reads the rest.
 */
export interface StoreHandoff {
  readonly kind: string;
}

/**
 * ContentCapabilities are what a ContentStore can do beyond the common role. A store declares
 * them, so that copy() decides on what each side can do and never asks what class it has.
 */
export interface ContentCapabilities {
  /**
   * verifiesOnPush: push checks size and digest itself (a store's ingest hashes, a registry
   * checks every upload), so the source of a copy need not hash the same bytes again.
   */
  readonly verifiesOnPush: boolean;
  /**
   * local: the content is on this machine, so moving it costs this process CPU (hashing and
   * writing): large blobs to or from it move in worker threads when both sides have a handoff.
   */
  readonly local?: boolean;
  /**
   * pushBlob stores a blob whose content is opened only when it is needed, and may make it
   * present without moving bytes (a cross-repository mount from `from`); it says which.
   * `onBytes` hears of bytes it moves without going through the opened content (a fast path
   * reading `from` itself); bytes read through the content are counted by whoever opened it.
   */
  pushBlob?(
    desc: Descriptor,
    open: () => Promise<Readable>,
    opts?: SignalOptions & { from?: ContentStore; onBytes?: (n: number) => void },
  ): Promise<"transferred" | "mounted">;
  /** openReader opens a blob of this store for a BlobReader (a local store: verified reads from its file). */
  openReader?(desc: Pick<Descriptor, "digest" | "size">): Promise<BlobReader>;
  /** addUntagged keeps a manifest that has no name (a pulled referrer, a pull by digest). */
  addUntagged?(desc: Descriptor): Promise<void>;
  /** handoff describes the store for a worker thread (see StoreHandoff). */
  handoff?(): Promise<StoreHandoff>;
}

/**
 * ContentStore is the one role both the local store and a registry repository play, so
 * copy/pull/push is a single function that does not care which side is local
 * (the shape of oras-go `content.Storage` + `Resolver` + `Tagger`).
 */
export interface ContentStore {
  /** exists tells whether the blob or manifest of `desc` is present. */
  exists(desc: Descriptor, opts?: SignalOptions): Promise<boolean>;
  /** fetch streams the content of `desc`; the stream fails at its end when digest or size is wrong. */
  fetch(desc: Descriptor, opts?: ContentFetchOptions): Promise<Readable>;
  /** push stores `content`, which must match `desc` exactly; it is not visible until verified. */
  push(desc: Descriptor, content: Readable, opts?: SignalOptions): Promise<void>;
  /** resolve turns a tag or digest reference into the descriptor of its manifest. */
  resolve(reference: string, opts?: SignalOptions): Promise<Descriptor>;
  /** tag names the manifest `desc` with `reference`. */
  tag(desc: Descriptor, reference: string, opts?: SignalOptions): Promise<void>;
  /** referrers lists the manifests whose `subject` is `subject`, optionally of one artifactType. */
  referrers(subject: Descriptor, artifactType?: string, opts?: SignalOptions): Promise<Descriptor[]>;
  /** capabilities says what the store can do beyond this role; absent means none of it. */
  readonly capabilities?: ContentCapabilities;
}
