import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../../src/store/store.js";
import { build } from "../../../src/artifact/build.js";
import { loadArtifact } from "../../../src/artifact/artifact.js";
import { PrepareCache, prepareArtifact, type PreparedArtifact } from "../../../src/artifact/prepare.js";
import { hostTscKhz } from "../../../src/runtime/qemu/clock.js";
import { QemuRuntime } from "../../../src/runtime/qemu/qemu-runtime.js";
import type { Instance } from "../../../src/runtime/types.js";
import { demoAssets } from "../../helpers.js";

// A guest as a user brings it: the demo kernel and initrd with the stock arguments
// `console=ttyS0 panic=-1` and nothing about clocks. On microvm under TCG such a kernel hangs
// calibrating its TSC when the host is busy (scripts/QEMU-NOTES.md); the runtime adds the
// host's TSC rate. And guests whose console goes silent while booting are reported `stalled`.
const STOCK = "console=ttyS0 panic=-1";
let dir: string;
let rt: QemuRuntime;
let stock: PreparedArtifact;
let hog: ChildProcess | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-stock-"));
  const store = await Store.open(join(dir, "store"));
  const a = demoAssets();
  await build(
    store,
    {
      name: "demo/stock",
      version: "1",
      kernel: { path: a.kernel, args: STOCK },
      initrd: { path: a.initrd },
      disks: [{ path: a.base }, { path: a.diff }],
      resources: { memory: 192 << 20, vcpus: 1 },
    },
    "demo/stock:1",
  );
  stock = await prepareArtifact(store, await loadArtifact(store, "demo/stock:1"), {
    cache: new PrepareCache(),
  });
  rt = await QemuRuntime.create({ stateDir: join(dir, "state") });
});

after(async () => {
  hog?.kill("SIGKILL");
  for (const i of (await rt?.list({ all: true })) ?? [])
    await rt.remove(i.id, { force: true }).catch(() => undefined);
  await rt?.close();
  await rm(dir, { recursive: true, force: true });
});

/** counted waits until the guest's init has printed `n` counter lines: it booted and its timers work. */
async function counted(id: string, n: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let c = 0;
    for await (const r of await rt.logs(id)) if (/^OVMS-COUNTER: \d+$/.test(r.line)) c++;
    if (c >= n) return;
    const s = await rt.status(id);
    if (s.state !== "running") throw new Error(`${id} is ${s.state} (${s.reason}) after ${c} counter lines`);
    if (Date.now() > deadline) throw new Error(`${id} printed ${c} of ${n} counter lines in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** until polls the instance's status until `ok` says yes, and returns it. */
async function until(id: string, ok: (i: Instance) => boolean, timeoutMs = 120_000): Promise<Instance> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await rt.status(id);
    if (ok(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out; last status ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("a stock-argument guest boots and keeps running, 10 boots in a row, while the other core is busy", async () => {
  const khz = await hostTscKhz();
  assert.ok(khz, "this host's TSC rate is known");
  // The load that makes the kernel's PIT calibration fail: a busy loop on the other core.
  hog = spawn(process.execPath, ["-e", "for(;;);"], { stdio: "ignore" });
  const times: number[] = [];
  for (let i = 1; i <= 10; i++) {
    const t0 = Date.now();
    const info = await rt.start(stock, { accel: "tcg", cmdline: "ovms.mode=counter", name: `stock-${i}` });
    assert.equal(info.machine, "microvm");
    assert.deepEqual(info.kernelArgsAdded, [`tsc_early_khz=${khz}`], "recorded in the status");
    await counted(info.id, 5);
    times.push(Date.now() - t0);
    const s = await rt.status(info.id);
    assert.equal(s.boot?.phase, "booted");
    assert.equal(s.state, "running");
    await rt.stop(info.id, { force: true });
    await rt.remove(info.id);
  }
  hog.kill("SIGKILL");
  hog = undefined;
  process.stderr.write(`stock-argument boots to the 5th counter line (ms): ${times.join(", ")}\n`);
});

test("a guest whose console stays silent while it boots is reported stalled, with a hint, and can be stopped", async () => {
  // quiet loglevel=0: the kernel prints nothing; its init sleeps without a word.
  const info = await rt.start(stock, {
    accel: "tcg",
    name: "silent",
    cmdline: "quiet loglevel=0 rdinit=/bin/busybox -- sleep 3600",
    bootTimeoutMs: 3000,
  });
  assert.deepEqual(info.boot, { phase: "booting", timeoutMs: 3000 });
  const s = await until(info.id, (i) => i.state === "stalled");
  assert.equal(s.boot?.phase, "stalled");
  assert.deepEqual(s.boot?.consoleTail, []);
  assert.match(
    s.reason ?? "",
    /^boot stalled: the guest printed nothing on its console for \d+ s after the start/,
  );
  assert.match(s.reason ?? "", /console=ttyS0/);
  assert.equal(
    s.kernelArgsAdded?.[0]?.startsWith("tsc_early_khz="),
    true,
    "before the -- that starts init's arguments",
  );
  assert.ok(s.pid, "QEMU still runs: a stall is a report, the guest is not killed");
  const stopped = await rt.stop(info.id, { force: true });
  assert.equal(stopped.state, "exited");
  assert.match(stopped.reason ?? "", /^stopped \(boot stalled: /);
});

test("a guest silent longer than the timeout that then speaks goes stalled → running, booted", async () => {
  const info = await rt.start(stock, {
    accel: "tcg",
    name: "slow",
    cmdline:
      'quiet loglevel=0 rdinit=/bin/busybox -- sh -c "busybox sleep 8; echo up after all; busybox sleep 3600"',
    bootTimeoutMs: 2000,
  });
  await until(info.id, (i) => i.state === "stalled");
  const s = await until(info.id, (i) => i.boot?.phase === "booted");
  assert.equal(s.state, "running");
  assert.equal(s.reason, undefined, "the stall report is gone");
  assert.equal(s.boot?.consoleTail, undefined);
  await rt.stop(info.id, { force: true });
});

test("boot_timeout 0 leaves a silent guest unwatched", async () => {
  const info = await rt.start(stock, {
    accel: "tcg",
    name: "unwatched",
    cmdline: "quiet loglevel=0 rdinit=/bin/busybox -- sleep 3600",
    bootTimeoutMs: 0,
  });
  assert.deepEqual(info.boot, { phase: "unwatched", timeoutMs: 0 });
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal((await rt.status(info.id)).state, "running");
  await rt.stop(info.id, { force: true });
});
