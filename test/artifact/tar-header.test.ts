import { test } from "node:test";
import assert from "node:assert/strict";
import { Header } from "tar";
import {
  TAR_BLOCK,
  paddedSize,
  parsePaxRecords,
  readTarHeader,
  safeEntryPath,
} from "../../src/artifact/tar-header.js";

/** ustar encodes a POSIX ustar header with node-tar (an independent writer). */
function ustar(path: string, type: "File" | "Directory" | "SymbolicLink" = "File", size = 0): Buffer {
  const h = new Header({ path, type, size, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 });
  h.encode();
  return h.block!;
}

/** resum rewrites a block's checksum after a test edited it. */
function resum(block: Buffer): Buffer {
  block.fill(0x20, 148, 156);
  const sum = block.reduce((n, b) => n + b, 0);
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return block;
}

test("readTarHeader reads name, type and size of a ustar header, the prefix joined", () => {
  assert.deepEqual(readTarHeader(ustar("oci-layout", "File", 30)), {
    name: "oci-layout",
    type: "0",
    size: 30,
  });
  assert.deepEqual(readTarHeader(ustar("blobs/", "Directory")), { name: "blobs/", type: "5", size: 0 });
  const long = `${"d".repeat(90)}/blobs/sha256/${"a".repeat(64)}`;
  const block = ustar(long, "File", 1234);
  assert.notEqual(block.toString("latin1", 345, 346), "\0", "node-tar used the prefix field");
  assert.equal(readTarHeader(block)!.name, long);
  assert.equal(readTarHeader(ustar("link", "SymbolicLink"))!.type, "2");
});

test("readTarHeader: an old NUL typeflag is a file, an all-zero block ends the archive", () => {
  const block = ustar("f", "File", 1);
  block[156] = 0;
  assert.equal(readTarHeader(resum(block))!.type, "0");
  assert.equal(readTarHeader(Buffer.alloc(TAR_BLOCK)), undefined);
});

test("readTarHeader: GNU magic has no prefix field, and sizes of 8 GiB and more are base-256", () => {
  const block = ustar("disk.raw", "File", 0);
  block.write("ustar  \0", 257, "latin1");
  block.write("this is not a prefix", 345, "latin1");
  block.fill(0, 124, 136);
  block[124] = 0x80;
  block.writeUIntBE(10 * 2 ** 30, 130, 6);
  assert.deepEqual(readTarHeader(resum(block)), { name: "disk.raw", type: "0", size: 10 * 2 ** 30 });
});

test("readTarHeader refuses a block whose checksum does not add up, or whose size is not a number", () => {
  const block = ustar("oci-layout", "File", 30);
  block[0] ^= 1;
  assert.throws(() => readTarHeader(block), { code: "MANIFEST_INVALID", message: /checksum/ });
  const bad = ustar("x", "File", 1);
  bad.write("12x4\0", 124, "latin1");
  assert.throws(() => readTarHeader(resum(bad)), { code: "MANIFEST_INVALID", message: /size field/ });
  assert.throws(() => readTarHeader(Buffer.alloc(100)), { code: "MANIFEST_INVALID" });
});

test("parsePaxRecords reads length-prefixed records, newlines and '=' in values included", () => {
  const rec = (k: string, v: string) => {
    const body = ` ${k}=${v}\n`;
    let n = Buffer.byteLength(body) + 1;
    while (String(n).length + Buffer.byteLength(body) !== n) n++;
    return `${n}${body}`;
  };
  const path = `${"p".repeat(150)}/ü/blobs/sha256/x`;
  const body = Buffer.alloc(1024);
  body.write(rec("path", path) + rec("comment", "a\nb=c") + rec("size", "123"), "utf8");
  const m = parsePaxRecords(body);
  assert.equal(m.get("path"), path);
  assert.equal(m.get("comment"), "a\nb=c");
  assert.equal(m.get("size"), "123");
  assert.throws(() => parsePaxRecords(Buffer.from("99 path=x\n")), { code: "MANIFEST_INVALID" });
  assert.throws(() => parsePaxRecords(Buffer.from("10 pathxx\n")), { code: "MANIFEST_INVALID" });
});

test("safeEntryPath normalizes like an extraction and refuses climbing out", () => {
  assert.equal(safeEntryPath("./blobs/sha256/"), "blobs/sha256");
  assert.equal(safeEntryPath("/oci-layout"), "oci-layout");
  assert.equal(safeEntryPath("./"), "");
  assert.equal(safeEntryPath("layout//index.json"), "layout/index.json");
  assert.equal(safeEntryPath("../index.json"), null);
  assert.equal(safeEntryPath("a/../../b"), null);
  assert.equal(safeEntryPath("a..b"), "a..b");
});

test("paddedSize rounds up to whole blocks", () => {
  assert.deepEqual([0, 1, 512, 513].map(paddedSize), [0, 512, 512, 1024]);
});
