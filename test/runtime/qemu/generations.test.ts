import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../../src/store/store.js";
import { loadArtifact, type Artifact } from "../../../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact } from "../../../src/artifact/prepare.js";
import { packSnapshot, type SnapshotResult } from "../../../src/artifact/snapshot.js";
import { QemuRuntime } from "../../../src/runtime/qemu/qemu-runtime.js";
import {
  encodeRamsnap,
  preloadRamsnap,
  readRamsnapBlock,
  readRamsnapHeader,
  type RamsnapIndex,
} from "../../../src/artifact/ramsnap.js";
import { MediaType } from "../../../src/core/media-types.js";
import { buildDemo, exec, ovm, ovmJson } from "../../helpers.js";
import { startRegistry } from "../../registry-server.js";

// Generation 1 is a snapshot of a cold-booted counting guest; generation N+1 is a snapshot of
// a clone restored from generation N after it counted on. One chain serves every test below.
let dir: string;
let store: Store;
let rt: QemuRuntime;
const cache = new PrepareCache();
const gens: { tag: string; snap: SnapshotResult; artifact: Artifact; last: number; first?: number }[] = [];

async function counters(id: string): Promise<number[]> {
  const out: number[] = [];
  for await (const r of await rt.logs(id)) {
    const m = /^OVMS-COUNTER: (\d+)$/.exec(r.line);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs = 300_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** snapshotAt counts until the guest passed `above` + 2, then snapshots it (and stops it) as `tag`. */
async function snapshotAt(id: string, source: Artifact, tag: string, above: number) {
  await waitFor(async () => ((await counters(id)).some((n) => n > above + 2) ? true : undefined));
  let last = -1;
  const snap = await rt.snapshot(id, { stop: true }, async (c) => {
    last = Math.max(...(await counters(id)));
    return packSnapshot(store, source, c, tag);
  });
  gens.push({ tag, snap, artifact: await loadArtifact(store, tag), last });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-gen-"));
  await chmod(dir, 0o755); // QEMU runs as nobody when the tests run as root
  store = await Store.open(join(dir, "store"));
  await buildDemo(store, "demo/vm:1.0", false);
  const source = await loadArtifact(store, "demo/vm:1.0");
  rt = await QemuRuntime.create({ stateDir: store.workDir });
  const info = await rt.start(await prepareArtifact(store, source, { cache }), {
    cmdline: "ovms.mode=counter",
    accel: "tcg",
    name: "gen0",
  });
  await snapshotAt(info.id, source, "demo/vm:gen1", 3);
  for (let g = 2; g <= 5; g++) {
    const parent = gens[g - 2];
    const prepared = await prepareArtifact(store, parent.artifact, {
      snapshotCacheDir: join(dir, "preload"),
      cache,
    });
    const clone = await rt.start(prepared, { name: `gen${g - 1}-clone` });
    parent.first = await waitFor(async () => (await counters(clone.id))[0]);
    await snapshotAt(clone.id, parent.artifact, `demo/vm:gen${g}`, parent.last);
  }
});

after(async () => {
  for (const i of await rt.list({ all: true })) await rt.remove(i.id, { force: true }).catch(() => undefined);
  await rt.close();
  await rm(dir, { recursive: true, force: true });
});

test("generations 1 to 5: each restores and continues the count of the one before", async () => {
  assert.equal(gens.length, 5);
  for (const g of gens.slice(0, 4)) {
    assert.ok(g.first! >= g.last, `${g.tag} restored counts on from ${g.last} (first ${g.first})`);
    assert.ok(g.first! <= g.last + 3, `${g.tag} restored does not start again (${g.first} vs ${g.last})`);
  }
  for (let i = 1; i < gens.length; i++) assert.ok(gens[i].last > gens[i - 1].last + 2);
  // Generation 5 too: restored, it counts on from where it was snapshotted.
  const five = gens[4];
  const prepared = await prepareArtifact(store, five.artifact, {
    snapshotCacheDir: join(dir, "preload"),
    cache,
  });
  const clone = await rt.start(prepared, { name: "gen5-clone" });
  assert.equal(clone.state, "running");
  const first = await waitFor(async () => (await counters(clone.id))[0]);
  assert.ok(
    first >= five.last && first <= five.last + 3,
    `gen5 counts on from ${five.last} (first ${first})`,
  );
  await rt.stop(clone.id, { force: true });
});

test("generation N+1's subject is generation N's snapshot, and its disk chain grows by one diff", async () => {
  for (let i = 1; i < gens.length; i++) {
    const [parent, child] = [gens[i - 1].artifact, gens[i].artifact];
    assert.equal(child.oci.subject?.digest, parent.descriptor.digest, `${gens[i].tag} subject`);
    assert.equal(child.ovms.diskLayers!.length, parent.ovms.diskLayers!.length + 1);
    assert.equal(child.ovms.diskLayers!.at(-1)!.parent, parent.ovms.diskLayers!.at(-1)!.ref);
  }
});

test("memory is stored incrementally: each generation stores only the blocks that changed", async () => {
  const first = gens[0].snap.ramsnap;
  assert.equal(first.metadata.version, 2);
  assert.equal(first.parents.length, 0, "generation 1 has no parent");
  assert.equal(first.stored.blocks, first.metadata.memory.blocks);
  const table = gens.map((g) => ({
    tag: g.tag,
    blobBytes: g.snap.ramsnap.size,
    storedBlocks: g.snap.ramsnap.stored.blocks,
    blocks: g.snap.ramsnap.metadata.memory.blocks,
    storedBytes: g.snap.ramsnap.stored.bytes,
    memoryBytes: g.snap.ramsnap.metadata.memory.bytes,
  }));
  console.log(JSON.stringify(table));
  for (let i = 1; i < gens.length; i++) {
    const r = gens[i].snap.ramsnap;
    const a = gens[i].artifact;
    // The parent's blob is a layer of the child, named in ramSnapshot.parents.
    assert.ok(
      r.parents.some((p) => p.ref === gens[i - 1].snap.ramsnap.digest),
      `${gens[i].tag} refers to its parent`,
    );
    assert.deepEqual(
      a.ovms.ramSnapshot!.parents!.map((p) => p.ref),
      r.parents.map((p) => p.ref),
    );
    for (const p of r.parents)
      assert.ok(a.oci.layers.some((l) => l.digest === p.ref && l.mediaType === MediaType.RamSnapshot));
    assert.ok(
      r.stored.blocks < r.metadata.memory.blocks,
      `${gens[i].tag} stores ${r.stored.blocks} of ${r.metadata.memory.blocks} blocks`,
    );
    assert.ok(
      r.size < first.size / 2,
      `${gens[i].tag}'s blob is ${r.size} bytes, generation 1's ${first.size}`,
    );
  }
});

/** lz4d decompresses a whole blob with the lz4 CLI: what `lz4 -d` prints (frames M, D, own blocks). */
async function lz4d(blob: string, out: string): Promise<Buffer> {
  await exec("lz4", ["-d", "-f", "-q", blob, out]);
  return readFile(out);
}

test("generation 5 decodes independently: lz4 CLI per blob, the index by hand, every block's sha256", async () => {
  const five = gens[4].snap.ramsnap;
  const blobPath = (d: string) => store.blobPath(d as `sha256:${string}`);
  const raw = await readFile(blobPath(five.digest));
  assert.equal(raw.subarray(raw.length - 16, raw.length - 8).toString(), "OVMSIDX1");
  const x = Number(raw.readBigUInt64LE(raw.length - 8));
  assert.equal(raw.readUInt32LE(x), 0x184d2a5e);
  const indexJson = raw.subarray(x + 8, raw.length - 16);
  assert.equal(
    "sha256:" + createHash("sha256").update(indexJson).digest("hex"),
    gens[4].artifact.ovms.ramSnapshot!.indexDigest,
    "the manifest names the index by digest",
  );
  const index = JSON.parse(indexJson.toString()) as RamsnapIndex;
  // Each blob's own block frames, decompressed by lz4 -d, in index order after M and D.
  const own = new Map<string, Map<number, Buffer>>();
  const decode = async (digest: string) => {
    const r = await readFile(blobPath(digest));
    const rx = Number(r.readBigUInt64LE(r.length - 8));
    const idx = JSON.parse(r.subarray(rx + 8, r.length - 16).toString()) as RamsnapIndex;
    const plain = await lz4d(blobPath(digest), join(dir, "plain"));
    const nl = plain.indexOf("\n", 15);
    const first = plain.subarray(0, 15).toString();
    assert.equal(first, "OVMS-RAMSNAP 2\n");
    const meta = JSON.parse(plain.subarray(15, nl).toString());
    let at = nl + 1 + meta.deviceState.size;
    const frames = new Map<number, Buffer>();
    for (const b of idx.blocks.filter((b) => b.blob === undefined)) {
      frames.set(b.frameOffset, plain.subarray(at, at + b.length));
      at += b.length;
    }
    assert.equal(at, plain.length, `${digest}: lz4 -d printed M, D and exactly its own blocks`);
    own.set(digest, frames);
    return meta;
  };
  const meta = await decode(five.digest);
  for (const p of index.parents!) await decode(p);
  const memory = Buffer.alloc(meta.memoryBytes);
  for (const b of index.blocks) {
    const data = own.get(b.blob ?? five.digest)!.get(b.frameOffset)!;
    assert.equal(data.length, b.length);
    assert.equal(createHash("sha256").update(data).digest("hex"), b.sha256, `block at ${b.guestOffset}`);
    data.copy(memory, b.guestOffset);
  }
  // The runtime's reader agrees byte for byte.
  const h = await readRamsnapHeader(blobPath(five.digest));
  const parents = new Map(index.parents!.map((p) => [p, blobPath(p)]));
  await preloadRamsnap(blobPath(five.digest), h, join(dir, "mem5"), join(dir, "dev5"), parents);
  assert.ok(memory.equals(await readFile(join(dir, "mem5"))), "independent decoding = runtime preload");
});

test("a corrupted block is refused on its own, naming it; the other blocks still read", async () => {
  const five = gens[4].snap.ramsnap;
  const blob = store.blobPath(five.digest);
  const h = await readRamsnapHeader(blob);
  const parents = new Map(h.index.parents!.map((p) => [p, store.blobPath(p as `sha256:${string}`)]));
  const mine = h.index.blocks.findIndex((b) => b.blob === undefined && b.length > 65536);
  const inherited = h.index.blocks.findIndex((b) => b.blob !== undefined);
  assert.ok(mine >= 0 && inherited >= 0);
  // Flip one byte inside one of this blob's block frames.
  const bad = join(dir, "bad5.bin");
  const bytes = Buffer.from(await readFile(blob));
  const b = h.index.blocks[mine];
  bytes[b.frameOffset + Math.floor(b.frameLength / 2)] ^= 0xff;
  await writeFile(bad, bytes);
  await assert.rejects(
    readRamsnapBlock(bad, h, mine, parents),
    (e: any) => e.code === "RAMSNAP_INVALID" && e.message.includes(`block at ${b.guestOffset}`),
  );
  for (const i of [mine - 1, mine + 1, inherited].filter((i) => i >= 0 && i < h.index.blocks.length))
    assert.equal((await readRamsnapBlock(bad, h, i, parents)).length, h.index.blocks[i].length);
  // A block whose bytes decompress but do not hash to the index's sha256 (say, a parent blob swapped).
  const lying = structuredClone(h);
  lying.index.blocks[inherited].sha256 = "0".repeat(64);
  await assert.rejects(
    readRamsnapBlock(blob, lying, inherited, parents),
    (e: any) => e.code === "RAMSNAP_INVALID" && /hashes to .* its index says 0{64}/.test(e.message),
  );
  // And a whole preload stops at it.
  await assert.rejects(
    preloadRamsnap(bad, h, join(dir, "mem-bad"), join(dir, "dev-bad"), parents),
    (e: any) => e.code === "RAMSNAP_INVALID" && e.message.includes(`block at ${b.guestOffset}`),
  );
});

test("layout 1 still reads; an unknown layout is refused by its number", async () => {
  const mem = join(dir, "mem1");
  const data = Buffer.alloc(8 << 20);
  data.fill(7, 4096, 3 << 20);
  await writeFile(mem, data);
  const input = {
    metadata: {
      runtime: { name: "qemu", version: "7.2" },
      machine: "microvm",
      memoryBytes: data.length,
      vcpus: 1,
      cpuModel: "max",
      accel: "tcg",
      devices: [],
      diskLayers: [],
    },
    deviceState: Buffer.from("QEVM"),
    memoryFile: mem,
  };
  const chunks: Buffer[] = [];
  for await (const c of encodeRamsnap(input)) chunks.push(c);
  const v1 = join(dir, "v1.bin");
  await writeFile(v1, Buffer.concat(chunks));
  const h = await readRamsnapHeader(v1);
  assert.equal(h.metadata.version, 1);
  await preloadRamsnap(v1, h, join(dir, "v1-mem"), join(dir, "v1-dev"));
  assert.ok((await readFile(join(dir, "v1-mem"))).equals(data));
  // Layout 3 (say, from a newer writer): frame M's first line names it, and the reader says so.
  const { compressFrame } = await import("lz4-napi");
  const m3 = await compressFrame(Buffer.from('OVMS-RAMSNAP 3\n{"version":3}\n'), { contentChecksum: true });
  const idx = Buffer.from(
    JSON.stringify({
      blocks: [],
      metadata: { frameOffset: 0, frameLength: m3.length },
      deviceState: { frameOffset: 0, frameLength: 0 },
    }),
  );
  const x = Buffer.alloc(8 + idx.length + 16);
  x.writeUInt32LE(0x184d2a5e, 0);
  x.writeUInt32LE(idx.length + 16, 4);
  idx.copy(x, 8);
  x.write("OVMSIDX1", 8 + idx.length, "ascii");
  x.writeBigUInt64LE(BigInt(m3.length), 8 + idx.length + 8);
  const v3 = join(dir, "v3.bin");
  await writeFile(v3, Buffer.concat([m3, x]));
  await assert.rejects(
    readRamsnapHeader(v3),
    (e: any) => e.code === "RAMSNAP_INVALID" && /layout version 3 is not supported/.test(e.message),
  );
});

test("push and pull of generation 5 after generation 4 move only its new blobs; the pulled copy restores", async () => {
  const reg = await startRegistry();
  try {
    const four = `${reg.host}/demo/vm:gen4`;
    const five = `${reg.host}/demo/vm:gen5`;
    for (const [from, to] of [
      ["demo/vm:gen4", four],
      ["demo/vm:gen5", five],
    ]) {
      const t = await ovm(["--store", store.root, "tag", from, to]);
      assert.equal(t.code, 0, t.stderr);
    }
    await ovmJson(["--store", store.root, "push", "--referrers", "false", four]);
    const pushed = await ovmJson(["--store", store.root, "push", "--referrers", "false", five]);
    // New in generation 5: its config, its overlay diff and its ramsnap blob; the rest is there.
    const g5 = gens[4];
    console.log(
      JSON.stringify({
        push: pushed,
        stored: g5.snap.ramsnap.stored,
        blocks: g5.snap.ramsnap.metadata.memory.blocks,
      }),
    );
    assert.equal(pushed.blobsTransferred, 3, JSON.stringify(pushed));
    assert.equal(pushed.blobs - pushed.blobsTransferred, pushed.blobsSkipped + pushed.blobsMounted);
    assert.ok(pushed.bytesTransferred < gens[0].snap.ramsnap.size / 2, JSON.stringify(pushed));
    const fresh = join(dir, "fresh-store");
    await ovmJson(["--store", fresh, "pull", "--referrers", "false", four]);
    const pulled = await ovmJson(["--store", fresh, "pull", "--referrers", "false", five]);
    console.log(JSON.stringify({ pull: pulled }));
    assert.equal(pulled.blobsTransferred, 3, JSON.stringify(pulled));
    assert.ok(pulled.bytesTransferred < gens[0].snap.ramsnap.size / 2);
    const other = await Store.open(fresh);
    const a = await loadArtifact(other, five);
    assert.equal(a.descriptor.digest, g5.snap.descriptor.digest);
    const prepared = await prepareArtifact(other, a, { snapshotCacheDir: join(dir, "fresh-preload"), cache });
    const info = await rt.start(prepared, { name: "pulled-gen5" });
    const first = await waitFor(async () => (await counters(info.id))[0]);
    assert.ok(first >= g5.last, `the pulled generation 5 counts on (${first} >= ${g5.last})`);
    await rt.stop(info.id, { force: true });
  } finally {
    await reg.stop();
  }
});
