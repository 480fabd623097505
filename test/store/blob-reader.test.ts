import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { sha256, type Digest } from "../../src/core/digest.js";
import { isOvmsError } from "../../src/core/errors.js";
import { openBlobReader } from "../../src/store/blob-reader.js";
import { tempDir } from "../helpers.js";

const MiB = 1 << 20;

/** readAll takes every chunk with at most `max` bytes each, releasing each one at once. */
function readAll(path: string, expect: { digest: Digest; size: number }, max: number): Buffer {
  const r = openBlobReader(path, expect);
  const parts: Buffer[] = [];
  try {
    for (let c = r.next(max); c; c = r.next(max)) {
      assert.ok(c.length > 0 && c.length <= max, `a chunk of ${c.length} bytes, at most ${max}`);
      parts.push(Buffer.from(c)); // a copy: the buffer goes back to the reader
      r.release(c);
    }
  } finally {
    r.close();
  }
  return Buffer.concat(parts);
}

async function dirs(t: Parameters<typeof tempDir>[0]): Promise<string[]> {
  const out = [await tempDir(t)];
  // tmpfs refuses O_DIRECT: the reader reads through the page cache there.
  const shm = await mkdtemp("/dev/shm/ovms-reader-").catch(() => undefined);
  if (shm) {
    t.after(() => rm(shm, { recursive: true, force: true }));
    out.push(shm);
  }
  return out;
}

test("blob-reader: the bytes come back whole and in order, in chunks of at most the asked size", async (t) => {
  for (const dir of await dirs(t)) {
    for (const size of [0, 1, 4095, 4097, MiB, 3 * MiB + 5]) {
      const data = randomBytes(size);
      const path = join(dir, `b${size}`);
      writeFileSync(path, data);
      const expect = { digest: sha256(data), size };
      for (const max of [MiB, 100_000, 4096 * 3])
        assert.ok(readAll(path, expect, max).equals(data), `${dir}: ${size} bytes, chunks of ${max}`);
    }
  }
});

test("blob-reader: a corrupt file is refused before its last bytes are handed out; a short one at open", async (t) => {
  for (const dir of await dirs(t)) {
    const data = randomBytes(2 * MiB + 100);
    const digest = sha256(data);
    const bad = Buffer.from(data);
    bad[MiB + 7] ^= 1;
    const path = join(dir, "bad");
    writeFileSync(path, bad);
    const r = openBlobReader(path, { digest, size: data.length });
    let handed = 0;
    let err: unknown;
    try {
      for (let c = r.next(MiB); c; c = r.next(MiB)) {
        handed += c.length;
        r.release(c);
      }
    } catch (e) {
      err = e;
    } finally {
      r.close();
    }
    assert.ok(isOvmsError(err, "DIGEST_MISMATCH"), `refused: ${String(err)}`);
    assert.match((err as Error).message, new RegExp(digest));
    assert.ok(handed < data.length, `only ${handed} of ${data.length} bytes went out`);

    writeFileSync(join(dir, "short"), data.subarray(0, 1000));
    assert.throws(
      () => openBlobReader(join(dir, "short"), { digest, size: data.length }),
      (e: unknown) => isOvmsError(e, "DIGEST_MISMATCH") && /holds 1000 bytes/.test((e as Error).message),
    );
  }
});

test("Store.capabilities.openReader: a blob the store does not have is NOT_FOUND, naming its digest", async (t) => {
  const { Store } = await import("../../src/store/store.js");
  const store = await Store.open(await tempDir(t));
  const digest = sha256(Buffer.from("not there"));
  await assert.rejects(
    store.capabilities.openReader!({ digest, size: 9 }),
    (e: unknown) => isOvmsError(e, "NOT_FOUND") && (e as Error).message.includes(digest),
  );
});
