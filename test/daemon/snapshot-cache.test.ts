import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import {
  SNAPSHOT_CACHE_ROOT,
  USED_FILE,
  defaultSnapshotCache,
  evictPreloads,
  pinnedBy,
  listPreloads,
} from "../../src/artifact/snapshot-cache.js";
import { buildDemo, ovm } from "../helpers.js";
import { ContractChecker } from "./openapi-check.js";
import { instanceDiagnosis, serialLine, startDaemon, waitFor, type DaemonProc } from "./harness.js";

// The preload cache (issue 14, item 2) and the warm pool made visible (item 4), on one real
// ovmd: a cap with least-recently-used eviction that never takes a preload in use, orphans of
// deleted stores pruned at daemon start, `ovm system df`, `ovm pool ls/rm`, and instances
// labelled with the reference the user ran. The guest is the demo VM without a device (TCG).
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;
let orphan: string;
let neighbour: { store: string; cache: string };

const HEX = (c: string) => c.repeat(64);

/** fakePreload writes a complete preload folder of `kib` KiB, last used `agoS` seconds ago. */
async function fakePreload(cache: string, hex: string, kib: number, agoS: number): Promise<string> {
  const p = join(cache, hex);
  await mkdir(p, { recursive: true });
  await writeFile(join(p, "memory"), Buffer.alloc(kib * 1024, 1));
  await writeFile(join(p, "complete"), "");
  await writeFile(join(p, USED_FILE), "");
  const t = new Date(Date.now() - agoS * 1000);
  await utimes(join(p, USED_FILE), t, t);
  return p;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-snapcache-"));
  const store = join(dir, "store");
  await buildDemo(await Store.open(store), "demo/vm:plain", false);
  // What deleted stores leave in tmpfs: a cache folder whose store is gone.
  orphan = join(SNAPSHOT_CACHE_ROOT, `test-orphan-${process.pid}`);
  await fakePreload(orphan, HEX("e"), 64, 0);
  await writeFile(join(orphan, "store-path"), join(dir, "deleted-store"));
  // Another live store's preloads: nobody else's daemon or gc may touch them.
  const other = await Store.open(join(dir, "neighbour"));
  neighbour = { store: other.root, cache: defaultSnapshotCache(other) };
  await fakePreload(neighbour.cache, HEX("f"), 64, 3600);
  await writeFile(join(neighbour.cache, "store-path"), other.root);
  d = await startDaemon(
    join(dir, "d"),
    checker,
    ["--snapshot-cache", "1K", "--warm-pool", "0", "--warm-pool-for", "demo/vm:s2=1"],
    store,
  );
});

