import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { splitRamStream } from "../../../src/runtime/qemu/ram-stream.js";

// A QEMU 7.2 migration stream written by hand, as a live (precopy) capture sends it: the RAM
// setup, a first pass over every page, a pass that sends again what the guest wrote meanwhile,
// then a device section. The layout is QEMU's (migration/savevm.c, migration/ram.c).

const PAGE = 4096;
const BLOCK = 4 * PAGE;
let dir: string;

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};
const str = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, "latin1")]);
const page = (fill: number) => Buffer.alloc(PAGE, fill);
const CAPS = Buffer.concat([
  Buffer.from([0x05]),
  str("configuration/capabilities"),
  u32(1),
  u32(1),
  str("x-ignore-shared"),
]);

/** stream builds a stream; with `shared` it is one taken with x-ignore-shared (capability, addresses). */
function stream(shared: boolean, passes: Buffer[][], device: Buffer): Buffer {
  const out: Buffer[] = [u32(0x5145564d), u32(3), Buffer.from([0x07]), u32(4), Buffer.from("none")];
  if (shared) out.push(CAPS);
  // START ram: section id 2, name, instance id, version, then MEM_SIZE with each block.
  out.push(Buffer.from([0x01]), u32(2), str("ram"), u32(0), u32(4));
  out.push(u64(BLOCK | 0x04), str("ram0"), u64(BLOCK));
  if (shared) out.push(u64(0));
  out.push(u64(0x10), Buffer.from([0x7e]), u32(2));
  for (const [i, records] of passes.entries()) {
    out.push(Buffer.from([i === passes.length - 1 ? 0x03 : 0x02]), u32(2), ...records, u64(0x10));
    out.push(Buffer.from([0x7e]), u32(2));
  }
  out.push(device);
  return Buffer.concat(out);
}

/** data is a page record (the first of a pass names its block, the rest continue it). */
const data = (addr: number, fill: number, first = false) =>
  Buffer.concat([u64(addr | 0x08 | (first ? 0 : 0x20)), first ? str("ram0") : Buffer.alloc(0), page(fill)]);
const zero = (addr: number, first = false) =>
  Buffer.concat([
    u64(addr | 0x02 | (first ? 0 : 0x20)),
    first ? str("ram0") : Buffer.alloc(0),
    Buffer.from([0]),
  ]);

// A device section, copied as it is.
const DEVICE = Buffer.concat([
  Buffer.from([0x04]),
  u32(3),
  str("serial"),
  u32(0),
  u32(1),
  Buffer.from("state"),
  Buffer.from([0x00]),
]);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-ramstream-"));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("pages sent again: the last one wins, a page zeroed after its data is zero", async () => {
  const passes = [
    [data(0, 1, true), data(PAGE, 2), zero(2 * PAGE), data(3 * PAGE, 4)],
    [data(PAGE, 9, true), zero(3 * PAGE)],
  ];
  const file = join(dir, "live.stream");
  await writeFile(file, stream(true, passes, DEVICE));
  const mem = join(dir, "live.memory");
  const split = await splitRamStream(file, BLOCK, mem, true);
  assert.equal(split.pages, 4, "every page counted once");
  const m = await readFile(mem);
  assert.deepEqual(m, Buffer.concat([page(1), page(9), page(0), page(0)]));
  assert.ok(split.deviceState.subarray(split.deviceState.length - DEVICE.length).equals(DEVICE));
});

test("a stream taken without x-ignore-shared, restored with it, gets the capability and block addresses", async () => {
  const passes = [[data(0, 1, true), data(PAGE, 2), data(2 * PAGE, 3), data(3 * PAGE, 4)]];
  const without = join(dir, "noshare.stream");
  const withIt = join(dir, "share.stream");
  await writeFile(without, stream(false, passes, DEVICE));
  await writeFile(withIt, stream(true, passes, DEVICE));
  const a = await splitRamStream(without, BLOCK, join(dir, "a.memory"), false, true);
  const b = await splitRamStream(withIt, BLOCK, join(dir, "b.memory"), true);
  assert.deepEqual(a.deviceState, b.deviceState, "the same device state as one taken with x-ignore-shared");
  assert.ok(a.deviceState.includes(CAPS));
  const kept = await splitRamStream(without, BLOCK, join(dir, "c.memory"), false);
  assert.ok(!kept.deviceState.includes(CAPS), "left as it is when the restore runs without it too");
});

test("a stream that leaves a page of the block out is refused", async () => {
  const file = join(dir, "short.stream");
  await writeFile(
    file,
    stream(true, [[data(0, 1, true), data(PAGE, 2), data(2 * PAGE, 3), data(PAGE, 5)]], DEVICE),
  );
  await assert.rejects(splitRamStream(file, BLOCK, join(dir, "short.memory"), true), (e: Error) =>
    /carried 3 pages of ram0, want 4/.test(e.message),
  );
});
