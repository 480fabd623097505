import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFile, writeFile } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { SerialInputs, hasSerialInput, rawSerial } from "../../../src/runtime/qemu/serial-console.js";
import { tempDir } from "../../helpers.js";

// The terminal's side of the serial console (the browser test drives it end to end through
// QEMU): raw bytes out of the log file, typed bytes into QEMU's socket.

async function all(r: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
}

test("rawSerial: the last tailBytes as they are (prompts without a newline too), none with 0, nothing for a missing file", async (t) => {
  const path = join(await tempDir(t), "serial.log");
  await writeFile(path, "boot\r\nline\nsh# ");
  assert.equal(await all(await rawSerial(path)), "boot\r\nline\nsh# ");
  assert.equal(await all(await rawSerial(path, { tailBytes: 9 })), "line\nsh# ");
  assert.equal(await all(await rawSerial(path, { tailBytes: 0 })), "");
  assert.equal(await all(await rawSerial(join(path, "..", "missing.log"))), "");
});

test("rawSerial follows what the guest writes next, partial lines included, until the instance ends", async (t) => {
  const path = join(await tempDir(t), "serial.log");
  await writeFile(path, "old\n");
  let end!: () => void;
  const ended = new Promise<void>((r) => (end = r));
  const stream = await rawSerial(path, { ended, tailBytes: 0 });
  const got = all(stream);
  await appendFile(path, "sh# ");
  await new Promise((r) => setTimeout(r, 200));
  await appendFile(path, "echo hi\r\nhi\r\n");
  end();
  assert.equal(await got, "sh# echo hi\r\nhi\r\n");
});

test("SerialInputs: one connection per instance, bytes in order; a socket nobody serves is CONFLICT", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "serial.sock");
  const received: Buffer[] = [];
  const conns: Socket[] = [];
  const server = createServer((s) => {
    conns.push(s);
    s.on("data", (d) => received.push(d));
    s.write("guest output the runtime drops\r\n");
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => server.close());
  const inputs = new SerialInputs();
  t.after(() => inputs.closeAll());
  assert.equal(await inputs.write("i-1", path, Buffer.from("echo 1\r")), 7);
  assert.equal(await inputs.write("i-1", path, Buffer.from("echo 2\r")), 7);
  const deadline = Date.now() + 5000;
  while (Buffer.concat(received).length < 14 && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 20));
  assert.equal(Buffer.concat(received).toString(), "echo 1\recho 2\r");
  assert.equal(conns.length, 1, "QEMU serves one client: every write goes through one connection");

  await assert.rejects(
    inputs.write("i-2", join(dir, "nobody.sock"), Buffer.from("x")),
    (e: Error & { code?: string }) => {
      assert.equal(e.code, "CONFLICT");
      assert.match(e.message, /i-2: its serial input does not answer/);
      return true;
    },
  );
});

test("hasSerialInput tells a socket console from an output-only file console", () => {
  assert.equal(hasSerialInput(["-chardev", "socket,id=serial0,path=/s,server=on,wait=off,logfile=/l"]), true);
  assert.equal(hasSerialInput(["-chardev", "file,id=serial0,path=/l"]), false);
});
