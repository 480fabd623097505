import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { InstanceRecords, type InstanceRecord } from "../../../src/runtime/qemu/records.js";
import { toInstance } from "../../../src/runtime/qemu/record-views.js";
import { RuntimeError } from "../../../src/runtime/runtime-error.js";
import { tempDir } from "../../helpers.js";

const DIGEST = `sha256:${"a".repeat(64)}` as const;

/** record is an instance record as launch writes it, in `state`. */
function record(
  id: string,
  name: string,
  state: InstanceRecord["state"],
  more: Partial<InstanceRecord> = {},
) {
  const r: InstanceRecord = {
    instance_id: id,
    name,
    state,
    artifact: { reference: "demo/vm:1.0", digest: DIGEST },
    accel: "tcg",
    machine: "microvm",
    created_at: "2024-01-01T00:00:00.000Z",
    memory_bytes: 128 << 20,
    vcpus: 1,
    devices: [{ type: "ivshmem", name: "shm0", size: 4096, path: "/nowhere" }],
    ram_file: "/nowhere/ram",
    shm_dir: "/nowhere",
    argv: ["qemu-system-x86_64"],
    ...more,
  };
  return r;
}

/** stored makes a records table in a fresh state folder, with each record's folder and state.json. */
async function stored(t: Parameters<typeof tempDir>[0], recs: InstanceRecord[]) {
  const dir = await tempDir(t);
  const records = new InstanceRecords(dir);
  for (const r of recs) {
    r.shm_dir = join(dir, "shm", r.instance_id);
    await mkdir(r.shm_dir, { recursive: true });
    await mkdir(records.dir(r.instance_id), { recursive: true });
    records.add(r);
    await records.save(r);
  }
  return { dir, records };
}

const A = "3f2a9c1e-0b4d-4e8f-9a7b-1c2d3e4f5a6b";
const B = "3f2a9c77-1111-4222-8333-444455556666";
const P = "3f2a9cff-9999-4999-8999-999999999999";

test("find: id, name or prefix of an instance; a warm-pool process by its exact id only", async (t) => {
  const { records } = await stored(t, [
    record(A, "web", "running"),
    record(B, "db", "exited"),
    record(P, "pool-1234abcd", "starting", { pool: true }),
  ]);
  assert.equal(records.find(A).name, "web");
  assert.equal(records.find("db").instance_id, B);
  assert.equal(records.find("3f2a9c77").instance_id, B);
  assert.equal(records.find("3f2a9c1e0b4d").instance_id, A);
  assert.throws(
    () => records.find("3f2a9c"),
    (e: any) => e.code === "NOT_FOUND" && /start of 2 instance ids/.test(e.message),
  );
  assert.equal(records.find(P).name, "pool-1234abcd");
  assert.throws(
    () => records.find("pool-1234abcd"),
    (e: any) => e.code === "NOT_FOUND",
  );
  assert.throws(
    () => records.find("3f2a9cff"),
    (e: any) => e.code === "NOT_FOUND",
  );
  assert.equal(records.named("pool-1234abcd")?.instance_id, P, "a pool process's name is taken");
});

test("save is atomic (no temp file left) and load reads it back", async (t) => {
  const r = record(A, "web", "running", { pid: 42 });
  const { records } = await stored(t, [r]);
  r.boot_ms = 12;
  await records.save(r);
  assert.deepEqual(await readdir(records.dir(A)), ["state.json"]);
  assert.deepEqual(await records.load(A), r);
  assert.equal(await records.load("nope"), undefined);
});

test("recover: terminal records as they are, dead ones exited, live ones re-attached, pool processes killed and removed", async (t) => {
  const dead = record(A, "dead", "running", { pid: 111 });
  const gone = record(B, "gone", "failed", { reason: "QEMU was killed by SIGKILL" });
  const alive = record("c0ffee00-0000-4000-8000-000000000000", "alive", "paused", { pid: 222 });
  const pooled = record(P, "pool-1", "starting", { pool: true, pid: 333 });
  const { dir } = await stored(t, [dead, gone, alive, pooled]);
  await mkdir(join(dir, "instances", "never-started"));
  const records = new InstanceRecords(dir);
  const killed: number[] = [];
  const reattached: string[] = [];
  const released: string[] = [];
  await records.recover({
    isOurs: (r) => r.pid === 222 || r.pid === 333,
    kill: (r) => killed.push(r.pid!),
    reattach: async (r) => void reattached.push(r.name),
    release: async (r) => void released.push(r.name),
  });
  assert.deepEqual(killed, [333]);
  assert.deepEqual(reattached, ["alive"]);
  assert.deepEqual(released.sort(), ["dead", "pool-1"], "the cgroups of ended instances are freed");
  assert.ok(!existsSync(join(dir, "instances", P)), "the pool process's folder is gone");
  assert.throws(() => records.find(P));
  const d = records.find("dead");
  assert.equal(d.state, "exited");
  assert.equal(d.reason, "the QEMU process ended while ovmd was not running");
  assert.equal(d.pid, undefined);
  assert.ok(d.exited_at);
  assert.ok(!existsSync(dead.shm_dir), "its memory files are removed");
  assert.equal((await records.load(A))?.state, "exited", "and that is saved");
  assert.deepEqual(records.find("gone"), gone);
  assert.equal(records.find("alive").state, "paused");
});

