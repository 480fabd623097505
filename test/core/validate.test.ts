import { test } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { checkManifest, validateManifest, parseManifest, jsonPath } from "../../src/core/validate.js";
import { ValidationError } from "../../src/core/errors.js";
import { ROOT } from "../helpers.js";

const D = (c: string) => `sha256:${c.repeat(64)}`;

function minimal(): Record<string, any> {
  return {
    schemaVersion: 1,
    mediaType: "application/vnd.ovms.manifest.v1+json",
    name: "example/vm",
    version: "1.0",
    kernel: { ref: D("a"), args: "console=ttyS0" },
  };
}

test("every file in examples/ validates against the schema", async () => {
  const files = (await readdir(join(ROOT, "examples"))).filter((f) => f.endsWith(".json"));
  assert.ok(files.length >= 3, `want at least 3 example manifests, found ${files.length}`);
  for (const f of files) {
    const problems = checkManifest(JSON.parse(await readFile(join(ROOT, "examples", f), "utf8")));
    assert.deepEqual(problems, [], `${f} should be valid`);
  }
});

test("a minimal manifest is valid", () => {
  assert.deepEqual(checkManifest(minimal()), []);
});

test("all problems are reported at once, each with its JSON path", () => {
  const m = minimal();
  m.diskLayers = [
    { ref: D("b"), format: "qcow2", size: 10 },
    { ref: "sha256:xyz", format: "vmdk", size: -1 },
  ];
  m.surprise = true;
  delete m.version;
  const problems = checkManifest(m);
  const byPath = Object.fromEntries(problems.map((p) => [p.path, p.message]));
  assert.equal(byPath["diskLayers[1].size"], "must be >= 0");
  assert.match(byPath["diskLayers[1].ref"], /sha256 digest/);
  assert.match(byPath["diskLayers[1].format"], /"qcow2", "raw"/);
  assert.match(byPath["surprise"], /not a known field/);
  assert.equal(byPath["version"], "is required");
  assert.ok(problems.length >= 5);
});

test("unknown fields are refused except namespaced keys under extensions", () => {
  const ok = { ...minimal(), extensions: { "com.example.tuning": { hugepages: true } } };
  assert.deepEqual(checkManifest(ok), []);
  const bad = { ...minimal(), extensions: { tuning: 1 } };
  assert.match(checkManifest(bad)[0].message, /namespaced/);
  const nested = { ...minimal(), kernel: { ref: D("a"), initramfs: "x" } };
  assert.equal(checkManifest(nested)[0].path, "kernel.initramfs");
});

test("semantic rules: diff layers are qcow2 and name their parent; devices are unique powers of two", () => {
  const m = minimal();
  m.diskLayers = [
    { ref: D("b"), format: "raw", size: 1, parent: D("c") },
    { ref: D("c"), format: "raw", size: 1, parent: D("d") },
  ];
  m.devices = [
    { type: "ivshmem", name: "shm", size: 1000 },
    { type: "ivshmem", name: "shm", size: 4096 },
  ];
  const paths = checkManifest(m).map((p) => p.path);
  for (const p of [
    "diskLayers[0].parent",
    "diskLayers[1].format",
    "diskLayers[1].parent",
    "devices[0].size",
    "devices[1].name",
  ]) {
    assert.ok(paths.includes(p), `expected a problem at ${p}, got ${paths.join(", ")}`);
  }
});

test("validateManifest throws ValidationError with code MANIFEST_INVALID and the list", () => {
  const m = minimal();
  m.kernel.ref = "md5:abc";
  assert.throws(
    () => validateManifest(m, "x.json"),
    (e: unknown) => {
      assert.ok(e instanceof ValidationError);
      assert.equal(e.code, "MANIFEST_INVALID");
      assert.equal(e.problems[0].path, "kernel.ref");
      assert.match(e.message, /^x\.json: 1 problem/);
      return true;
    },
  );
  assert.throws(() => parseManifest("{not json"), /not valid JSON/);
});

test("jsonPath writes dotted paths with indexes and quotes odd keys", () => {
  assert.equal(jsonPath("/diskLayers/1/size"), "diskLayers[1].size");
  assert.equal(jsonPath("/extensions/com.example~1x"), 'extensions["com.example/x"]');
  assert.equal(jsonPath("", "kernel"), "kernel");
});
