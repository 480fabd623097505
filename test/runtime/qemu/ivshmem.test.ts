import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { injectTarget, writeRegion } from "../../../src/runtime/qemu/ivshmem.js";
import { tempDir } from "../../helpers.js";

const rec = {
  instance_id: "i-1",
  devices: [
    { name: "shm0", size: 4096, path: "/dev/shm/ovms/i-1/ivshmem-shm0" },
    { name: "jobs", size: 8192, path: "/dev/shm/ovms/i-1/ivshmem-jobs" },
  ],
};
const bad = (re: RegExp) => (e: any) => e.code === "INVALID_ARGUMENT" && re.test(e.message);

test("the named device, else the first; bytes must fit at the offset", () => {
  assert.deepEqual(injectTarget(rec, { data: Buffer.alloc(4) }), { path: rec.devices[0].path, offset: 0 });
  assert.deepEqual(injectTarget(rec, { device: "jobs", offset: 8000, data: Buffer.alloc(192) }), {
    path: rec.devices[1].path,
    offset: 8000,
  });
  assert.throws(
    () => injectTarget(rec, { device: "nope", data: Buffer.alloc(1) }),
    bad(/has no device "nope" \(has: shm0, jobs\)/),
  );
  assert.throws(
    () => injectTarget({ ...rec, devices: [] }, { data: Buffer.alloc(1) }),
    bad(/instance i-1 has no ivshmem device/),
  );
  assert.throws(
    () => injectTarget(rec, { offset: 4090, data: Buffer.alloc(7) }),
    bad(/inject of 7 bytes at offset 4090 does not fit device shm0 \(4096 bytes\)/),
  );
  assert.throws(() => injectTarget(rec, { offset: -1, data: Buffer.alloc(1) }), bad(/offset -1/));
});

test("writeRegion writes in place and leaves the rest of the region as it was", async (t) => {
  const path = join(await tempDir(t), "region");
  await writeFile(path, Buffer.alloc(16, 0xee));
  await writeRegion(path, 4, Buffer.from("hi"));
  const got = await readFile(path);
  assert.equal(got.length, 16);
  assert.equal(got.subarray(4, 6).toString(), "hi");
  assert.equal(got[3], 0xee);
  assert.equal(got[6], 0xee);
});
