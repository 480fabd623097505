import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, constants, openSync, readdirSync, writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { AppendFile } from "../../src/store/append-file.js";
import { tempDir } from "../helpers.js";

/** directWorks says whether the filesystem of `dir` takes O_DIRECT, asked without AppendFile. */
function directWorks(dir: string): boolean {
  const probe = join(dir, "probe");
  writeFileSync(probe, "");
  try {
    closeSync(openSync(probe, constants.O_WRONLY | constants.O_DIRECT));
    return true;
  } catch {
    return false;
  } finally {
    writeFileSync(probe, "");
  }
}

/** writeInPieces appends `data` cut at `cuts` (sorted offsets) and returns the file's bytes after finish. */
async function writeInPieces(
  path: string,
  data: Buffer,
  cuts: number[],
): Promise<{ bytes: Buffer; direct: boolean }> {
  const f = new AppendFile(path);
  let at = 0;
  for (const c of [...cuts, data.length]) {
    // A reused buffer, overwritten after each append: append must have taken the bytes.
    const piece = Buffer.from(data.subarray(at, c));
    f.append(piece);
    piece.fill(0xee);
    at = c;
  }
  assert.equal(f.bytes, data.length);
  await f.finish();
  return { bytes: await readFile(path), direct: f.direct };
}

const MiB = 1 << 20;
// Sizes around the block (4 KiB) and staging (4 MiB) boundaries, where the direct and
// buffered parts meet, and past several staging buffers (the background writes).
const SIZES = [0, 1, 4095, 4096, 4097, 4 * MiB - 1, 4 * MiB, 4 * MiB + 4096, 4 * MiB + 4097, 21 * MiB + 333];

test("append-file: every byte lands in order, whatever the pieces, direct where the filesystem takes it", async (t) => {
  const dir = await tempDir(t);
  const direct = directWorks(dir);
  let n = 0;
  for (const size of SIZES) {
    const data = randomBytes(size);
    const cuts = size > 10 ? [1, Math.floor(size / 3), Math.floor(size / 3) + 1, size - 5] : [];
    const got = await writeInPieces(join(dir, `f${n++}`), data, cuts);
    assert.ok(got.bytes.equals(data), `size ${size}: content differs`);
    // Files too small for one block never go direct, so only larger ones say the mode.
    if (size >= 4096) assert.equal(got.direct, direct, `size ${size}: direct`);
  }
  // The file is its owner's only, as ingest temp files always were.
  assert.equal((await stat(join(dir, "f1"))).mode & 0o777, 0o600);
});

test("append-file: random sizes and cuts (property)", async (t) => {
  const dir = await tempDir(t);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 9 * MiB }),
      fc.array(fc.integer({ min: 0, max: 9 * MiB }), { maxLength: 12 }),
      async (size, raw) => {
        const data = randomBytes(size);
        const cuts = [...new Set(raw.map((c) => c % (size + 1)))].sort((a, b) => a - b);
        const path = join(dir, `p${n++}`);
        const got = await writeInPieces(path, data, cuts);
        await rm(path);
        return got.bytes.equals(data);
      },
    ),
    { numRuns: 25 },
  );
});

test("append-file: on tmpfs, which refuses O_DIRECT, the bytes go through the page cache", async (t) => {
  let dir: string;
  try {
    dir = await mkdtemp("/dev/shm/ovms-append-");
  } catch {
    t.skip("no /dev/shm on this machine");
    return;
  }
  t.after(() => rm(dir, { recursive: true, force: true }));
  const data = randomBytes(9 * MiB + 17);
  const got = await writeInPieces(join(dir, "f"), data, [100, 5 * MiB]);
  assert.ok(got.bytes.equals(data));
  assert.equal(got.direct, directWorks(dir));
});

test("append-file: close while writes are under way waits for them, then frees the descriptors", async (t) => {
  const dir = await tempDir(t);
  const fds = () => readdirSync("/proc/self/fd").length;
  const before = fds();
  const f = new AppendFile(join(dir, "f"));
  assert.ok(fds() > before, "the file is open");
  f.append(randomBytes(20 * MiB));
  await f.close();
  assert.equal(fds(), before, "every descriptor closed");
  assert.throws(() => f.append(Buffer.from("x")), /append after close/);
  await f.close(); // idempotent
  assert.throws(() => new AppendFile(join(dir, "f")), /EEXIST/, "never opens a file that exists");
});
