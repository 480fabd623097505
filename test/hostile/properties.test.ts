import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import fc from "fast-check";
import * as tar from "tar";
import { checkManifest, validateManifest } from "../../src/core/validate.js";
import { formatReference, parseReference } from "../../src/core/reference.js";
import { parseSize } from "../../src/core/size.js";
import { parsePaxRecords, readTarHeader, safeEntryPath } from "../../src/artifact/tar-header.js";
import { unpackDiskLayer } from "../../src/artifact/disk-layer.js";
import { encodeRamsnap, preloadRamsnap, readRamsnapHeader } from "../../src/artifact/ramsnap.js";
import { parseQcow2Header } from "../../src/artifact/qcow2-header.js";
import { ROOT, tempDir } from "../helpers.js";
import { Tally } from "./tally.js";

// Property-based hostile inputs (fast-check): thousands of generated and mutated manifests,
// references, sizes, tar headers, layer tars, qcow2 headers and ramsnap blobs. Each must be
// refused with an OvmsError or accepted as valid: a crash (any other exception) fails the
// test. The counts are written as <suite>.tally.json into the test's folder and logged.

const SEED = Number(process.env.OVMS_FC_SEED ?? 20261130);

/** mutateJson replaces, deletes or adds one member anywhere in a JSON document. */
function mutations(doc: unknown) {
  const paths: (string | number)[][] = [];
  const walk = (v: unknown, p: (string | number)[]) => {
    paths.push(p);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...p, i]));
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, [...p, k]);
  };
  walk(doc, []);
  return fc
    .tuple(
      fc.nat({ max: paths.length - 1 }),
      fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant(undefined)),
      fc.string(),
    )
    .map(([i, value, key]) => {
      const copy = structuredClone(doc) as Record<string | number, unknown>;
      const p = paths[i];
      if (p.length === 0) return value;
      let parent = copy as Record<string | number, unknown>;
      for (const k of p.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
      const last = p[p.length - 1];
      if (value === undefined) {
        if (Array.isArray(parent)) parent.splice(last as number, 1);
        else delete parent[last];
      } else if (key && !Array.isArray(parent) && Math.random() < 0.2) parent[key] = value;
      else parent[last] = value;
      return copy;
    });
}

test(
  "manifests: generated JSON and mutated examples are refused with their JSON paths or accepted",
  { timeout: 300_000 },
  async (t) => {
    const dir = await tempDir(t);
    const tally = new Tally("manifests");
    const examples = await Promise.all(
      (await readdir(join(ROOT, "examples")))
        .filter((f) => f.endsWith(".json"))
        .map(async (f) => JSON.parse(await readFile(join(ROOT, "examples", f), "utf8"))),
    );
    const check = async (doc: unknown) =>
      tally.run(doc, () => {
        const problems = checkManifest(doc);
        for (const p of problems) assert.ok(typeof p.path === "string" && p.message.length > 0);
        validateManifest(doc);
      });
    await fc.assert(fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), check), { numRuns: 2000, seed: SEED });
    for (const ex of examples)
      await fc.assert(fc.asyncProperty(mutations(ex), check), { numRuns: 1000, seed: SEED });
    await tally.report(dir);
    assert.equal(tally.crashed, 0, tally.crashes.join("\n"));
    assert.ok(tally.refused > 0 && tally.accepted > 0, "both outcomes were exercised");
  },
);

test(
  "references: arbitrary strings and mutated references never parse into a path that climbs; parsing is stable",
  { timeout: 120_000 },
  async (t) => {
    const dir = await tempDir(t);
    const tally = new Tally("references");
    const chars = fc.constantFrom(
      ..."abz09./:@-_%\\ ABZ~".split(""),
      "..",
      "sha256:",
      "/../",
      "%2e%2e",
      "\u0000",
      "localhost",
    );
    const ref = fc.oneof(
      fc.string({ unit: chars, maxLength: 60 }),
      fc.string({ maxLength: 80 }),
      fc
        .constantFrom("127.0.0.1:5000/demo/vm:1.0", "demo/vm", `x.io/a/b@sha256:${"a".repeat(64)}`)
        .chain((r) =>
          fc
            .tuple(fc.nat({ max: r.length }), fc.string({ unit: chars, maxLength: 6 }))
            .map(([i, s]) => r.slice(0, i) + s + r.slice(i)),
        ),
    );
    await fc.assert(
      fc.asyncProperty(ref, (s) =>
        tally.run(s, () => {
          const r = parseReference(s);
          for (const c of r.repository.split("/"))
            assert.ok(c !== ".." && c !== "." && c !== "", `component "${c}" of ${s}`);
          assert.ok(!r.registry.includes("/"));
          assert.deepEqual(parseReference(formatReference(r)), r, "a formatted reference parses to itself");
        }),
      ),
      { numRuns: 5000, seed: SEED },
    );
    await tally.report(dir);
    assert.equal(tally.crashed, 0, tally.crashes.join("\n"));
  },
);

