import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { mergeRecords, serialLog, watchFirstOutput } from "../../../src/runtime/qemu/serial-log.js";
import { tempDir } from "../../helpers.js";

async function lines(r: Readable): Promise<string[]> {
  const out: string[] = [];
  for await (const rec of r) {
    assert.equal(rec.stream, "serial", "the console's records are `serial` unless told");
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

test("a container's stderr file as `stderr` records, merged with the console: each stream in its own order, to the end of both", async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, "serial.log"), "out-1\nout-2\n");
  await writeFile(join(dir, "stderr.log"), "err-1\n");
  let end!: () => void;
  const ended = new Promise<void>((r) => (end = r));
  const merged = mergeRecords([
    await serialLog(join(dir, "serial.log"), { follow: true, ended }),
    await serialLog(join(dir, "stderr.log"), { follow: true, ended, stream: "stderr" }),
  ]);
  const got: { stream: string; line: string }[] = [];
  const all = (async () => {
    for await (const r of merged) got.push({ stream: r.stream, line: r.line });
  })();
  await appendFile(join(dir, "stderr.log"), "err-2\n");
  await appendFile(join(dir, "serial.log"), "out-3\n");
  await new Promise((r) => setTimeout(r, 150));
  end();
  await all;
  const of = (s: string) => got.filter((r) => r.stream === s).map((r) => r.line);
  assert.deepEqual(of("serial"), ["out-1", "out-2", "out-3"]);
  assert.deepEqual(of("stderr"), ["err-1", "err-2"]);
  assert.equal(got.length, 5);
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