test("recordExit: asked or clean is exited, anything else failed with QEMU's last words; terminal stays", async (t) => {
  const asked = record(A, "asked", "stopping", { pid: 1 });
  const clean = record(B, "clean", "running", { pid: 2 });
  const crashed = record(P, "crashed", "running", { pid: 3 });
  const killed = record("c0ffee00-0000-4000-8000-000000000000", "killed", "starting", { pid: 4 });
  const { records } = await stored(t, [asked, clean, crashed, killed]);
  await writeFile(join(records.dir(P), "qemu.log"), "warning: x\nqemu: fatal: bad thing\nmore detail\n");
  await records.recordExit(asked, null, "SIGKILL", true);
  assert.deepEqual([asked.state, asked.reason, asked.pid], ["exited", "stopped", undefined]);
  await records.recordExit(clean, 0, null, false);
  assert.deepEqual([clean.state, clean.reason, clean.exit_code], ["exited", undefined, 0]);
  await records.recordExit(crashed, 1, null, false);
  assert.equal(crashed.state, "failed");
  assert.equal(crashed.reason, "QEMU exited with status 1: qemu: fatal: bad thing more detail");
  await records.recordExit(killed, null, "SIGKILL", false);
  assert.equal(killed.reason, "QEMU was killed by SIGKILL");
  assert.equal(JSON.parse(await readFile(join(records.dir(P), "state.json"), "utf8")).state, "failed");
  const before = { ...clean };
  await records.recordExit(clean, 1, null, false);
  assert.deepEqual(clean, before, "an ended instance never changes");
});

test("recordStartFailure: failed with QEMU's log or the error; an instance that exited stays exited", async (t) => {
  const starting = record(A, "a", "starting", { pid: 1 });
  const exited = record(B, "b", "exited");
  const { records } = await stored(t, [starting, exited]);
  await records.recordStartFailure(starting, new Error("no QMP after 10000 ms"));
  assert.deepEqual(
    [starting.state, starting.reason],
    ["failed", "QEMU did not start: no QMP after 10000 ms"],
  );
  await writeFile(join(records.dir(B), "qemu.log"), "one\ntwo\n");
  await records.recordStartFailure(exited, new RuntimeError("RESTORE_FAILED", "incoming migration failed"));
  assert.deepEqual(
    [exited.state, exited.reason],
    ["exited", "restore failed: incoming migration failed; one two"],
  );
});

test("recordEvent follows QMP STOP and RESUME while the instance runs, not while it stops", async (t) => {
  const r = record(A, "a", "running");
  const s = record(B, "b", "stopping");
  const { records } = await stored(t, [r, s]);
  await records.recordEvent(r, "STOP");
  assert.equal(r.state, "paused");
  await records.recordEvent(r, "STOP");
  assert.equal(r.state, "paused");
  await records.recordEvent(r, "RESUME");
  assert.equal(r.state, "running");
  await records.recordEvent(r, "SHUTDOWN");
  assert.equal(r.state, "running");
  await records.recordEvent(s, "STOP");
  assert.equal(s.state, "stopping");
});

test("toInstance: the record as an Instance; the pid only while the instance lives", () => {
  const r = record(A, "web", "running", {
    pid: 42,
    started_at: "2024-01-01T00:00:01.000Z",
    boot_ms: 900,
    start_ms: 300,
    cold_start_target_ms: 500,
  });
  const i = toInstance(r, Date.parse("2024-01-01T00:00:11.000Z"));
  assert.deepEqual(i, {
    id: A,
    name: "web",
    state: "running",
    artifact: r.artifact,
    accel: "tcg",
    machine: "microvm",
    pid: 42,
    createdAt: r.created_at,
    startedAt: r.started_at,
    coldStartTargetMs: 500,
    metrics: { uptimeMs: 10_000, memoryBytes: 128 << 20, vcpus: 1, bootMs: 900, startMs: 300 },
    devices: [{ type: "ivshmem", name: "shm0", size: 4096 }],
    network: { mode: "none", ports: [] },
  });
  const ports = [{ protocol: "tcp" as const, hostIp: "127.0.0.1", hostPort: 8080, guestPort: 80 }];
  assert.deepEqual(toInstance({ ...r, network: { mode: "user", mac: "52:54:00:12:34:56", ports } }).network, {
    mode: "user",
    mac: "52:54:00:12:34:56",
    ports,
  });
  assert.deepEqual(toInstance({ ...r, state: "exited", network: { mode: "user", ports } }).network.ports, []);
  const ended = toInstance({
    ...r,
    state: "exited",
    exited_at: "2024-01-01T00:00:03.000Z",
    exit_code: 0,
    reason: "stopped",
  });
  assert.equal(ended.pid, undefined);
  assert.equal(ended.metrics.uptimeMs, 2000);
  assert.deepEqual(
    [ended.exitCode, ended.reason, ended.exitedAt],
    [0, "stopped", "2024-01-01T00:00:03.000Z"],
  );
});