test("sizes: any string is a non-negative safe integer or INVALID_SIZE", async (t) => {
  const dir = await tempDir(t);
  const tally = new Tally("sizes");
  const size = fc.oneof(
    fc.string({ maxLength: 30 }),
    fc
      .tuple(
        fc.oneof(fc.double(), fc.bigInt().map(String), fc.nat().map(String)),
        fc.constantFrom("", "K", "M", "G", "T", "P", "E", "KiB", "k", "1", "e9"),
      )
      .map(([n, u]) => `${n}${u}`),
  );
  await fc.assert(
    fc.asyncProperty(size, (s) =>
      tally.run(s, () => {
        const n = parseSize(s);
        assert.ok(Number.isSafeInteger(n) && n >= 0, `${s} → ${n}`);
      }),
    ),
    { numRuns: 3000, seed: SEED },
  );
  await tally.report(dir);
  assert.equal(tally.crashed, 0, tally.crashes.join("\n"));
});

/** smallLayer is a real disk layer tar (node-tar, as build writes them) holding `disk.qcow2`. */
async function smallLayer(dir: string): Promise<Buffer> {
  const src = join(dir, "src");
  await mkdir(src, { recursive: true });
  await writeFile(join(src, "disk.qcow2"), Buffer.alloc(3000, 7));
  const chunks: Buffer[] = [];
  for await (const c of tar.c({ cwd: src, portable: true, mtime: new Date(0), noPax: true }, [
    "disk.qcow2",
  ]) as unknown as AsyncIterable<Buffer>)
    chunks.push(c);
  return Buffer.concat(chunks);
}

