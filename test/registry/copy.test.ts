import { test } from "node:test";
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { sha256 } from "../../src/core/digest.js";
import { isOvmsError } from "../../src/core/errors.js";
import { MediaType } from "../../src/core/media-types.js";
import type { Descriptor, ImageManifest } from "../../src/core/oci.js";
import type {
  ContentCapabilities,
  ContentFetchOptions,
  ContentStore,
  SignalOptions,
} from "../../src/core/content.js";
import { copy } from "../../src/registry/copy.js";
import { readAll } from "../../src/registry/manifest-bytes.js";

/** MemoryStore is a ContentStore in memory that records what copy() asked of it. */
class MemoryStore implements ContentStore {
  readonly blobs = new Map<string, Buffer>();
  readonly names = new Map<string, Descriptor>();
  readonly log: string[] = [];
  /** hang makes fetches of this digest wait until their signal fires. */
  hang?: string;

  constructor(readonly capabilities?: ContentCapabilities) {}

  put(bytes: Buffer, mediaType: string): Descriptor {
    const desc = { mediaType, digest: sha256(bytes), size: bytes.length };
    this.blobs.set(desc.digest, bytes);
    return desc;
  }

  async exists(desc: Descriptor): Promise<boolean> {
    return this.blobs.has(desc.digest);
  }

  async fetch(desc: Descriptor, opts: ContentFetchOptions = {}): Promise<Readable> {
    this.log.push(`fetch ${desc.mediaType} verify=${opts.verify ?? true}`);
    if (desc.digest === this.hang) {
      const r = new Readable({ read() {} });
      r.push(Buffer.alloc(10));
      opts.signal?.addEventListener("abort", () => r.destroy(new Error("aborted")));
      return r;
    }
    return Readable.from([this.blobs.get(desc.digest)!]);
  }

  async push(desc: Descriptor, content: Readable, _opts?: SignalOptions): Promise<void> {
    this.log.push(`push ${desc.mediaType}`);
    this.blobs.set(desc.digest, await readAll(content, 1 << 30));
  }

  async resolve(reference: string): Promise<Descriptor> {
    return this.names.get(reference)!;
  }

  async tag(desc: Descriptor, reference: string): Promise<void> {
    this.log.push(`tag ${reference}`);
    this.names.set(reference, desc);
  }

  async referrers(): Promise<Descriptor[]> {
    return [];
  }
}

/** artifact puts a manifest with a config and two layers into `src`, named `v1`. */
function artifact(src: MemoryStore): { root: Descriptor; layers: Descriptor[] } {
  const config = src.put(Buffer.from("{}"), MediaType.OciEmpty);
  const layers = [
    src.put(Buffer.alloc(300, 1), "application/x-a"),
    src.put(Buffer.alloc(200, 2), "application/x-b"),
  ];
  const m: ImageManifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers };
  const root = src.put(Buffer.from(JSON.stringify(m)), MediaType.OciManifest);
  src.names.set("v1", root);
  return { root, layers };
}

test("without capabilities: blobs are pushed as streams, verified by the source, and the name goes last", async () => {
  const src = new MemoryStore();
  const dst = new MemoryStore();
  const { root } = artifact(src);
  const r = await copy(src, "v1", dst, "v1");
  assert.equal(r.digest, root.digest);
  assert.equal(r.blobsTransferred, 3);
  assert.deepEqual([...dst.blobs.keys()].sort(), [...src.blobs.keys()].sort());
  assert.ok(
    src.log.filter((l) => !l.includes("manifest")).every((l) => l.endsWith("verify=true")),
    src.log.join(),
  );
  assert.equal(dst.log.at(-1), "tag v1");
  assert.equal(dst.log.at(-2), `push ${MediaType.OciManifest}`);
});

test("a destination that verifies and can mount: the source skips its hash, blobs go through pushBlob with the source; untagged roots are recorded", async () => {
  const src = new MemoryStore();
  const { root, layers } = artifact(src);
  const asked: { from?: ContentStore; how: string }[] = [];
  const untagged: string[] = [];
  const dst: MemoryStore = new MemoryStore({
    verifiesOnPush: true,
    pushBlob: async (desc, open, opts) => {
      // The larger layer is "mounted": its content is never opened.
      if (desc.digest === layers[0].digest) {
        asked.push({ from: opts?.from, how: "mounted" });
        dst.blobs.set(desc.digest, src.blobs.get(desc.digest)!);
        return "mounted";
      }
      dst.blobs.set(desc.digest, await readAll(await open(), 1 << 30));
      asked.push({ from: opts?.from, how: "transferred" });
      return "transferred";
    },
    addUntagged: async (desc) => {
      untagged.push(desc.digest);
    },
  });
  const r = await copy(src, "v1", dst, undefined);
  assert.equal(r.blobsMounted, 1);
  assert.equal(r.blobsTransferred, 2);
  assert.ok(asked.every((a) => a.from === src));
  assert.deepEqual(
    src.log.filter((l) => !l.includes("manifest")).sort(),
    [`fetch ${MediaType.OciEmpty} verify=false`, "fetch application/x-b verify=false"].sort(),
    "a mounted blob is not read; the others unhashed, since the destination verifies",
  );
  assert.deepEqual(untagged, [root.digest]);
  assert.equal(dst.log.includes("tag v1"), false);
});

test("a cancelled copy rejects with CANCELLED once its transfers stopped, and writes neither the manifest nor the name", async () => {
  const src = new MemoryStore();
  const dst = new MemoryStore();
  const { layers } = artifact(src);
  src.hang = layers[0].digest;
  const controller = new AbortController();
  const copying = copy(src, "v1", dst, "v1", { signal: controller.signal });
  setTimeout(() => controller.abort(), 50);
  await assert.rejects(copying, (e) => isOvmsError(e, "CANCELLED"));
  assert.equal(dst.blobs.has(layers[0].digest), false);
  assert.equal(
    dst.log.some((l) => l.startsWith("tag") || l.includes("manifest")),
    false,
    dst.log.join(),
  );

  // Already cancelled: nothing is written.
  const idle = new MemoryStore();
  await assert.rejects(copy(src, "v1", idle, "v1", { signal: AbortSignal.abort() }), (e) =>
    isOvmsError(e, "CANCELLED"),
  );
  assert.deepEqual(idle.log, []);
});
