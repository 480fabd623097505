import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { copyFile, mkdtemp, readFile, rm, writeFile, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../../src/store/store.js";
import { loadArtifact, type Artifact } from "../../../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact } from "../../../src/artifact/prepare.js";
import { packSnapshot, type SnapshotResult } from "../../../src/artifact/snapshot.js";
import { readRamsnapHeader } from "../../../src/artifact/ramsnap.js";
import { QemuRuntime } from "../../../src/runtime/qemu/qemu-runtime.js";
import { populate } from "../../../src/runtime/qemu/background.js";
import type { SnapshotReport } from "../../../src/runtime/types.js";
import { MediaType } from "../../../src/core/media-types.js";
import { buildDemo, exec, ovm } from "../../helpers.js";
import { startRegistry } from "../../registry-server.js";
import { describeInstance } from "../../qemu-diagnosis.js";

let dir: string;
let store: Store;
let rt: QemuRuntime;
let source: Artifact;
let snap: SnapshotResult;
let lastBefore = -1;
let countedWhilePacking = -1;
const report: SnapshotReport = {};
let cacheDir: string;
let shmCacheDir: string;
// What preparing remembers across this file's starts, as the daemon's controller keeps one.
const cache = new PrepareCache();

/** diagnosis describes an instance a test waited for in vain (describeInstance). */
async function diagnosis(id: string): Promise<string> {
  const tail: string[] = [];
  for await (const r of await rt.logs(id)) tail.push(r.line);
  return describeInstance(id, await rt.status(id).catch(() => undefined), tail);
}

async function lines(id: string, re: RegExp): Promise<string[]> {
  const out: string[] = [];
  for await (const r of await rt.logs(id)) if (re.test(r.line)) out.push(r.line);
  return out;
}

/** waitFor polls `fn`; at a time out it says what instance `id` (if given) was doing. */
async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs = 60_000, id?: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out${id ? `\n${await diagnosis(id)}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const counters = async (id: string) =>
  (await lines(id, /^OVMS-COUNTER: \d+$/)).map((l) => Number(l.split(" ")[1]));

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-snap-"));
  await chmod(dir, 0o755); // QEMU runs as nobody when the tests run as root
  cacheDir = join(dir, "preload");
  shmCacheDir = await mkdtemp("/dev/shm/ovms-snap-test-");
  await chmod(shmCacheDir, 0o755);
  store = await Store.open(join(dir, "store"));
  await buildDemo(store, "demo/vm:1.0", false);
  source = await loadArtifact(store, "demo/vm:1.0");
  rt = await QemuRuntime.create({ stateDir: store.workDir });
  // One snapshot of a counting guest serves every test below.
  const info = await rt.start(await prepareArtifact(store, source, { cache }), {
    cmdline: "ovms.mode=counter",
    accel: "tcg",
    name: "source",
  });
  await waitFor(
    async () => ((await counters(info.id)).some((n) => n >= 5) ? true : undefined),
    60_000,
    info.id,
  );
  snap = await rt.snapshot(
    info.id,
    {
      report,
      whilePaused: async () => {
        await new Promise((r) => setTimeout(r, 300)); // what the guest printed reaches serial.log
        lastBefore = Math.max(...(await counters(info.id)));
      },
    },
    async (c) => {
      // The guest runs again while its copies are packed: let it count on first, so a snapshot
      // that held anything later than the pause would show it.
      await waitFor(
        async () => (Math.max(...(await counters(info.id))) > lastBefore + 3 ? true : undefined),
        60_000,
        info.id,
      );
      countedWhilePacking = Math.max(...(await counters(info.id)));
      return packSnapshot(store, source, c, "demo/vm:snap");
    },
  );
});

after(async () => {
  for (const i of await rt.list({ all: true })) await rt.remove(i.id, { force: true }).catch(() => undefined);
  await rt.close();
  await rm(dir, { recursive: true, force: true });
  await rm(shmCacheDir, { recursive: true, force: true });
});

test("snapshot: a new artifact with the overlay as a diff, a ramsnap part and subject = source", async () => {
  const a = await loadArtifact(store, "demo/vm:snap");
  assert.equal(a.oci.subject?.digest, source.descriptor.digest);
  assert.equal(a.ovms.diskLayers!.length, source.ovms.diskLayers!.length + 1);
  assert.equal(a.ovms.diskLayers!.at(-1)!.parent, source.ovms.diskLayers!.at(-1)!.ref);
  assert.equal(a.ovms.ramSnapshot?.compression, "lz4");
  assert.equal(a.oci.layers.at(-1)!.mediaType, MediaType.RamSnapshot);
  assert.equal(a.ovms.runtimeHints?.machine, "microvm");
  assert.match(a.ovms.kernel.args ?? "", /ovms\.mode=counter/);
  const meta = snap.ramsnap.metadata;
  assert.equal(meta.memoryBytes, 192 << 20);
  assert.ok(
    meta.memory.bytes < meta.memoryBytes / 2,
    `only non-zero memory is stored: ${meta.memory.bytes} of ${meta.memoryBytes}`,
  );
  assert.deepEqual(
    meta.diskLayers,
    a.ovms.diskLayers!.map((d) => d.ref),
  );
  assert.ok((await store.referrers(source.descriptor)).some((r) => r.digest === snap.descriptor.digest));
});

test("snapshot: the guest is resumed before packing; the pause it reports is shorter than the whole", () => {
  assert.equal(
    report.mode,
    rt.backgroundSnapshots ? "background" : "copy",
    "background where QEMU may use userfaultfd, else copy for RAM on the 256 KiB grid under TCG on QEMU 7.2 (precopy.ts)",
  );
  assert.equal(report.fallback, undefined);
  assert.ok(countedWhilePacking > lastBefore + 3, "the guest counted on while its snapshot was packed");
  assert.ok(report.pauseMs !== undefined && report.pauseMs > 0, `pause ${report.pauseMs} ms`);
  assert.ok(
    report.totalMs !== undefined && report.pauseMs < report.totalMs,
    `pause ${report.pauseMs} < total ${report.totalMs}`,
  );
  assert.ok(snap.bytesWritten >= snap.ramsnap.size);
});

test("the source keeps running after the snapshot", async () => {
  const n = await waitFor(async () => {
    const c = await counters("source");
    return c.length && Math.max(...c) > lastBefore + 2 ? Math.max(...c) : undefined;
  }, 20_000);
  assert.ok(n > lastBefore);
  await rt.stop("source", { force: true });
});

test("the ramsnap blob decodes with the lz4 CLI and its index independently", async () => {
  const blob = store.blobPath(snap.ramsnap.digest);
  const out = join(dir, "decoded");
  await exec("lz4", ["-d", "-f", "-q", blob, out]);
  const plain = await readFile(out);
  const nl = plain.indexOf("\n", 15);
  assert.equal(plain.subarray(0, 15).toString(), "OVMS-RAMSNAP 2\n");
  const meta = JSON.parse(plain.subarray(15, nl).toString());
  assert.equal(plain.length, nl + 1 + meta.deviceState.size + meta.memory.bytes);
  const dev = plain.subarray(nl + 1, nl + 1 + meta.deviceState.size);
  assert.equal(createHash("sha256").update(dev).digest("hex"), meta.deviceState.sha256);
  assert.equal(dev.readUInt32BE(0), 0x5145564d, "device state is a QEMU migration stream (QEVM)");
  // Frame X by hand: trailer → skippable frame → index → one block read alone.
  const raw = await readFile(blob);
  assert.equal(raw.subarray(raw.length - 16, raw.length - 8).toString(), "OVMSIDX1");
  const x = Number(raw.readBigUInt64LE(raw.length - 8));
  assert.equal(raw.readUInt32LE(x), 0x184d2a5e);
  const index = JSON.parse(raw.subarray(x + 8, raw.length - 16).toString());
  const b = index.blocks[index.blocks.length - 1];
  const one = join(dir, "one.lz4");
  await writeFile(one, raw.subarray(b.frameOffset, b.frameOffset + b.frameLength));
  await exec("lz4", ["-d", "-f", "-q", one, join(dir, "one")]);
  const memStart = nl + 1 + meta.deviceState.size;
  const sumBefore = index.blocks.slice(0, -1).reduce((n: number, x: { length: number }) => n + x.length, 0);
  assert.deepEqual(
    await readFile(join(dir, "one")),
    plain.subarray(memStart + sumBefore, memStart + sumBefore + b.length),
  );
});

test("restore: the counter continues from where it was, and the disk holds what was written", async () => {
  const prepared = await prepareArtifact(store, await loadArtifact(store, "demo/vm:snap"), {
    snapshotCacheDir: cacheDir,
    cache,
  });
  const info = await rt.start(prepared, { name: "restored" });
  assert.equal(info.state, "running");
  assert.ok(info.metrics.startMs !== undefined);
  const first = await waitFor(async () => (await counters(info.id))[0], 60_000, info.id);
  assert.ok(first >= lastBefore, `restored counter ${first} continues from ${lastBefore}, not from zero`);
  // The state at the pause, not what the guest did while its snapshot was packed.
  assert.ok(
    first <= lastBefore + 2 && first < countedWhilePacking,
    `restored counter ${first}: the pause was at ${lastBefore}, the source counted to ${countedWhilePacking} while packing`,
  );
  assert.equal((await lines(info.id, /OVMS-READY/)).length, 0, "a restored guest does not boot again");
  // What the restored VM sees on disk: its overlay chain, flattened and read with debugfs.
  const overlay = join(store.workDir, "instances", info.id, "overlay.qcow2");
  await rt.stop(info.id, { force: true });
  const raw = join(dir, "restored.raw");
  await exec("qemu-img", ["convert", "-O", "raw", overlay, raw]);
  // The guest's write may still sit in the ext4 journal: replay it as a mount would.
  await exec("e2fsck", ["-fy", raw]).catch(() => undefined);
  assert.match(await exec("debugfs", ["-R", "cat /data/counter-started", raw]), /counter started/);
});

test("three clones run at once and diverge; the preloaded memory is never written", async () => {
  const prepared = await prepareArtifact(store, await loadArtifact(store, "demo/vm:snap"), {
    snapshotCacheDir: cacheDir,
    cache,
  });
  const memSum = createHash("sha256")
    .update(await readFile(prepared.ramSnapshot!.memoryFile))
    .digest("hex");
  const clones = await Promise.all([0, 1, 2].map((i) => rt.start(prepared, { name: `clone-${i}` })));
  assert.equal(new Set(clones.map((c) => c.id)).size, 3);
  await Promise.all(
    clones.map((c) =>
      waitFor(async () => ((await counters(c.id)).length >= 3 ? true : undefined), 60_000, c.id),
    ),
  );
  // Stopping one does not stop the others: they are independent processes and memories.
  await rt.stop(clones[0].id, { force: true });
  const [a, b] = await Promise.all([counters(clones[1].id), counters(clones[2].id)]);
  await new Promise((r) => setTimeout(r, 1000));
  const [a2, b2] = await Promise.all([counters(clones[1].id), counters(clones[2].id)]);
  assert.ok(a2.length > a.length && b2.length > b.length, "the other clones keep running");
  for (const c of clones.slice(1)) await rt.stop(c.id, { force: true });
  assert.equal(
    createHash("sha256")
      .update(await readFile(prepared.ramSnapshot!.memoryFile))
      .digest("hex"),
    memSum,
  );
});

test("a running clone snapshotted in the background, live and by copy keeps running; each restores to its pause", async () => {
  // The daemon preloads snapshots into tmpfs (snapshot-cache.ts): a clone maps its memory from there.
  const prepared = await prepareArtifact(store, await loadArtifact(store, "demo/vm:snap"), {
    snapshotCacheDir: shmCacheDir,
    cache,
  });
  const clone = await rt.start(prepared, { name: "clone-live" });
  await waitFor(async () => ((await counters(clone.id)).length >= 3 ? true : undefined), 60_000, clone.id);
  // populate fills in QEMU's page tables for the guest memory (what keeps QEMU's own pass out of the pause).
  const pid = (await rt.status(clone.id)).pid!;
  const rss = async () => {
    const smaps = await readFile(`/proc/${pid}/smaps`, "utf8");
    const at = smaps.indexOf(` ${prepared.ramSnapshot!.memoryFile}\n`);
    return Number(/\nRss:\s+(\d+) kB/.exec(smaps.slice(at))![1]) * 1024;
  };
  assert.ok((await rss()) < 192 << 20, "a fresh clone has mapped only what it touched");
  assert.equal(await populate(pid, [prepared.ramSnapshot!.memoryFile]), 192 << 20);
  assert.equal(await rss(), 192 << 20, "every page of the guest memory is mapped in QEMU");
  for (const method of ["background", "live", "copy"] as const) {
    const r: SnapshotReport = {};
    let at = -1;
    await rt.snapshot(
      clone.id,
      {
        method,
        report: r,
        whilePaused: async () => {
          await new Promise((ok) => setTimeout(ok, 300));
          at = Math.max(...(await counters(clone.id)));
        },
      },
      (c) => packSnapshot(store, source, c, `demo/vm:clone-${method}`),
    );
    assert.equal(r.mode, method === "background" && !rt.backgroundSnapshots ? "copy" : method, r.fallback);
    assert.ok(r.pauseMs !== undefined && r.totalMs !== undefined && r.pauseMs < r.totalMs);
    await waitFor(
      async () => (Math.max(...(await counters(clone.id))) > at + 2 ? true : undefined),
      60_000,
      clone.id,
    );
    const again = await rt.start(
      await prepareArtifact(store, await loadArtifact(store, `demo/vm:clone-${method}`), {
        snapshotCacheDir: cacheDir,
        cache,
      }),
      { name: `clone-${method}-restored` },
    );
    const first = await waitFor(async () => (await counters(again.id))[0], 60_000, again.id);
    assert.ok(first >= at && first <= at + 2, `${method}: restored at ${first}, paused at ${at}`);
    await rt.stop(again.id, { force: true });
  }
  await rt.stop(clone.id, { force: true });
});

test("background: memory off tmpfs (a preload cache on disk) falls back to copy, saying why", async () => {
  const prepared = await prepareArtifact(store, await loadArtifact(store, "demo/vm:snap"), {
    snapshotCacheDir: cacheDir,
    cache,
  });
  const clone = await rt.start(prepared, { name: "clone-on-disk" });
  try {
    await waitFor(async () => ((await counters(clone.id)).length ? true : undefined), 60_000, clone.id);
    const r: SnapshotReport = {};
    await rt.snapshot(clone.id, { method: "background", report: r }, async () => undefined);
    assert.equal(r.mode, "copy");
    assert.match(r.fallback ?? "", /background: the guest memory .*preload.* is not on tmpfs/);
  } finally {
    await rt.stop(clone.id, { force: true });
  }
});

test("warm pool: starts are served by paused processes and the pool refills", async () => {
  const prepared = await prepareArtifact(store, await loadArtifact(store, "demo/vm:snap"), {
    snapshotCacheDir: cacheDir,
    cache,
  });
  await rt.pool.configure(prepared, 2);
  assert.deepEqual(
    rt.pool.status().map((p) => [p.ready, p.restored]),
    [[2, 2]],
    "pooled clones are restored already (device state loaded), paused",
  );
  assert.equal((await rt.list()).length, 0, "pool processes are not instances");
  const info = await rt.start(prepared, { name: "from-pool" });
  assert.equal(info.state, "running");
  await waitFor(async () => ((await counters(info.id)).length ? true : undefined), 60_000, info.id);
  await waitFor(async () => (rt.pool.status()[0].ready === 2 ? true : undefined), 30_000);
  await rt.stop(info.id, { force: true });
  await rt.pool.configure(prepared, 0);
  assert.deepEqual(
    rt.pool.status().map((p) => p.ready),
    [0],
  );
});

test("snapshot → push → pull into a fresh store → restore", async () => {
  const reg = await startRegistry();
  try {
    const ref = `${reg.host}/demo/vm:snap`;
    const fresh = join(dir, "fresh-store");
    const push = await ovm(["--store", store.root, "tag", "demo/vm:snap", ref]);
    assert.equal(push.code, 0, push.stderr);
    const pushed = await ovm(["--store", store.root, "push", ref]);
    assert.equal(pushed.code, 0, pushed.stderr);
    const pulled = await ovm(["--store", fresh, "pull", ref]);
    assert.equal(pulled.code, 0, pulled.stderr);
    const other = await Store.open(fresh);
    const a = await loadArtifact(other, ref);
    assert.equal(a.descriptor.digest, snap.descriptor.digest, "the same artifact, digest for digest");
    const prepared = await prepareArtifact(other, a, { snapshotCacheDir: join(dir, "fresh-preload"), cache });
    const info = await rt.start(prepared, { name: "pulled-clone" });
    assert.equal(info.state, "running");
    const first = await waitFor(async () => (await counters(info.id))[0], 60_000, info.id);
    assert.ok(first >= lastBefore, `the pulled snapshot continues the count (${first} >= ${lastBefore})`);
    await rt.stop(info.id, { force: true });
  } finally {
    await reg.stop();
  }
});

test("mlock_required: refused naming RLIMIT_MEMLOCK when the limit cannot hold the memory", async () => {
  const a = await loadArtifact(store, "demo/vm:snap");
  const locked = { ...a, ovms: { ...a.ovms, ramSnapshot: { ...a.ovms.ramSnapshot!, mlock_required: true } } };
  const prepared = await prepareArtifact(store, locked, { snapshotCacheDir: cacheDir, cache });
  const limits = await readFile("/proc/self/limits", "utf8");
  const m = /Max locked memory\s+(\S+)/.exec(limits)!;
  const limit = m[1] === "unlimited" ? Infinity : Number(m[1]);
  // The runtime's QEMU never runs with CAP_IPC_LOCK (as root it drops to nobody), so the limit decides.
  if (limit < 192 << 20) {
    await assert.rejects(
      rt.start(prepared, { name: "locked" }),
      (e: any) => e.code === "INSUFFICIENT_RESOURCES" && /RLIMIT_MEMLOCK/.test(e.message),
    );
  } else {
    const info = await rt.start(prepared, { name: "locked" });
    assert.equal(info.state, "running");
    await rt.stop(info.id, { force: true });
  }
});

test("bad snapshots are refused before QEMU starts: flipped byte, truncated blob, other machine shape", async () => {
  const before = (await rt.list({ all: true })).length;
  const snapArt = await loadArtifact(store, "demo/vm:snap");
  // Truncated: a blob cut short fails the structural checks.
  const cut = join(dir, "cut.bin");
  const whole = await readFile(store.blobPath(snap.ramsnap.digest));
  await writeFile(cut, whole.subarray(0, whole.length - 100));
  await assert.rejects(readRamsnapHeader(cut), (e: any) => e.code === "RAMSNAP_INVALID");
  // Other machine shape: the same blob under a manifest that claims another memory size.
  const other = { ...snapArt.ovms, resources: { memory: 256 << 20, vcpus: 1 } };
  await assert.rejects(
    prepareArtifact(store, { ...snapArt, ovms: other }, { snapshotCacheDir: join(dir, "c2"), cache }),
    (e: any) =>
      e.code === "MANIFEST_INVALID" && /memory: snapshot 192\.0 MiB, manifest 256\.0 MiB/.test(e.message),
  );
  const prepared = await prepareArtifact(store, snapArt, { snapshotCacheDir: cacheDir, cache });
  await assert.rejects(
    rt.start(prepared, { memory: 256 << 20 }),
    (e: any) => e.code === "MANIFEST_INVALID" && /memory: snapshot/.test(e.message),
  );
  await assert.rejects(rt.start(prepared, { cmdline: "x=1" }), /cmdline/);
  // Flipped byte: the store's copy of the blob no longer matches its digest.
  const p = store.blobPath(snap.ramsnap.digest);
  const saved = join(dir, "saved.bin");
  await copyFile(p, saved);
  await chmod(p, 0o644);
  const flipped = Buffer.from(whole);
  flipped[Math.floor(flipped.length / 2)] ^= 0xff;
  await writeFile(p, flipped);
  await assert.rejects(
    prepareArtifact(store, snapArt, { snapshotCacheDir: join(dir, "c3"), cache }),
    (e: any) => e.code === "DIGEST_MISMATCH" && e.message.includes(snap.ramsnap.digest),
  );
  await copyFile(saved, p);
  assert.equal((await rt.list({ all: true })).length, before, "no instance was created");
});
