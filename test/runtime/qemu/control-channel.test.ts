import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isOvmsError } from "../../../src/core/errors.js";
import {
  STDIN_CHUNK,
  hasControlInput,
  signalCommand,
  stdinCommands,
} from "../../../src/runtime/qemu/control-channel.js";
import { ROOT, tempDir } from "../../helpers.js";

// Both halves of OVMS-Init's control protocol without a VM: the line the runtime writes, and
// the guest's reader (scripts/ovms-init/control, run here by the host's busybox sh, as the
// guest runs it) signalling a real process. The containerd tests drive it through QEMU.

test("signalCommand: `signal N` lines for signal numbers 1-64; anything else is refused, naming it", () => {
  assert.equal(signalCommand(10).toString(), "signal 10\n");
  assert.equal(signalCommand(1).toString(), "signal 1\n");
  assert.equal(signalCommand(64).toString(), "signal 64\n");
  for (const bad of [0, 65, -9, 1.5, Number.NaN])
    assert.throws(
      () => signalCommand(bad),
      (e) =>
        isOvmsError(e, "INVALID_ARGUMENT") && e.message.startsWith(`signal ${bad} is not a signal number`),
    );
});

test("hasControlInput: a socket chardev on the control port takes commands; the file chardev of an earlier ovmd does not", () => {
  assert.ok(
    hasControlInput([
      "-chardev",
      "socket,id=control0,path=/s/control.sock,server=on,wait=off,logfile=/i/control.log",
    ]),
  );
  assert.ok(!hasControlInput(["-chardev", "file,id=control0,path=/i/control.log"]));
  assert.ok(!hasControlInput(["-chardev", "socket,id=serial0,path=/s/serial.sock,server=on,wait=off"]));
});

test("the guest's control reader: `signal 10` reaches the program named by the pid file; bad lines are reported and skipped", async (t) => {
  const dir = await tempDir(t);
  // The "program": a shell that records the signals it traps, until it gets TERM.
  const prog = spawn(
    "busybox",
    [
      "sh",
      "-c",
      `trap 'echo usr1 >> ${dir}/got' USR1; trap 'echo term >> ${dir}/got; exit 3' TERM; echo up > ${dir}/up; while :; do sleep 0.05; done`,
    ],
    { stdio: "ignore" },
  );
  const exited = new Promise<number | null>((r) => prog.once("exit", (code) => r(code)));
  t.after(() => prog.kill("SIGKILL"));
  while (!(await readFile(join(dir, "up"), "utf8").catch(() => "")))
    await new Promise((r) => setTimeout(r, 20));
  await writeFile(join(dir, "pid"), `${prog.pid}\n`);
  const reader = spawn("busybox", ["sh", join(ROOT, "scripts/ovms-init/control"), join(dir, "pid")], {
    stdio: ["pipe", "ignore", "pipe"],
  });
  let stderr = "";
  reader.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
  const done = new Promise<number | null>((r) => reader.once("exit", (code) => r(code)));
  const lines = [
    "",
    "signal x",
    "signal 99",
    "signal 10 now",
    "reboot",
    signalCommand(10).toString().trimEnd(),
  ];
  reader.stdin!.write(lines.join("\n") + "\n");
  const deadline = Date.now() + 10_000;
  while (
    !(await readFile(join(dir, "got"), "utf8").catch(() => "")).includes("usr1") &&
    Date.now() < deadline
  )
    await new Promise((r) => setTimeout(r, 20));
  reader.stdin!.end(signalCommand(15));
  assert.equal(await done, 0, "the reader ends with its input");
  assert.equal(await exited, 3, "SIGTERM reached the program, which trapped it");
  assert.equal(await readFile(join(dir, "got"), "utf8"), "usr1\nterm\n");
  assert.deepEqual(stderr.trimEnd().split("\n"), [
    "ovms-init: control: signal needs a number, got 'x'",
    "ovms-init: control: bad signal command 'signal 99 '",
    "ovms-init: control: bad signal command 'signal 10 now'",
    "ovms-init: control: unknown command 'reboot'",
  ]);
});

