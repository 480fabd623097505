import { test } from "node:test";
import assert from "node:assert/strict";
import {
  BootWatch,
  TAIL_LINES,
  bootTimeout,
  isUserspaceLine,
  stallHint,
} from "../../../src/runtime/qemu/boot-watchdog.js";

test("a kernel line carries the kernel's timestamp; userspace lines do not", () => {
  assert.equal(isUserspaceLine("[    0.535934] PCI: Fatal: No config space access function found"), false);
  assert.equal(isUserspaceLine("[12345.000001] reboot: Power down\r"), false);
  assert.equal(isUserspaceLine("OVMS-INIT: modules loaded"), true);
  assert.equal(isUserspaceLine("\x1b[0m\x1b[1mWelcome to Debian"), true);
  assert.equal(isUserspaceLine("\x1b[?7l\r"), false, "control bytes alone say nothing");
  assert.equal(isUserspaceLine("   "), false);
});

test("a console silent from the start stalls after the timeout, once", () => {
  const w = new BootWatch(30_000, 0);
  assert.equal(w.tick(29_999, true), undefined);
  const s = w.tick(30_000, true)!;
  assert.equal(w.phase, "stalled");
  assert.equal(s.anyOutput, false);
  assert.deepEqual(s.lines, []);
  assert.match(s.reason, /printed nothing on its console for 30 s/);
  assert.match(s.hint, /console=ttyS0/);
  assert.equal(w.tick(60_000, true), undefined, "reported once");
});

test("a console that stops during boot stalls, with its last lines and a clock hint", () => {
  const w = new BootWatch(10_000, 0, { kernelArgsAdded: [] });
  const kernel = Array.from({ length: 15 }, (_, i) => `[    0.0000${i % 10}] line ${i}`).join("\r\n");
  assert.equal(
    w.feed(
      `${kernel}\r\n[    0.000000] tsc: Marking TSC unstable due to could not calculate TSC khz\r\n`,
      1000,
    ),
    undefined,
  );
  assert.equal(w.tick(10_999, true), undefined, "the silence counts from the last output");
  const s = w.tick(11_000, true)!;
  assert.equal(s.lines.length, TAIL_LINES);
  assert.match(s.lines.at(-1)!, /could not calculate TSC khz/);
  assert.match(
    s.reason,
    /console stopped during boot: nothing for 10 s after "\[ {4}0.000000\] tsc: Marking/,
  );
  assert.match(s.hint, /calibrating the TSC; add tsc_early_khz=<host TSC kHz>/);
});

test("the first userspace line ends the boot; later silence is no stall", () => {
  const w = new BootWatch(5000, 0);
  assert.equal(w.feed("[    0.1] kernel\n", 100), undefined);
  assert.equal(w.feed("OVMS-INIT: mod", 200), undefined, "a line counts once it is complete");
  assert.equal(w.feed("ules loaded\n", 300), "booted");
  assert.equal(w.phase, "booted");
  assert.equal(w.tick(1_000_000, true), undefined);
});

test("output after a stall resumes the boot; paused time does not count", () => {
  const w = new BootWatch(5000, 0);
  assert.equal(w.tick(4000, false), undefined, "paused: the silence starts again");
  assert.equal(w.tick(8999, true), undefined);
  assert.ok(w.tick(9000, true));
  assert.equal(w.feed("[    3.0] still booting\n", 9500), "resumed");
  assert.equal(w.phase, "booting");
  assert.ok(w.tick(14_500, true), "and it is watched again");
  assert.equal(w.feed("login: \nroot\n", 15_000), "booted", "userspace after a stall ends the boot");
});

test("the hint names the runtime's own clock argument when it added one", () => {
  assert.match(
    stallHint(true, ["[ 0.1] tsc: Fast TSC calibration failed"], ["tsc_early_khz=2096015"]),
    /the runtime added tsc_early_khz=2096015/,
  );
  assert.match(
    stallHint(true, ["[ 1.2] Run /init as init process"], []),
    /before its userspace printed a line/,
  );
});

test("bootTimeout takes the start's value (0: off), else the daemon's, and refuses nonsense", () => {
  assert.equal(bootTimeout(undefined, 60_000), 60_000);
  assert.equal(bootTimeout(0, 60_000), 0);
  assert.equal(bootTimeout(1500, 60_000), 1500);
  assert.throws(
    () => bootTimeout(-1, 60_000),
    (e: any) => e.code === "INVALID_ARGUMENT" && /-1 ms/.test(e.message),
  );
  assert.throws(
    () => bootTimeout(1.5, 60_000),
    (e: any) => e.code === "INVALID_ARGUMENT",
  );
});
