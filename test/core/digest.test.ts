import { test } from "node:test";
import assert from "node:assert/strict";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Hasher, sha256, parseDigest, isDigest } from "../../src/core/digest.js";
import { parseSize, formatSize } from "../../src/core/size.js";

const sink = () => new Writable({ write: (_c, _e, cb) => cb() });

test("Hasher digests a stream and accepts the right digest and size", async () => {
  const data = Buffer.from("hello ovms");
  const h = new Hasher({ digest: sha256(data), size: data.length });
  await pipeline(Readable.from([data]), h, sink());
  assert.equal(h.digest(), sha256(data));
  assert.equal(h.bytes, data.length);
});

test("Hasher fails at the end on a wrong digest, naming got and want", async () => {
  const want = sha256("something else");
  await assert.rejects(
    pipeline(Readable.from([Buffer.from("hello")]), new Hasher({ digest: want }), sink()),
    (e: any) => {
      assert.equal(e.code, "DIGEST_MISMATCH");
      assert.match(e.message, new RegExp(`after 5 bytes \\(got ${sha256("hello")}, want ${want}\\)`));
      return true;
    },
  );
});

test("Hasher stops reading past the declared size", async () => {
  await assert.rejects(
    pipeline(Readable.from([Buffer.alloc(10), Buffer.alloc(10)]), new Hasher({ size: 15 }), sink()),
    /more than the declared 15 bytes/,
  );
  await assert.rejects(
    pipeline(Readable.from([Buffer.alloc(10)]), new Hasher({ size: 15 }), sink()),
    /got 10 bytes, want 15/,
  );
});

test("digest format checks", () => {
  assert.ok(isDigest(`sha256:${"0".repeat(64)}`));
  assert.ok(!isDigest(`sha256:${"A".repeat(64)}`));
  assert.throws(() => parseDigest(`sha512:${"0".repeat(128)}`), /unsupported algorithm "sha512"/);
});

test("sizes with suffixes", () => {
  assert.equal(parseSize("512M"), 512 << 20);
  assert.equal(parseSize("1G"), 1 << 30);
  assert.equal(parseSize("1GiB"), 1 << 30);
  assert.equal(parseSize("4096"), 4096);
  assert.throws(() => parseSize("lots"), /not a size/);
  assert.equal(formatSize(1536), "1.5 KiB");
});
