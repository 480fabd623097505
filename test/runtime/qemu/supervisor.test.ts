import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  Supervisor,
  exitReason,
  isAlive,
  isOurQemu,
  kill,
  procMetrics,
} from "../../../src/runtime/qemu/supervisor.js";

/** sleeper is a process that is not our child's QEMU, to watch and stop by pid. */
function sleeper(): number {
  const p = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
  p.unref();
  return p.pid!;
}

test("exitReason says how QEMU ended", () => {
  assert.equal(exitReason(null, "SIGKILL"), "QEMU was killed by SIGKILL");
  assert.equal(exitReason(1, null), "QEMU exited with status 1");
  assert.equal(
    exitReason(null, null),
    "the QEMU process ended unexpectedly (re-attached: exit status unknown)",
  );
});

test("isAlive, isOurQemu and procMetrics of a live process; kill ends it", async () => {
  const pid = sleeper();
  assert.ok(isAlive(pid));
  assert.equal(isOurQemu(pid, "some-id"), false, "not the QEMU of that instance");
  const m = await procMetrics(pid);
  assert.ok(m.rssBytes! > 0 && m.cpuTimeMs! >= 0);
  kill(pid);
  for (let i = 0; i < 50 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(isAlive(pid), false);
  assert.deepEqual(await procMetrics(pid), {}, "nothing of a process that is gone");
  kill(pid); // no error for a process that is gone
});

test("a re-attached process is watched by pid; terminate without a monitor uses SIGTERM", async () => {
  const procs = new Supervisor();
  const pid = sleeper();
  const exits: [number | null, NodeJS.Signals | null][] = [];
  const live = procs.attach("i-1", pid, (code, signal) => {
    exits.push([code, signal]);
    procs.ended("i-1");
  });
  assert.equal(procs.get("i-1"), live);
  live.stopping = true;
  await procs.terminate(live, () => pid, { timeoutMs: 3000 });
  assert.deepEqual(exits, [[0, null]], "an asked-for stop of a re-attached QEMU counts as a clean exit");
  assert.equal(procs.get("i-1"), undefined);
  assert.equal(isAlive(pid), false);
});

test("detachAll lets go of every process without stopping it", async () => {
  const procs = new Supervisor();
  const pid = sleeper();
  let exited = false;
  procs.attach("i-2", pid, () => (exited = true));
  procs.detachAll();
  assert.equal(procs.get("i-2"), undefined);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(isAlive(pid), "still running");
  assert.equal(exited, false, "and no longer watched");
  kill(pid);
});

test("terminate leaves no timer behind once QEMU has ended: a long timeout does not hold the process", async () => {
  // In a child process, so that what keeps an event loop alive is what is measured.
  const mod = new URL("../../../src/runtime/qemu/supervisor.js", import.meta.url).href;
  const script = `
    import { spawn } from "node:child_process";
    import { Supervisor } from ${JSON.stringify(mod)};
    const p = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
    p.unref();
    const procs = new Supervisor();
    const live = procs.attach("i-t", p.pid, () => procs.ended("i-t"));
    live.stopping = true;
    await procs.terminate(live, () => p.pid, { timeoutMs: 600000 });
  `;
  const t0 = Date.now();
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: "inherit" });
  const code = await new Promise((r) => child.on("exit", r));
  assert.equal(code, 0);
  assert.ok(
    Date.now() - t0 < 20_000,
    `the process lived ${Date.now() - t0} ms after its stop with timeoutMs 600000`,
  );
});
