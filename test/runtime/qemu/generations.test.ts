import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../../src/store/store.js";
import { loadArtifact, type Artifact } from "../../../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact } from "../../../src/artifact/prepare.js";
import { packSnapshot, type SnapshotResult } from "../../../src/artifact/snapshot.js";
import { QemuRuntime } from "../../../src/runtime/qemu/qemu-runtime.js";
import { buildDemo } from "../../helpers.js";

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

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
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
