import { test } from "node:test";
import assert from "node:assert/strict";
import type { PreparedArtifact } from "../../../src/artifact/prepare.js";
import { QemuWarmPool, type PoolProcesses } from "../../../src/runtime/qemu/warm-pool.js";

/** snapshot is a snapshot artifact as the pool sees it: a digest and the guest memory size. */
function snapshot(digest: string, memoryBytes: number): PreparedArtifact {
  return {
    reference: `demo/vm:${digest}`,
    digest,
    ramSnapshot: { metadata: { memoryBytes } },
  } as unknown as PreparedArtifact;
}

/** FakeProcesses launches numbered ids, remembers what was discarded and which ids died. */
class FakeProcesses implements PoolProcesses {
  next = 0;
  launched: string[] = [];
  discarded: string[] = [];
  dead = new Set<string>();
  failing = false;
  async launch(a: PreparedArtifact): Promise<string> {
    if (this.failing) throw new Error("no QEMU today");
    const id = `${a.digest}-${this.next++}`;
    this.launched.push(id);
    return id;
  }
  usable(id: string): boolean {
    return !this.dead.has(id);
  }
  async discard(id: string): Promise<void> {
    this.discarded.push(id);
  }
  /** restored: every process but the first is restored ahead (the runtime loads device state). */
  restored(id: string): boolean {
    return !id.endsWith("-0");
  }
}

test("configure fills a pool to its size; take hands out ready processes, first made first", async () => {
  const procs = new FakeProcesses();
  const pool = new QemuWarmPool(procs);
  const a = snapshot("sha256:a", 100 << 20);
  await pool.configure(a, 2);
  assert.deepEqual(pool.status(), [{ digest: "sha256:a", size: 2, ready: 2, restored: 1 }]);
  assert.equal(pool.take(a), "sha256:a-0");
  assert.deepEqual(pool.status(), [{ digest: "sha256:a", size: 2, ready: 1, restored: 1 }]);
  await pool.fill(a);
  assert.deepEqual(pool.status()[0].ready, 2);
  assert.equal(pool.take(snapshot("sha256:other", 1)), undefined, "no pool for that snapshot");
});

test("take skips processes that died while they waited", async () => {
  const procs = new FakeProcesses();
  const pool = new QemuWarmPool(procs);
  const a = snapshot("sha256:a", 1 << 20);
  await pool.configure(a, 3);
  procs.dead.add("sha256:a-0").add("sha256:a-1");
  assert.equal(pool.take(a), "sha256:a-2");
  assert.equal(pool.take(a), undefined);
});

test("a smaller size discards the surplus; 0 empties the pool but keeps it listed", async () => {
  const procs = new FakeProcesses();
  const pool = new QemuWarmPool(procs);
  const a = snapshot("sha256:a", 1 << 20);
  await pool.configure(a, 3);
  await pool.configure(a, 1);
  assert.deepEqual(procs.discarded, ["sha256:a-2", "sha256:a-1"]);
  await pool.configure(a, 0);
  assert.deepEqual(pool.status(), [{ digest: "sha256:a", size: 0, ready: 0, restored: 0 }]);
  assert.equal(procs.launched.length, 3);
});

test("all pools together stay under the memory cap", async () => {
  const procs = new FakeProcesses();
  const pool = new QemuWarmPool(procs);
  pool.memoryCapBytes = 500 << 20;
  await pool.configure(snapshot("sha256:a", 200 << 20), 2);
  await pool.configure(snapshot("sha256:b", 200 << 20), 2);
  assert.deepEqual(
    pool.status().map((p) => p.ready),
    [2, 0],
    "400 MiB held: another 200 MiB would pass the cap",
  );
  await pool.configure(snapshot("sha256:c", 100 << 20), 5);
  assert.deepEqual(
    pool.status().map((p) => p.ready),
    [2, 0, 1],
  );
});

test("a pool that cannot fill is no error, and only snapshots can be pooled", async () => {
  const procs = new FakeProcesses();
  procs.failing = true;
  const pool = new QemuWarmPool(procs);
  await pool.configure(snapshot("sha256:a", 1 << 20), 2);
  assert.deepEqual(pool.status(), [{ digest: "sha256:a", size: 2, ready: 0, restored: 0 }]);
  await assert.rejects(
    pool.configure({ reference: "demo/vm:1", digest: "sha256:cold" } as unknown as PreparedArtifact, 1),
    (e: any) => e.code === "INVALID_ARGUMENT" && /has no RAM snapshot/.test(e.message),
  );
});

test("close discards every ready process and forgets the pools", async () => {
  const procs = new FakeProcesses();
  const pool = new QemuWarmPool(procs);
  await pool.configure(snapshot("sha256:a", 1 << 20), 2);
  await pool.configure(snapshot("sha256:b", 1 << 20), 1);
  await pool.close();
  assert.deepEqual(procs.discarded.sort(), ["sha256:a-0", "sha256:a-1", "sha256:b-2"]);
  assert.deepEqual(pool.status(), []);
});

test("close waits for a refill under way and discards what it launched: no process outlives the pool", async () => {
  let finish!: () => void;
  const slow = new Promise<void>((r) => (finish = r));
  const procs = new FakeProcesses();
  const launch = procs.launch.bind(procs);
  const pool = new QemuWarmPool(procs);
  const a = snapshot("sha256:a", 1 << 20);
  await pool.configure(a, 1);
  assert.equal(pool.take(a), "sha256:a-0");
  procs.launch = async (x) => {
    await slow; // QEMU is still starting when the daemon shuts down
    return launch(x);
  };
  const refill = pool.fill(a);
  const closed = pool.close();
  finish();
  await Promise.all([refill, closed]);
  assert.deepEqual(procs.discarded, ["sha256:a-1"], "the process the refill launched is discarded");
  await pool.fill(a);
  assert.deepEqual(procs.launched, ["sha256:a-0", "sha256:a-1"], "a closed pool launches nothing more");
});

test("a refill waits for the handed-out clone's first output (at most refillWaitMs), or not with at-once", async () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const procs = new FakeProcesses();
  const pool = new QemuWarmPool(procs);
  const a = snapshot("sha256:a", 100 << 20);
  await pool.configure(a, 1);
  pool.refillWaitMs = 60_000;
  pool.take(a);
  let spoke!: () => void;
  pool.refillSoon(a, new Promise<void>((r) => (spoke = r)));
  await sleep(200);
  assert.equal(procs.launched.length, 1, "no refill while the clone has not spoken");
  spoke();
  await sleep(150);
  assert.equal(procs.launched.length, 2, "refilled once it spoke");

  pool.refillWaitMs = 100;
  pool.take(a);
  pool.refillSoon(a, new Promise<void>(() => {}));
  await sleep(300);
  assert.equal(procs.launched.length, 3, "a clone that never speaks holds the refill back refillWaitMs only");

  pool.refillWhen = "at-once";
  pool.refillWaitMs = 60_000;
  pool.take(a);
  pool.refillSoon(a, new Promise<void>(() => {}));
  await sleep(150);
  assert.equal(procs.launched.length, 4, "at-once does not wait for output");
});