test("stdinCommands: base64 lines of at most STDIN_CHUNK bytes (under a TTY line), then stdin-close when asked", () => {
  const data = Buffer.alloc(STDIN_CHUNK * 2 + 5, 7);
  const lines = stdinCommands(data, true).toString().split("\n");
  assert.equal(lines.pop(), "", "every command ends with a newline");
  assert.equal(lines.length, 4);
  assert.equal(lines[3], "stdin-close");
  const back = Buffer.concat(lines.slice(0, 3).map((l) => Buffer.from(l.replace(/^stdin /, ""), "base64")));
  assert.deepEqual(back, data);
  assert.ok(lines.every((l) => l.length < 4000));
  assert.equal(stdinCommands(Buffer.alloc(0), false).length, 0);
  assert.equal(stdinCommands(Buffer.alloc(0), true).toString(), "stdin-close\n");
});

test("the guest's control reader feeds the program's stdin FIFO: bytes as sent (binary too), end-of-file only at stdin-close", async (t) => {
  const dir = await tempDir(t);
  const fifo = join(dir, "stdin");
  await new Promise<void>((resolve, reject) =>
    spawn("mkfifo", [fifo]).once("exit", (c) => (c === 0 ? resolve() : reject(new Error(`mkfifo ${c}`)))),
  );
  const reader = spawn("busybox", ["sh", join(ROOT, "scripts/ovms-init/control"), join(dir, "pid"), fifo], {
    stdio: ["pipe", "ignore", "pipe"],
  });
  let stderr = "";
  reader.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
  // The "program": reads its stdin to the end.
  const prog = spawn("sh", ["-c", `cat > ${join(dir, "got")}`], {
    stdio: [await openFd(fifo), "ignore", "ignore"],
  });
  t.after(() => {
    prog.kill("SIGKILL");
    reader.kill("SIGKILL");
  });
  // Stage 2 writes the program's pid once its stdin is open; stdin-close waits for it.
  await writeFile(join(dir, "pid"), `${prog.pid}\n`);
  let progDone = false;
  const progExit = new Promise<number | null>((r) =>
    prog.once("exit", (c) => {
      progDone = true;
      r(c);
    }),
  );
  const data = Buffer.from([...Array(5000).keys()].map((i) => (i * 7) % 256));
  reader.stdin!.write(stdinCommands(data.subarray(0, 3000), false));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(progDone, false, "no end-of-file before stdin-close");
  reader.stdin!.end(stdinCommands(data.subarray(3000), true));
  assert.equal(await progExit, 0);
  assert.deepEqual(await readFile(join(dir, "got")), data);
  assert.equal(stderr, "", "nothing to complain about");
});

/** openFd opens a FIFO for reading (the program's side), waiting for its writer as a shell redirect does. */
async function openFd(path: string): Promise<number> {
  const { open } = await import("node:fs/promises");
  return (await open(path, "r")).fd;
}

test("stdin-close before the program has opened its stdin: the reader waits for the program, which then reads the bytes and end-of-file", async (t) => {
  const dir = await tempDir(t);
  const fifo = join(dir, "stdin");
  await new Promise<void>((resolve, reject) =>
    spawn("mkfifo", [fifo]).once("exit", (c) => (c === 0 ? resolve() : reject(new Error(`mkfifo ${c}`)))),
  );
  const reader = spawn("busybox", ["sh", join(ROOT, "scripts/ovms-init/control"), join(dir, "pid"), fifo], {
    stdio: ["pipe", "ignore", "ignore"],
  });
  t.after(() => reader.kill("SIGKILL"));
  reader.stdin!.end(stdinCommands(Buffer.from("early\n"), true));
  await new Promise((r) => setTimeout(r, 300));
  const prog = spawn("sh", ["-c", `cat > ${join(dir, "got")}`], {
    stdio: [await openFd(fifo), "ignore", "ignore"],
  });
  t.after(() => prog.kill("SIGKILL"));
  const progExit = new Promise<number | null>((r) => prog.once("exit", (c) => r(c)));
  await writeFile(join(dir, "pid"), `${prog.pid}\n`);
  assert.equal(await progExit, 0, "end-of-file reached the program");
  assert.equal(await readFile(join(dir, "got"), "utf8"), "early\n");
});
