import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { sha256, type Digest } from "../../src/core/digest.js";
import { isOvmsError } from "../../src/core/errors.js";
import type { BlobReader, ContentStore } from "../../src/core/content.js";
import type { Descriptor } from "../../src/core/oci.js";
import { RegistryClient } from "../../src/registry/client.js";
import { copy } from "../../src/registry/copy.js";
import { setup } from "./proxied-artifact.js";

// Uploads from a local store to a plain-HTTP registry write the store's reader straight to the
// socket (registry/fast-put.ts). These tests watch the reader to know the fast path was taken,
// and the real registry (which checks every upload's digest) to know what arrived.

/** counted wraps a store so that the bytes its readers lend are counted. */
function counted(store: ContentStore): { store: ContentStore; lent: () => number } {
  let lent = 0;
  const caps = store.capabilities!;
  const wrapped: ContentStore = Object.create(store) as ContentStore;
  Object.defineProperty(wrapped, "capabilities", {
    value: {
      ...caps,
      // The main thread only: worker threads reopen the store by its handoff.
      handoff: undefined,
      openReader: async (desc: Pick<Descriptor, "digest" | "size">): Promise<BlobReader> => {
        const r = await caps.openReader!(desc);
        return {
          size: r.size,
          next: (max) => {
            const c = r.next(max);
            lent += c?.length ?? 0;
            return c;
          },
          release: (c) => r.release(c),
          close: () => r.close(),
        };
      },
    },
  });
  return { store: wrapped, lent: () => lent };
}

test("fast PUT/PATCH: a push from the store goes from its reader to the socket, in one PUT or in chunks, and arrives whole", async (t) => {
  const s = await setup(t, 6);
  const src = `${s.reg.host}/test/vm:1`;
  const total = [s.manifest.config, ...s.manifest.layers].reduce((n, b) => n + b.size, 0);
  for (const chunkSize of [undefined, 1 << 20]) {
    const client = new RegistryClient({ credentials: async () => undefined, chunkSize });
    t.after(() => client.close());
    const dest = `${s.proxy.host}/fast-${chunkSize ?? "whole"}/vm`;
    s.proxy.reset();
    // The first upload request of the base layer is refused once: the blob starts over.
    let first = true;
    s.proxy.fail(
      (m, p) => (m === "PUT" || m === "PATCH") && p.includes("/uploads/") && first && !(first = false),
      503,
      1,
    );
    const { store, lent } = counted(s.src);
    let moved = 0;
    const r = await copy(store, src, client.repository(dest, { push: true }), "1", {
      workers: false,
      progress: { bytes: (_d, n) => (moved += n) },
    });
    assert.equal(r.digest, s.digest);
    assert.ok(lent() >= total, `the readers lent ${lent()} bytes, the blobs hold ${total}`);
    // Progress bars hear of the bytes the fast path writes (the blob refused once counts twice).
    assert.ok(moved >= total && moved <= lent(), `progress counted ${moved} bytes of ${total}`);
    const uploads = s.proxy.requests.filter(
      (q) => q.method === (chunkSize ? "PATCH" : "PUT") && q.status !== 503,
    );
    assert.ok(uploads.length >= (chunkSize ? 6 : 4), `${uploads.length} upload requests`);
    // What the registry holds is the store's bytes (it checked the digests; so do we).
    const repo = client.repository(dest);
    for (const b of s.manifest.layers) {
      const got = await readAll(await repo.fetch(b));
      assert.equal(sha256(got), b.digest);
    }
  }
});

test("fast PUT: a blob corrupt in the store is refused before its last bytes go out; the registry never gets it", async (t) => {
  const s = await setup(t, 3);
  const base = s.manifest.layers.find((l) => l.digest === s.base)!;
  const path = s.src.blobPath(base.digest as Digest);
  const bytes = await readFile(path);
  bytes[bytes.length >> 1] ^= 0xff;
  await chmod(path, 0o644);
  await writeFile(path, bytes);
  const client = new RegistryClient({ credentials: async () => undefined });
  t.after(() => client.close());
  const dest = `${s.reg.host}/corrupt/vm`;
  const { store, lent } = counted(s.src);
  await assert.rejects(
    copy(store, `${s.reg.host}/test/vm:1`, client.repository(dest, { push: true }), "1", { workers: false }),
    (e: unknown) => isOvmsError(e, "DIGEST_MISMATCH") && (e as Error).message.includes(base.digest),
  );
  assert.ok(lent() > 0, "the fast path read the blob");
  assert.equal(await client.repository(dest).exists(base), false, "the registry has no such blob");
});

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}
