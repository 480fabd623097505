import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../../src/store/store.js";
import { loadArtifact } from "../../../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact, type PreparedArtifact } from "../../../src/artifact/prepare.js";
import { packSnapshot } from "../../../src/artifact/snapshot.js";
import { QemuRuntime } from "../../../src/runtime/qemu/qemu-runtime.js";
import { bindProbe } from "../../../src/runtime/ports.js";
import { buildDemo } from "../../helpers.js";

// The QEMU side of published ports, below the daemon: q35's virtio-net-pci, the warm pool
// handing out processes that get their forwards over QMP, and the race a probe cannot close
// (another program takes the port between the runtime's probe and QEMU's bind). One snapshot
// of a guest serving HTTP serves the restores.
let dir: string;
let store: Store;
let rt: QemuRuntime;
let cold: PreparedArtifact;
let snap: PreparedArtifact;
let snapMac: string;
const cache = new PrepareCache();
/** lie makes the runtime's port probe say every port is free: the race, on demand. */
let lie = false;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function seen(id: string, re: RegExp): Promise<void> {
  await waitFor(`${re} from ${id}`, async () => {
    for await (const r of await rt.logs(id)) if (re.test(r.line)) return true;
    return undefined;
  });
}

/** state fetches the demo guest's /cgi-bin/state through a published port. */
async function state(port: number): Promise<{ hits: number; mac: string; boot_id: string }> {
  return waitFor(`HTTP on port ${port}`, async () => {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/cgi-bin/state`, {
        signal: AbortSignal.timeout(10_000),
      });
      return r.status === 200
        ? ((await r.json()) as { hits: number; mac: string; boot_id: string })
        : undefined;
    } catch {
      return undefined;
    }
  });
}

/** record reads an instance's state.json: how it was started (pooled, argv). */
async function record(id: string): Promise<{ pooled?: boolean; argv: string[] }> {
  return JSON.parse(await readFile(join(store.workDir, "instances", id, "state.json"), "utf8"));
}

async function holdPort(): Promise<{ port: number; close: () => Promise<void> }> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return {
    port: (s.address() as { port: number }).port,
    close: () => new Promise((r) => s.close(() => r())),
  };
}

const netdev = (argv: string[]) => argv[argv.indexOf("-netdev") + 1];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-net-"));
  await chmod(dir, 0o755); // QEMU runs as nobody when the tests run as root
  store = await Store.open(join(dir, "store"));
  await buildDemo(store, "demo/vm:1.0", false);
  const source = await loadArtifact(store, "demo/vm:1.0");
  cold = await prepareArtifact(store, source, { cache });
  rt = await QemuRuntime.create({
    stateDir: store.workDir,
    portProbe: (protocol, ip, port) => (lie ? Promise.resolve(port) : bindProbe(protocol, ip, port)),
  });
  const src = await rt.start(cold, {
    cmdline: "ovms.mode=httpd",
    accel: "tcg",
    name: "source",
    network: "user",
  });
  snapMac = src.network.mac!;
  await seen(src.id, /^OVMS-HTTPD: listening/);
  await rt.snapshot(src.id, { stop: true }, (c) => packSnapshot(store, source, c, "demo/vm:netsnap"));
  snap = await prepareArtifact(store, await loadArtifact(store, "demo/vm:netsnap"), {
    snapshotCacheDir: join(dir, "preload"),
    cache,
  });
});

after(async () => {
  for (const i of await rt.list({ all: true })) await rt.remove(i.id, { force: true }).catch(() => undefined);
  await rt.close();
  await rm(dir, { recursive: true, force: true });
});

test("the snapshot records the NIC: its MAC in the ramsnap metadata, network.required in the manifest", () => {
  assert.deepEqual(snap.ramSnapshot!.metadata.network, { mac: snapMac });
  assert.equal(snap.manifest.network?.required, true);
});

test("q35: virtio-net-pci, reached on its published port", async () => {
  const info = await rt.start(cold, {
    machine: "q35",
    accel: "tcg",
    cmdline: "ovms.mode=httpd",
    ports: [{ guestPort: 80 }],
  });
  assert.equal(info.machine, "q35");
  assert.match(netdev((await record(info.id)).argv), /^user,id=net0,hostfwd=tcp:127\.0\.0\.1:\d+-:80$/);
  const st = await state(info.network.ports[0].hostPort);
  assert.equal(st.mac, info.network.mac);
  assert.notEqual(info.network.mac, snapMac, "a cold boot gets a MAC of its own");
  await rt.stop(info.id, { force: true });
});

test("warm pool: a pooled QEMU started without forwards gets the instance's ports when handed out", async () => {
  await rt.pool.configure(snap, 1);
  const clones = [];
  for (const name of ["pooled-1", "pooled-2"]) {
    await waitFor("a ready pool process", async () => (rt.pool.status()[0].ready === 1 ? true : undefined));
    const info = await rt.start(snap, { name, ports: [{ guestPort: 80 }] });
    const rec = await record(info.id);
    assert.equal(rec.pooled, true, `${name} came from the pool`);
    assert.equal(netdev(rec.argv), "user,id=net0", "its QEMU started without forwards");
    assert.equal(info.network.ports.length, 1);
    clones.push(info);
  }
  const [a, b] = clones.map((c) => c.network.ports[0].hostPort);
  assert.notEqual(a, b);
  const sa = await state(a);
  const sb = await state(b);
  const sa2 = await state(a);
  assert.deepEqual([sa.hits, sb.hits, sa2.hits], [1, 1, 2], "each clone counts its own requests");
  assert.deepEqual([sa.mac, sb.mac], [snapMac, snapMac], "both are the snapshot's guest, with its NIC");
  for (const c of clones) await rt.stop(c.id, { force: true });
});

test("the pool does not serve what its processes cannot become: restricted, or a port below 1024 as root", async () => {
  await waitFor("a ready pool process", async () => (rt.pool.status()[0].ready === 1 ? true : undefined));
  const jailed = await rt.start(snap, { network: "restricted", ports: [{ guestPort: 80 }] });
  const rec = await record(jailed.id);
  assert.equal(rec.pooled, undefined, "a fresh QEMU");
  assert.match(netdev(rec.argv), /^user,id=net0,restrict=on,hostfwd=tcp:127\.0\.0\.1:\d+-:80$/);
  assert.equal((await state(jailed.network.ports[0].hostPort)).hits, 1);
  await rt.stop(jailed.id, { force: true });
  assert.equal(rt.pool.status()[0].ready, 1, "the pool process is still there");
  if (process.getuid?.() !== 0) return; // QEMU keeps the daemon's user: nothing to drop
  // A free port below 1024: QEMU binds it from its command line (confined, it keeps
  // CAP_NET_BIND_SERVICE for that; with -runas, it binds before it drops root).
  let low = 0;
  for (let p = 1023; p > 900 && !low; p--) low = await bindProbe("tcp", "127.0.0.1", p).catch(() => 0);
  assert.ok(low, "a free port below 1024");
  const priv = await rt.start(snap, { ports: [{ hostPort: low, guestPort: 80 }] });
  assert.equal((await record(priv.id)).pooled, undefined, "a pooled QEMU runs as nobody already");
  assert.equal((await state(low)).mac, snapMac);
  await rt.stop(priv.id, { force: true });
});

test("after a daemon restart, a re-attached instance keeps its ports, and they stay taken", async () => {
  const info = await rt.start(snap, { name: "kept", ports: [{ guestPort: 80 }] });
  const port = info.network.ports[0].hostPort;
  await rt.close(); // the daemon goes away; QEMU does not
  rt = await QemuRuntime.create({ stateDir: store.workDir });
  await rt.recover();
  const again = await rt.status("kept");
  assert.equal(again.state, "running");
  assert.deepEqual(again.network.ports, info.network.ports);
  assert.equal((await state(port)).mac, snapMac, "still served through the same port");
  await assert.rejects(
    rt.start(snap, { ports: [{ hostPort: port, guestPort: 80 }] }),
    (e: any) => e.code === "CONFLICT" && /already published by instance kept/.test(e.message),
  );
  await rt.stop("kept", { force: true });
});

test("a port taken after the probe: QEMU cannot bind it, the start is CONFLICT and nothing is left", async (t) => {
  const held = await holdPort();
  await rt.close();
  rt = await QemuRuntime.create({
    stateDir: store.workDir,
    portProbe: (protocol, ip, port) => (lie ? Promise.resolve(port) : bindProbe(protocol, ip, port)),
  });
  await rt.recover();
  await rt.pool.configure(snap, 1);
  lie = true;
  t.after(async () => {
    lie = false;
    await held.close();
  });
  const before = (await rt.list({ all: true })).length;
  const dirs = (await readdir(join(store.workDir, "instances"))).length;
  await assert.rejects(
    rt.start(cold, { accel: "tcg", ports: [{ hostPort: held.port, guestPort: 80 }] }),
    (e: any) =>
      e.code === "CONFLICT" &&
      e.message.startsWith(
        `host port 127.0.0.1:${held.port}/tcp was taken by another program while the instance was starting`,
      ),
  );
  const count = async () => (await readdir(join(store.workDir, "instances"))).length;
  assert.equal(await count(), dirs, "the failed instance's folder is gone");
  // The warm pool's path: hostfwd_add fails, the pooled process is discarded (and replaced).
  await waitFor("a ready pool process", async () => (rt.pool.status()[0].ready === 1 ? true : undefined));
  await assert.rejects(
    rt.start(snap, { ports: [{ hostPort: held.port, guestPort: 80 }] }),
    (e: any) =>
      e.code === "CONFLICT" &&
      e.message.includes(`host port 127.0.0.1:${held.port}->80/tcp: QEMU could not bind it`),
  );
  assert.equal((await rt.list({ all: true })).length, before, "no instance left");
  assert.equal(await count(), dirs - 1, "the pool process that could not bind is gone");
  await waitFor("the pool to refill", async () => (rt.pool.status()[0].ready === 1 ? true : undefined));
  await rt.pool.configure(snap, 0);
});
