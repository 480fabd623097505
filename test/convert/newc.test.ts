import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { appendToInitrd, newcArchive } from "../../src/artifact/convert/newc.js";
import { tempDir } from "../helpers.js";

const cpio = (args: string[], cwd: string, input: Buffer) =>
  new Promise<string>((resolve, reject) => {
    const c = execFile("cpio", args, { cwd, encoding: "utf8" }, (e, so, se) =>
      e ? reject(new Error(se)) : resolve(so + se),
    );
    c.stdin!.end(input);
  });

test("newcArchive writes what GNU cpio reads back: folders, files, modes, contents", async (t) => {
  const dir = await tempDir(t);
  const a = newcArchive([
    { path: "ovms", mode: 0o040755 },
    { path: "ovms/launch", mode: 0o100644, data: Buffer.from("ovms_workdir='/'\n") },
    { path: "ovms/odd-size", mode: 0o100600, data: Buffer.from("12345") },
  ]);
  assert.equal(a.length % 4, 0);
  assert.deepEqual(
    newcArchive([{ path: "x", mode: 0o100644, data: Buffer.from("y") }]),
    newcArchive([{ path: "x", mode: 0o100644, data: Buffer.from("y") }]),
  );
  const listing = await cpio(["-t", "-v", "--quiet"], dir, a);
  assert.match(listing, /drwxr-xr-x .* ovms\n/);
  assert.match(listing, /-rw-r--r-- .* ovms\/launch\n/);
  assert.match(listing, /-rw------- .* ovms\/odd-size\n/);
  await cpio(["-i", "-d", "--quiet"], dir, a);
  assert.equal(await readFile(join(dir, "ovms/launch"), "utf8"), "ovms_workdir='/'\n");
  assert.equal(await readFile(join(dir, "ovms/odd-size"), "utf8"), "12345");
  assert.throws(() => newcArchive([{ path: "../x", mode: 0o100644 }]));
});

test("appendToInitrd pads the first archive to 4 bytes; cpio reads the appended archive from there", async (t) => {
  const dir = await tempDir(t);
  const first = gzipSync(Buffer.from("not really a cpio, 27 bytes"));
  const extra = newcArchive([{ path: "f", mode: 0o100644, data: Buffer.from("appended") }]);
  const both = appendToInitrd(first, extra);
  const at = Math.ceil(first.length / 4) * 4;
  assert.deepEqual(both.subarray(0, first.length), first);
  assert.ok(both.subarray(first.length, at).every((b) => b === 0));
  assert.equal(both.subarray(at, at + 6).toString(), "070701");
  await writeFile(join(dir, "tail"), both.subarray(at));
  await cpio(["-i", "--quiet"], dir, both.subarray(at));
  assert.equal(await readFile(join(dir, "f"), "utf8"), "appended");
});