test(
  "tar headers and layer tars: mutated headers, pax records and whole layers are refused or unpacked inside their folder only",
  { timeout: 300_000 },
  async (t) => {
    const dir = await tempDir(t);
    const good = await smallLayer(dir);
    const headers = new Tally("tar-headers");
    const block = fc.oneof(
      fc.uint8Array({ minLength: 512, maxLength: 512 }).map((a) => Buffer.from(a)),
      fc
        .array(fc.tuple(fc.nat({ max: 511 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 8 })
        .map((edits) => {
          const b = Buffer.from(good.subarray(0, 512));
          for (const [i, v] of edits) b[i] = v;
          return b;
        }),
    );
    await fc.assert(
      fc.asyncProperty(block, (b) =>
        headers.run(b.toString("hex"), () => {
          const h = readTarHeader(b);
          if (h) assert.ok(Number.isSafeInteger(h.size) && h.size >= 0);
          if (h) safeEntryPath(h.name);
        }),
      ),
      { numRuns: 4000, seed: SEED },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
          fc.string().map((s) => Buffer.from(`${s.length + 4} ${s}\n`)),
        ),
        (b) => headers.run(b.toString("hex"), () => void parsePaxRecords(b)),
      ),
      { numRuns: 2000, seed: SEED },
    );
    await headers.report(dir);
    assert.equal(headers.crashed, 0, headers.crashes.join("\n"));

    // Whole layers through the real extraction: flipped bytes, truncations, garbage appended.
    const layers = new Tally("layer-tars");
    const sandbox = join(dir, "sandbox");
    await mkdir(sandbox);
    const layer = fc.oneof(
      fc
        .array(fc.tuple(fc.nat({ max: 1535 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 6 })
        .map((edits) => {
          const b = Buffer.from(good);
          for (const [i, v] of edits) b[i] = v;
          return b;
        }),
      fc.nat({ max: good.length }).map((n) => good.subarray(0, n)),
      fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.concat([good, Buffer.from(a)])),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(layer, async (b) => {
        const out = join(sandbox, String(n++));
        await mkdir(out);
        await layers.run(`layer of ${b.length} bytes`, async () => {
          const path = await unpackDiskLayer(Readable.from([b]), "qcow2", out);
          assert.equal(path, join(out, "disk.qcow2"));
        });
        // Whatever happened, nothing was written beside the layer's own folder, and inside it at most the disk.
        const inside = await readdir(out);
        assert.ok(
          inside.every((f) => f === "disk.qcow2"),
          `wrote ${inside.join(", ")}`,
        );
      }),
      { numRuns: 400, seed: SEED },
    );
    assert.deepEqual((await readdir(sandbox)).length, n, "no entry appeared outside the per-layer folders");
    await layers.report(dir);
    assert.equal(layers.crashed, 0, layers.crashes.join("\n"));
  },
);

test(
  "qcow2 headers: random and mutated headers are refused as DISK_INVALID or read within bounds",
  { timeout: 120_000 },
  async (t) => {
    const dir = await tempDir(t);
    const tally = new Tally("qcow2-headers");
    const { execFileSync } = await import("node:child_process");
    execFileSync("qemu-img", [
      "create",
      "-q",
      "-u",
      "-f",
      "qcow2",
      "-F",
      "raw",
      "-b",
      "sha256:" + "a".repeat(64),
      join(dir, "d.qcow2"),
      "1M",
    ]);
    const good = (await readFile(join(dir, "d.qcow2"))).subarray(0, 4096);
    const header = fc.oneof(
      fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
      fc
        .array(fc.tuple(fc.nat({ max: 511 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 8 })
        .map((edits) => {
          const b = Buffer.from(good);
          for (const [i, v] of edits) b[i] = v;
          return b;
        }),
    );
    await fc.assert(
      fc.asyncProperty(header, (b) =>
        tally.run(b.subarray(0, 16).toString("hex"), () => void parseQcow2Header(b, "image")),
      ),
      { numRuns: 3000, seed: SEED },
    );
    await tally.report(dir);
    assert.equal(tally.crashed, 0, tally.crashes.join("\n"));
  },
);

for (const layout of [1, 2] as const)
  test(
    `ramsnap blobs (layout ${layout}): mutated blobs, indexes and metadata are refused as RAMSNAP_INVALID or read and preloaded correctly`,
    { timeout: 300_000 },
    async (t) => {
      const dir = await tempDir(t);
      const mem = Buffer.alloc(1 << 20);
      for (let p = 0; p < 40; p++) mem.fill(p + 1, p * 16384, p * 16384 + 4096);
      await writeFile(join(dir, "memory"), mem);
      const chunks: Buffer[] = [];
      for await (const c of encodeRamsnap({
        metadata: {
          runtime: { name: "qemu", version: "7.2.0" },
          machine: "microvm",
          memoryBytes: mem.length,
          vcpus: 1,
          cpuModel: "max",
          accel: "tcg",
          devices: [],
          diskLayers: [],
        },
        deviceState: Buffer.from("device state"),
        memoryFile: join(dir, "memory"),
        layout,
      }))
        chunks.push(c);
      const good = Buffer.concat(chunks);
      const x = Number(good.readBigUInt64LE(good.length - 8));
      const index = JSON.parse(good.subarray(x + 8, good.length - 16).toString());
      const withIndex = (ix: unknown) => {
        const json = Buffer.from(JSON.stringify(ix) ?? "");
        const frame = Buffer.alloc(8 + json.length + 16);
        frame.writeUInt32LE(0x184d2a5e, 0);
        frame.writeUInt32LE(json.length + 16, 4);
        json.copy(frame, 8);
        frame.write("OVMSIDX1", 8 + json.length, "ascii");
        frame.writeBigUInt64LE(BigInt(x), 8 + json.length + 8);
        return Buffer.concat([good.subarray(0, x), frame]);
      };
      const blob = fc.oneof(
        fc
          .array(fc.tuple(fc.nat({ max: good.length - 1 }), fc.nat({ max: 255 })), {
            minLength: 1,
            maxLength: 4,
          })
          .map((edits) => {
            const b = Buffer.from(good);
            for (const [i, v] of edits) b[i] = v;
            return b;
          }),
        fc
          .array(fc.tuple(fc.nat({ max: 40 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 4 })
          .map((edits) => {
            const b = Buffer.from(good);
            for (const [i, v] of edits) b[b.length - 1 - i] = v;
            return b;
          }),
        fc.nat({ max: good.length }).map((n) => good.subarray(0, n)),
        mutations(index).map(withIndex),
      );
      const tally = new Tally(`ramsnap-v${layout}`);
      let n = 0;
      await fc.assert(
        fc.asyncProperty(blob, async (b) => {
          const file = join(dir, `blob-${n++}`);
          await writeFile(file, b);
          await tally.run(`blob ${file}`, async () => {
            const h = await readRamsnapHeader(file);
            await preloadRamsnap(file, h, join(dir, "out-memory"), join(dir, "out-device"));
            // Accepted: then it must be exactly the memory it was made from.
            assert.ok(
              (await readFile(join(dir, "out-memory"))).equals(mem),
              "an accepted blob restores the same memory",
            );
          });
        }),
        { numRuns: 600, seed: SEED },
      );
      await tally.report(dir);
      assert.equal(tally.crashed, 0, tally.crashes.join("\n"));
      assert.ok(tally.refused > 0);
    },
  );