after(async () => {
  for (const i of (await d?.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? [])
    await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
  await d?.stop();
  await rm(orphan, { recursive: true, force: true });
  await rm(neighbour.cache, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
});

test("evictPreloads keeps a cache under its cap, least recently used first, never a pinned one", async () => {
  const cache = join(dir, "lru");
  await fakePreload(cache, HEX("1"), 256, 300); // oldest, pinned
  await fakePreload(cache, HEX("2"), 256, 200);
  await fakePreload(cache, HEX("3"), 256, 100);
  await fakePreload(cache, HEX("4"), 256, 0); // newest
  assert.deepEqual(
    (await listPreloads(cache)).map((p) => p.digest.slice(7, 8)),
    ["1", "2", "3", "4"],
    "least recently used first",
  );
  const evicted = await evictPreloads(cache, 600 * 1024, pinnedBy(new Set([`sha256:${HEX("1")}`])));
  assert.deepEqual(
    evicted.map((p) => p.digest.slice(7, 8)),
    ["2", "3"],
    "the oldest unpinned ones go until the rest fits",
  );
  assert.ok(existsSync(join(cache, HEX("1"))), "pinned: kept although it is the oldest");
  assert.ok(existsSync(join(cache, HEX("4"))));
  assert.deepEqual(
    await evictPreloads(cache, 0, pinnedBy(new Set([`sha256:${HEX("1")}`, `sha256:${HEX("4")}`]))),
    [],
  );
  assert.deepEqual(
    (await readdir(cache)).filter((e) => e.startsWith(".evicted-")),
    [],
    "what was renamed aside is gone too",
  );
});

test("at daemon start, the preloads of a deleted store are pruned; a live store's are not touched", () => {
  assert.ok(!existsSync(orphan), "the orphaned cache folder is gone");
  assert.match(d.output(), /pruned the preloads of stores that are gone/);
  assert.ok(existsSync(join(neighbour.cache, HEX("f"))), "another live store's preload stays");
});

test("over the cap, the least recently used preload goes; one a running instance maps stays, and deleting it under the instance is safe", async () => {
  let r = await d.api.post("/start", {
    manifest: "demo/vm:plain",
    overrides: { name: "counter", cmdline: "ovms.mode=counter", accel: "tcg" },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await serialLine(d.api, "counter", /^OVMS-COUNTER: 3$/, 180_000);
  r = await d.api.post("/snapshot", { instance_id: "counter", tag: "demo/vm:s1" });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  r = await d.api.post("/snapshot", { instance_id: "counter", tag: "demo/vm:s2", stop: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));

  // A restore keeps the snapshot's memory: a mismatch is said in sizes, not byte counts.
  const resized = await ovm(["run", "-d", "--memory", "256M", "demo/vm:s1"], d.env);
  assert.notEqual(resized.code, 0);
  assert.match(resized.stderr, /memory: the snapshot has 192\.0 MiB, 256\.0 MiB asked/);

  // A restore of s1: its preload is made, and the running clone pins it although the cache is over its 1 KiB cap.
  r = await d.api.post("/start", { manifest: "demo/vm:s1", overrides: { name: "c1" } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await serialLine(d.api, "c1", /^OVMS-COUNTER: \d+$/);
  let df = JSON.parse((await ovm(["--json", "system", "df"], d.env)).stdout);
  assert.equal(df.snapshotCache.capBytes, 1024);
  assert.equal(df.snapshotCache.capRecorded, true);
  assert.equal(df.snapshotCache.preloads.length, 1, JSON.stringify(df.snapshotCache));
  const s1 = df.snapshotCache.preloads[0];
  assert.deepEqual(s1.references, ["demo/vm:s1"]);
  assert.equal(s1.inUse, true);
  assert.ok(s1.bytes > 1024 * 1024, `the preload takes tmpfs (${s1.bytes} bytes)`);
  assert.ok(Date.now() - Date.parse(s1.lastUsed) < 10 * 60_000);
  const text = await ovm(["system", "df"], d.env);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /Preloaded snapshots\s+1\s+[\d.]+ MiB\s+tmpfs \(RAM\), cap 1\.0 KiB/);
  assert.match(text.stdout, /demo\/vm:s1\s+[\d.]+ MiB\s+\S+ ago\s+yes/);

  // Linux keeps a deleted file's pages for whoever maps them: the clone counts on without its preload's name.
  const s1dir = join(df.snapshotCache.dir, s1.digest.slice(7));
  await rm(s1dir, { recursive: true, force: true });
  const seen = async () =>
    ((await d.api.get("/logs/c1")).body as { line: string }[])
      .map((l) => /^OVMS-COUNTER: (\d+)$/.exec(l.line)?.[1])
      .filter(Boolean)
      .map(Number)
      .pop() ?? 0;
  const before = await seen();
  await waitFor(
    "c1 to count on after its preload was deleted",
    async () => ((await seen()) >= before + 2 ? true : undefined),
    60_000,
    () => instanceDiagnosis(d.api, "c1"),
  );
  assert.equal((await d.api.get("/status/c1")).body.state, "running");
  assert.equal((await d.api.request("DELETE", "/instances/c1?force=1")).status, 200);

  // s1 again (made anew), stopped: nothing pins it. A restore of s2 takes the cache over its cap: s1 goes, s2 stays.
  r = await d.api.post("/start", { manifest: "demo/vm:s1", overrides: { name: "c1b" } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal((await d.api.request("DELETE", "/instances/c1b?force=1")).status, 200);
  r = await d.api.post("/start", { manifest: "demo/vm:s2", overrides: { name: "c2" } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitFor("the least recently used preload to be evicted", async () =>
    /evicted a preloaded snapshot/.test(d.output()) ? true : undefined,
  );
  df = JSON.parse((await ovm(["--json", "system", "df"], d.env)).stdout);
  assert.deepEqual(
    df.snapshotCache.preloads.map((p: { references: string[] }) => p.references),
    [["demo/vm:s2"]],
    "s1 was evicted, s2 stays (its instance and its warm pool map it)",
  );
  assert.ok(existsSync(join(neighbour.cache, HEX("f"))), "the neighbour store's preload is still there");
  assert.equal((await ovm(["gc"], d.env)).code, 0);
  assert.ok(
    existsSync(join(neighbour.cache, HEX("f"))),
    "this store's gc leaves another live store's preloads",
  );
});

test("the warm pool is listed (ovm pool ls, a line under ovm ps, system df), emptied by ovm pool rm, and a restore it serves shows the reference the user ran", async () => {
  const pool = await waitFor(
    "the warm pool of demo/vm:s2 to be ready",
    async () => {
      const r = await ovm(["--json", "pool", "ls"], d.env);
      assert.equal(r.code, 0, r.stderr);
      const p = (JSON.parse(r.stdout) as { reference: string; ready: number }[]).find((x) => x.ready > 0);
      return p;
    },
    120_000,
    async () =>
      `ovm pool ls: ${(await ovm(["--json", "pool", "ls"], d.env)).stdout}\nthe daemon's last words:\n${d.output().split("\n").slice(-15).join("\n")}`,
  );
  assert.match(pool.reference, /demo\/vm:s2$/);
  const ls = await ovm(["pool", "ls"], d.env);
  assert.match(
    ls.stdout,
    /^REFERENCE\s+DIGEST\s+READY\s+SIZE\s+MEMORY\n.*demo\/vm:s2\s+[0-9a-f]{12}\s+1\s+1\s+192\.0 MiB/m,
  );
  const ps = await ovm(["ps"], d.env);
  assert.match(
    ps.stderr,
    /warm pool: 1 paused QEMU process\(es\) ready for 1 snapshot\(s\), 192\.0 MiB .*ovm pool rm REF/,
  );
  const df = JSON.parse((await ovm(["--json", "system", "df"], d.env)).stdout);
  assert.equal(df.warmPool.daemon, true);
  assert.deepEqual(
    df.warmPool.pools.map((p: { ready: number }) => p.ready),
    [1],
  );

  // Another name of the same snapshot: the pool serves it, and the instance is labelled with that name.
  assert.equal((await ovm(["tag", "demo/vm:s2", "demo/vm:alias"], d.env)).code, 0);
  const run = await ovm(["run", "-d", "--name", "via-pool", "demo/vm:alias"], d.env);
  assert.equal(run.code, 0, run.stderr);
  const st = (await d.api.get("/status/via-pool")).body;
  assert.match(st.artifact.reference, /demo\/vm:alias$/, "the reference the user ran");
  assert.match((await ovm(["ps"], d.env)).stdout, /via-pool\s+\S+\s+\S+\s+\S+\s+demo\/vm:alias/);

  // Emptying it: the ready processes stop, and it stays empty.
  await waitFor("the pool to refill", async () => {
    const p = JSON.parse((await ovm(["--json", "pool", "ls"], d.env)).stdout) as { ready: number }[];
    return p.some((x) => x.ready > 0) ? true : undefined;
  });
  const rm1 = await ovm(["pool", "rm", "demo/vm:s2", "nosuch/vm:1"], d.env);
  assert.equal(rm1.code, 1, "one of two failed");
  assert.match(rm1.stdout, /demo\/vm:s2: 1 paused QEMU process\(es\) stopped/);
  assert.match(rm1.stderr, /pool rm nosuch\/vm:1: no warm pool for it \(ovm pool ls lists them\)/);
  const left = JSON.parse((await ovm(["--json", "pool", "ls"], d.env)).stdout) as { ready: number }[];
  assert.ok(
    left.every((p) => p.ready === 0),
    JSON.stringify(left),
  );
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(
    (JSON.parse((await ovm(["--json", "pool", "ls"], d.env)).stdout) as { ready: number }[]).every(
      (p) => p.ready === 0,
    ),
    "not filled again",
  );
  assert.doesNotMatch((await ovm(["ps"], d.env)).stderr, /warm pool/);
});
