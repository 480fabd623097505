import { createReadStream, statSync } from "node:fs";
import { mkdir, open, readFile, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { randomBytes } from "node:crypto";
import { Hasher, digestHex, isDigest, sha256, type Digest } from "../core/digest.js";
import { fingerprint } from "../core/fingerprint.js";
import { Annotation, MediaType } from "../core/media-types.js";
import type { Descriptor, ImageIndex, ImageManifest } from "../core/oci.js";
import { formatReference, parseReference } from "../core/reference.js";
import type { ContentCapabilities, ContentStore } from "../core/content.js";
import { StoreError } from "./store-error.js";
import { collectGarbage, type GcResult } from "./gc.js";
import { ingestStream, openBlobWriter, type BlobWriter } from "./blob-writer.js";
import { openBlobReader } from "./blob-reader.js";

export type { GcResult, BlobWriter };

/** LAYOUT_VERSION is the `imageLayoutVersion` of oci-layout (image-spec v1.1 image-layout.md). */
const LAYOUT_VERSION = "1.0.0";

/** StoreEntry is one manifest named in index.json: its reference (absent for referrers) and descriptor. */
export interface StoreEntry {
  reference?: string;
  descriptor: Descriptor;
}

/**
 * Store is the local OCI image layout (https://github.com/opencontainers/image-spec/blob/v1.1.0/image-layout.md):
 * content-addressed blobs under `blobs/sha256/`, names in `index.json` (annotation
 * `org.opencontainers.image.ref.name` = full reference, so skopeo's `oci:STORE:REF` finds it).
 * OVMS's own working files (ingest temp files, index lock, unpacked layers) live under `.ovms/`,
 * which the layout spec leaves alone.
 */
export class Store implements ContentStore {
  /** capabilities: ingest verifies, untagged manifests are kept, a worker thread reopens the store by its root. */
  readonly capabilities: ContentCapabilities = {
    verifiesOnPush: true,
    local: true,
    addUntagged: (desc) => this.addUntagged(desc),
    handoff: async () => ({ kind: "layout", root: this.root }),
    openReader: async (desc) => {
      try {
        return openBlobReader(this.blobPath(desc.digest), desc);
      } catch (e) {
        // The reader's own open says whether the blob is there: no stat before it.
        if ((e as NodeJS.ErrnoException).code === "ENOENT") throw this.notFound(desc.digest);
        throw e;
      }
    },
  };

  /** The entries of index.json as last read, with the file's fingerprint then (see entries). */
  private indexMemo?: { print: string; entries: StoreEntry[] };

  private constructor(readonly root: string) {}

  /** open opens the store at `root`, creating an empty layout when there is none. */
  static async open(root: string): Promise<Store> {
    const s = new Store(root);
    await mkdir(join(root, "blobs", "sha256"), { recursive: true });
    await mkdir(s.ingestDir, { recursive: true });
    await writeIfMissing(join(root, "oci-layout"), JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }));
    await writeIfMissing(
      join(root, "index.json"),
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] }),
    );
    return s;
  }

  /**
   * openExisting opens the store at `root` without creating anything: for commands that only
   * read. A folder without an image layout is NOT_FOUND.
   */
  static async openExisting(root: string): Promise<Store> {
    const st = await stat(join(root, "index.json")).catch(() => undefined);
    if (!st?.isFile() || !(await stat(join(root, "oci-layout")).catch(() => undefined)))
      throw new StoreError("NOT_FOUND", `no store at ${root} (nothing was built or pulled there)`);
    return new Store(root);
  }

  /** workDir is the store's private folder for everything that is not part of the OCI layout. */
  get workDir(): string {
    return join(this.root, ".ovms");
  }

  /** ingestDir holds blobs being written (temp files renamed into blobs/ once verified). */
  get ingestDir(): string {
    return join(this.workDir, "ingest");
  }

  private get indexPath(): string {
    return join(this.root, "index.json");
  }

  /** blobPath is where the blob of `digest` lives (whether or not it is there). */
  blobPath(digest: Digest): string {
    return join(this.root, "blobs", "sha256", digestHex(digest));
  }

  /** blobSize returns the size of a present blob, or undefined. */
  async blobSize(digest: Digest): Promise<number | undefined> {
    try {
      return (await stat(this.blobPath(digest))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
  }

  async exists(desc: Pick<Descriptor, "digest">): Promise<boolean> {
    return (await this.blobSize(desc.digest)) !== undefined;
  }

  /**
   * fetch streams a blob, verifying size and digest as it goes: every read of the store is
   * checked, so a blob corrupted on disk fails at the end of its stream with what it got.
   */
  async fetch(desc: Pick<Descriptor, "digest" | "size">): Promise<Readable> {
    const size = await this.blobSize(desc.digest);
    if (size === undefined) throw this.notFound(desc.digest);
    const hasher = new Hasher({ digest: desc.digest, size: desc.size ?? size, what: `blob ${desc.digest}` });
    return createReadStream(this.blobPath(desc.digest)).pipe(hasher);
  }

  /** readBlob reads a whole (small) blob into memory, verified. */
  async readBlob(digest: Digest): Promise<Buffer> {
    let buf: Buffer;
    try {
      buf = await readFile(this.blobPath(digest));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") throw this.notFound(digest);
      throw e;
    }
    const got = sha256(buf);
    if (got !== digest) {
      throw new StoreError(
        "STORE_CORRUPT",
        `blob ${digest} in ${this.root} is corrupt (its content hashes to ${got})`,
      );
    }
    return buf;
  }

  /** readJson reads and parses a JSON blob (a manifest, index or config), verified. */
  async readJson<T>(digest: Digest): Promise<T> {
    const buf = await this.readBlob(digest);
    try {
      return JSON.parse(buf.toString("utf8")) as T;
    } catch (e) {
      throw new StoreError("STORE_CORRUPT", `blob ${digest} is not valid JSON: ${(e as Error).message}`);
    }
  }

  async push(desc: Pick<Descriptor, "digest" | "size">, content: Readable): Promise<void> {
    await this.ingest(content, { digest: desc.digest, size: desc.size });
  }

  /**
   * ingest writes a stream into the store and returns its digest and size. The bytes go to a
   * temp file under `.ovms/ingest` (same filesystem as blobs/, so the rename is atomic), are
   * verified against `expect` while streaming, fsynced, made read-only, then renamed into
   * place and the directory fsynced: a crash or a bad digest never leaves a partial or wrong
   * file under blobs/.
   */
  async ingest(
    content: Readable,
    expect: { digest?: Digest; size?: number } = {},
  ): Promise<{ digest: Digest; size: number }> {
    // Nothing is awaited before the stream reaches its pipeline (ingestStream): `content` may
    // already be flowing, and an error it meets meanwhile would find no listener.
    const present = expect.digest
      ? statSync(this.blobPath(expect.digest), { throwIfNoEntry: false })?.size
      : undefined;
    if (expect.digest && present !== undefined) {
      content.resume();
      content.destroy();
      return { digest: expect.digest, size: present };
    }
    const tmp = join(this.ingestDir, `${process.pid}-${randomBytes(8).toString("hex")}`);
    return ingestStream(content, tmp, (d) => this.blobPath(d), expect);
  }

  /** putBlob stores a buffer (config, manifest) and returns its descriptor fields. */
  async putBlob(data: Uint8Array | string, expect?: Digest): Promise<{ digest: Digest; size: number }> {
    const buf = typeof data === "string" ? Buffer.from(data) : Buffer.from(data);
    return this.ingest(Readable.from([buf]), { digest: expect, size: buf.length });
  }

  /** putManifest stores a manifest or index and returns its descriptor (not yet named). */
  async putManifest(manifest: ImageManifest | ImageIndex, bytes?: Buffer): Promise<Descriptor> {
    const buf = bytes ?? Buffer.from(JSON.stringify(manifest));
    const { digest, size } = await this.putBlob(buf);
    const desc: Descriptor = { mediaType: manifest.mediaType ?? MediaType.OciManifest, digest, size };
    if (manifest.artifactType) desc.artifactType = manifest.artifactType;
    return desc;
  }

  /** entries lists every manifest named in index.json, tagged or not. */
  async entries(): Promise<StoreEntry[]> {
    // index.json is replaced by rename (a new inode) and only ever so by OVMS: while its
    // inode, size and mtime stay, the entries parsed last time are still what it says.
    const print = fingerprint(this.indexPath);
    if (print && this.indexMemo?.print === print) return this.indexMemo.entries.slice();
    const index = await this.readIndex();
    const entries = index.manifests.map((d): StoreEntry => {
      const name = d.annotations?.[Annotation.RefName];
      return name ? { reference: name, descriptor: d } : { descriptor: d };
    });
    if (print) this.indexMemo = { print, entries };
    return entries.slice();
  }

  /**
   * resolve finds the manifest a reference names: by tag through index.json, or by digest
   * (`repo@sha256:…` or a bare digest) when that manifest is in the store.
   */
  async resolve(reference: string): Promise<Descriptor> {
    const entries = await this.entries();
    if (isDigest(reference)) {
      const hit = entries.find((e) => e.descriptor.digest === reference);
      if (hit) return stripName(hit.descriptor);
      throw new StoreError("NOT_FOUND", `${reference}: no such manifest in the store`);
    }
    const ref = parseReference(reference);
    if (ref.digest) {
      const hit = entries.find((e) => e.descriptor.digest === ref.digest);
      if (hit) return stripName(hit.descriptor);
      const size = await this.blobSize(ref.digest);
      if (size !== undefined) {
        const m = await this.readJson<ImageManifest>(ref.digest);
        return { mediaType: m.mediaType ?? MediaType.OciManifest, digest: ref.digest, size };
      }
      throw new StoreError("NOT_FOUND", `${reference}: not in the store`);
    }
    const name = formatReference(ref);
    const hit = entries.find((e) => e.reference === name);
    if (!hit) throw new StoreError("NOT_FOUND", `${reference}: not in the store (looked for ${name})`);
    return stripName(hit.descriptor);
  }

  /** tag names `desc` with the normalized `reference`, replacing what that name held before. */
  async tag(desc: Descriptor, reference: string): Promise<void> {
    const ref = parseReference(reference);
    if (!ref.tag)
      throw new StoreError("INVALID_REFERENCE", `${reference}: a tag is needed to name an artifact`);
    const name = formatReference({ ...ref, digest: undefined });
    if (!(await this.exists(desc))) throw this.notFound(desc.digest);
    await this.updateIndex((index) => {
      index.manifests = index.manifests.filter((d) => d.annotations?.[Annotation.RefName] !== name);
      // An untagged entry for the same manifest (a pulled referrer) is replaced by the named one.
      index.manifests = index.manifests.filter(
        (d) => !(d.digest === desc.digest && !d.annotations?.[Annotation.RefName]),
      );
      index.manifests.push({
        ...stripName(desc),
        annotations: { ...(desc.annotations ?? {}), [Annotation.RefName]: name },
      });
    });
  }

  /** untag removes a name; the manifest stays until `gc` (other names may still point at it). */
  async untag(reference: string): Promise<Descriptor> {
    const name = normalizeName(reference);
    let removed: Descriptor | undefined;
    await this.updateIndex((index) => {
      const i = index.manifests.findIndex((d) => d.annotations?.[Annotation.RefName] === name);
      if (i >= 0) removed = index.manifests.splice(i, 1)[0];
    });
    if (!removed) throw new StoreError("NOT_FOUND", `${reference}: not in the store (looked for ${name})`);
    return stripName(removed);
  }

  /**
   * addReferrer records an untagged manifest (a signature, a snapshot) in index.json so it is
   * kept with its subject and found by `referrers`.
   */
  async addUntagged(desc: Descriptor): Promise<void> {
    await this.updateIndex((index) => {
      if (index.manifests.some((d) => d.digest === desc.digest)) return;
      index.manifests.push(stripName(desc));
    });
  }

  async referrers(subject: Pick<Descriptor, "digest">, artifactType?: string): Promise<Descriptor[]> {
    const out = new Map<string, Descriptor>();
    for (const e of await this.entries()) {
      const m = await this.readJson<ImageManifest | ImageIndex>(e.descriptor.digest);
      if (m.subject?.digest !== subject.digest) continue;
      const at = m.artifactType ?? (m as ImageManifest).config?.mediaType;
      if (artifactType && at !== artifactType) continue;
      const d: Descriptor = {
        mediaType: m.mediaType ?? MediaType.OciManifest,
        digest: e.descriptor.digest,
        size: e.descriptor.size,
      };
      if (at) d.artifactType = at;
      if (m.annotations) d.annotations = m.annotations;
      out.set(d.digest, d);
    }
    return [...out.values()];
  }

  /**
   * gc removes every blob that no named manifest reaches (see store/gc.ts for the rules) and
   * ingest files of writers that died.
   */
  gc(): Promise<GcResult> {
    return collectGarbage(this);
  }

  /** readIndex reads index.json as it is now (no lock: writers replace it atomically). */
  async readIndex(): Promise<ImageIndex> {
    const text = await readFile(this.indexPath, "utf8");
    try {
      return JSON.parse(text) as ImageIndex;
    } catch (e) {
      throw new StoreError("STORE_CORRUPT", `${this.indexPath}: not valid JSON: ${(e as Error).message}`);
    }
  }

  /**
   * updateIndex applies `fn` to index.json under an inter-process lock and replaces the file
   * atomically (temp file + fsync + rename), so concurrent `ovm` processes never lose a write
   * and readers never see half a file.
   */
  async updateIndex(fn: (index: ImageIndex) => void | Promise<void>): Promise<void> {
    // Imported here, not at the top: commands that only read the store (`ovm ls`) never load it.
    const { default: lockfile } = await import("proper-lockfile");
    const release = await lockfile.lock(this.indexPath, {
      lockfilePath: join(this.workDir, "index.lock"),
      stale: 15_000,
      retries: { retries: 200, minTimeout: 5, maxTimeout: 100, factor: 1.5 },
    });
    try {
      const index = await this.readIndex();
      await fn(index);
      const tmp = join(this.ingestDir, `index-${process.pid}-${randomBytes(4).toString("hex")}.json`);
      const fh = await open(tmp, "w", 0o644);
      try {
        await fh.writeFile(JSON.stringify(index, null, 2) + "\n");
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.indexPath);
    } finally {
      await release();
    }
  }

  private notFound(digest: Digest): StoreError {
    return new StoreError("NOT_FOUND", `blob ${digest}: not in the store ${this.root}`);
  }

  /**
   * openIngest is `ingest` for a writer that hands over bytes itself, synchronously and in
   * order (a download reading into one reused buffer): same temp file under `.ovms/ingest`,
   * same verification, fsync, read-only, rename (store/blob-writer.ts). Undefined when the
   * blob is already here.
   */
  async openIngest(expect: { digest: Digest; size: number }): Promise<BlobWriter | undefined> {
    if ((await this.blobSize(expect.digest)) !== undefined) return undefined;
    return openBlobWriter(
      join(this.ingestDir, `${process.pid}-${randomBytes(8).toString("hex")}`),
      this.blobPath(expect.digest),
      expect,
    );
  }
}

/** normalizeName returns the index.json name of a tag reference. */
function normalizeName(reference: string): string {
  const r = parseReference(reference);
  return formatReference({ ...r, digest: undefined });
}

/** stripName returns a descriptor without the ref-name annotation (names belong to index.json). */
function stripName(d: Descriptor): Descriptor {
  if (!d.annotations?.[Annotation.RefName]) return { ...d };
  const { [Annotation.RefName]: _drop, ...rest } = d.annotations;
  const out: Descriptor = { ...d };
  if (Object.keys(rest).length) out.annotations = rest;
  else delete out.annotations;
  return out;
}

async function writeIfMissing(path: string, text: string): Promise<void> {
  try {
    await writeFile(path, text + "\n", { flag: "wx" });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
}
