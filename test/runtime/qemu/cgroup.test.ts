import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rmdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  Cgroups,
  MEMORY_OVERHEAD,
  findCgroupLayout,
  joinCommand,
  limitsFor,
  tcgCodeCache,
} from "../../../src/runtime/qemu/cgroup.js";

// mountinfo of a hybrid host (this CI's kind: v1 memory and cpu, an empty unified v2 tree), of a pure v2 host, of none.
const HYBRID = [
  "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
  "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
  "33 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
  "38 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
].join("\n");
const HYBRID_SELF = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
const V2 = "25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate";

test("findCgroupLayout: v1 under the daemon's own cgroups, v2 at the daemon's, or none and why", () => {
  assert.deepEqual(findCgroupLayout(HYBRID, HYBRID_SELF), {
    kind: "v1",
    memory: "/sys/fs/cgroup/memory/process_api/abc/ovms",
    cpu: "/sys/fs/cgroup/cpu/ovms",
  });
  assert.deepEqual(findCgroupLayout(V2, "0::/system.slice/ovmd.service\n"), {
    kind: "v2",
    base: "/sys/fs/cgroup/system.slice/ovmd.service",
    enable: ["memory", "cpu"],
  });
  const none = findCgroupLayout("22 1 0:20 / /proc rw - proc proc rw", "");
  assert.equal(none.kind, "none");
  assert.match((none as { note: string }).note, /no cgroup memory and cpu controllers/);
});

test("limitsFor: guest memory and device regions plus QEMU's overhead (and TCG's code cache), a core per vCPU", () => {
  assert.deepEqual(limitsFor(192 << 20, 1 << 20, 2, false), {
    memoryBytes: (193 << 20) + MEMORY_OVERHEAD,
    cpus: 2,
  });
  assert.deepEqual(limitsFor(192 << 20, 0, 1, true), {
    memoryBytes: (192 << 20) + MEMORY_OVERHEAD + tcgCodeCache(),
    cpus: 1,
  });
  assert.equal(tcgCodeCache(64 * 2 ** 30), 1 << 30, "QEMU 7.2's default tb-size: 1 GiB");
  assert.equal(tcgCodeCache(4 * 2 ** 30), 512 << 20, "or an eighth of the host's memory");
});

test("joinCommand: the process enters every cgroup before it becomes the command", async () => {
  assert.deepEqual(joinCommand([], "/usr/bin/qemu", ["-x"]), { file: "/usr/bin/qemu", args: ["-x"] });
  const j = joinCommand(["/nonexistent/cgroup.procs"], "/bin/echo", ["never"]);
  const code = await new Promise<number | null>((r) =>
    spawn(j.file, j.args, { stdio: "ignore" }).on("exit", (c) => r(c)),
  );
  assert.equal(code, 125, "a cgroup that cannot be joined stops the launch");
});

test("Cgroups: a real cgroup with the limits, the launched process in it, removed after", async (t) => {
  const cg = new Cgroups();
  const id = `test-${randomUUID()}`;
  const { procs, info } = await cg.create(id, { memoryBytes: 300 << 20, cpus: 1.5 });
  if (!info.enforced) {
    // Not root, or a host without controllers: status says why, and that is what is tested.
    assert.ok(info.note && info.note.length > 10, info.note);
    return t.skip(`no cgroups here: ${info.note}`);
  }
  try {
    const j = joinCommand(procs, "/bin/sleep", ["30"]);
    const child = spawn(j.file, j.args, { stdio: "ignore" });
    await new Promise((r) => setTimeout(r, 300));
    const own = await readFile(`/proc/${child.pid}/cgroup`, "utf8");
    assert.ok(own.includes(id), own);
    assert.match(
      await readFile(`/proc/${child.pid}/cmdline`, "utf8"),
      /^\/bin\/sleep/,
      "the shell became the command",
    );
    const dirs = procs.map(dirname);
    if (info.via === "cgroup1") {
      assert.equal(Number(await readFile(join(dirs[0], "memory.limit_in_bytes"), "utf8")), 300 << 20);
      assert.equal((await readFile(join(dirs[1], "cpu.cfs_quota_us"), "utf8")).trim(), "150000");
    } else {
      assert.equal((await readFile(join(dirs[0], "memory.max"), "utf8")).trim(), String(300 << 20));
      assert.equal((await readFile(join(dirs[0], "cpu.max"), "utf8")).trim(), "150000 100000");
    }
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    await cg.remove(id);
    for (const d of dirs) assert.ok(!existsSync(d), `${d} is removed`);
  } finally {
    await cg.remove(id);
  }
});

test("Cgroups: instance cgroups an earlier daemon left empty are removed; busy ones stay", async (t) => {
  const cg = new Cgroups();
  const probeId = `probe-${randomUUID()}`;
  const probe = await cg.create(probeId, { memoryBytes: 64 << 20, cpus: 1 });
  if (!probe.info.enforced) return t.skip(`no cgroups here: ${probe.info.note}`);
  const base = dirname(dirname(probe.procs[0]));
  await cg.remove(probeId);
  // A leftover: named like an instance, no process in it.
  const left = join(base, randomUUID());
  await mkdir(left);
  // A busy one: a process still in it.
  const busyId = randomUUID();
  const busy = await cg.create(busyId, { memoryBytes: 64 << 20, cpus: 1 });
  const j = joinCommand(busy.procs, "/bin/sleep", ["30"]);
  const child = spawn(j.file, j.args, { stdio: "ignore" });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const sweeper = new Cgroups(undefined, 0);
    const x = `x-${randomUUID()}`;
    await sweeper.create(x, { memoryBytes: 64 << 20, cpus: 1 });
    await sweeper.remove(x);
    assert.ok(!existsSync(left), "the empty leftover is gone");
    assert.ok(existsSync(join(base, busyId)), "the busy one stays");
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    await cg.remove(busyId);
    await rmdir(left).catch(() => undefined);
  }
});
