import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { serialLog, watchFirstOutput } from "../../../src/runtime/qemu/serial-log.js";
import { tempDir } from "../../helpers.js";

async function lines(r: Readable): Promise<string[]> {
  const out: string[] = [];
  for await (const rec of r) {
    assert.equal(rec.stream, "serial");
    assert.ok(!Number.isNaN(Date.parse(rec.ts)));
    out.push(rec.line);
  }
  return out;
}

test("the whole log, the last N lines, none with tail=0; CRLF and a last line without newline", async (t) => {
  const path = join(await tempDir(t), "serial.log");
  await writeFile(path, "one\r\ntwo\nthree\nfour");
  assert.deepEqual(await lines(await serialLog(path)), ["one", "two", "three", "four"]);
  assert.deepEqual(await lines(await serialLog(path, { tail: 2 })), ["three", "four"]);
  assert.deepEqual(await lines(await serialLog(path, { tail: 0 })), []);
  assert.deepEqual(await lines(await serialLog(join(path, "..", "missing.log"))), []);
});

test("follow of an ended instance: complete lines are tailed, the unfinished one comes last", async (t) => {
  const path = join(await tempDir(t), "serial.log");
  await writeFile(path, "one\ntwo\nthree\npartial");
  assert.deepEqual(await lines(await serialLog(path, { follow: true, tail: 1 })), ["three", "partial"]);
});

test("follow of a live instance gives new lines until it ends", async (t) => {
  const path = join(await tempDir(t), "serial.log");
  await writeFile(path, "boot\n");
  let end!: () => void;
  const ended = new Promise<void>((r) => (end = r));
  const stream = await serialLog(path, { follow: true, ended });
  const got = lines(stream);
  await appendFile(path, "ready\nhalf");
  await new Promise((r) => setTimeout(r, 150));
  await appendFile(path, " a line\n");
  end();
  assert.deepEqual(await got, ["boot", "ready", "half a line"]);
});

test("watchFirstOutput fires once the guest wrote something, and stops when told the instance is gone", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "serial.log");
  await writeFile(path, "");
  let seen = 0;
  watchFirstOutput(
    path,
    () => true,
    () => seen++,
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(seen, 0);
  await writeFile(path, "x");
  for (let i = 0; i < 200 && seen === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(seen, 1);
  await writeFile(path, "xy");
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(seen, 1, "once");

  const other = join(dir, "other.log");
  await writeFile(other, "");
  let gone = false;
  let fired = false;
  watchFirstOutput(
    other,
    () => !gone,
    () => (fired = true),
  );
  gone = true;
  await new Promise((r) => setTimeout(r, 40));
  await writeFile(other, "late");
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(fired, false);
  const stop = watchFirstOutput(
    path + ".none",
    () => true,
    () => (fired = true),
  );
  stop();
});
