import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { readRamsnapHeader } from "../../src/artifact/ramsnap.js";
import { checkStoredArtifact } from "../../src/conformance/artifact-suite.js";
import {
  addRamSnapshot,
  rewriteArtifact,
  replaceBaseWithTwoEntries,
  replaceDiffWithHostBacking,
  type Editable,
} from "../../src/conformance/fixture-patch.js";
import { buildDemo, demoAssets, ovm } from "../helpers.js";

// The Artifact level on real artifacts: the demo artifact `ovm build` makes and a snapshot
// artifact with a real RAM snapshot blob pass every MUST; each artifact broken in one way
// fails exactly the check of the rule it breaks, with that rule's RFC section. No VMM needed.

let dir: string;
let store: Store;
let env: Record<string, string>;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-conformance-artifact-"));
  store = await Store.open(join(dir, "store"));
  env = { OVM_STORE: store.root };
  await buildDemo(store, "demo/vm:1.0");
});

after(() => rm(dir, { recursive: true, force: true }));

/** variant tags a copy of the demo artifact as `demo/vm:<name>`, edited by `edit`. */
async function variant(name: string, edit?: (a: Editable) => void): Promise<string> {
  const tag = `demo/vm:${name}`;
  await store.tag(await store.resolve("demo/vm:1.0"), tag);
  if (edit) await rewriteArtifact(store, tag, edit);
  return tag;
}

/**
 * failures are the ids of the failed checks, with their sections: the MUSTs, and the one SHOULD
 * every RAM snapshot written through lz4-napi misses (it cannot write the frames' content size).
 */
async function failures(tag: string): Promise<string[]> {
  const results = await checkStoredArtifact(store, tag);
  return results
    .filter(
      (r) => r.status === "fail" && !(r.id === "artifact.ramsnap.content-size" && r.requirement === "SHOULD"),
    )
    .map((r) => `${r.id} ${r.section}`);
}

/** snapshotVariant makes a snapshot artifact of the demo (a real ramsnap blob, subject set), then edits its blob. */
async function snapshotVariant(
  name: string,
  blob?: (b: Buffer, header: Awaited<ReturnType<typeof readRamsnapHeader>>) => Buffer,
  subject = true,
) {
  const tag = await variant(name);
  const src = await store.resolve("demo/vm:1.0");
  await addRamSnapshot(store, tag, { scratch: dir, ...(subject ? { subject: src } : {}) });
  if (blob) {
    await rewriteArtifact(store, tag, async ({ oci, config }) => {
      const old = config.ramSnapshot.ref;
      const bytes = blob(await readFile(store.blobPath(old)), await readRamsnapHeader(store.blobPath(old)));
      const put = await store.putBlob(bytes);
      oci.layers = oci.layers.map((l) =>
        l.digest === old ? { ...l, digest: put.digest, size: put.size } : l,
      );
      config.ramSnapshot = { ...config.ramSnapshot, ref: put.digest, size: put.size };
    });
  }
  return tag;
}

test("the artifact `ovm build` makes passes the Artifact level (CLI: table, --json, --junit, exit 0)", async () => {
  const junit = join(dir, "artifact.xml");
  const r = await ovm(["--json", "conformance", "artifact", "demo/vm:1.0", "--junit", junit], env);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const report = JSON.parse(r.stdout);
  assert.equal(report.ok, true);
  assert.deepEqual(report.levels, ["artifact"]);
  const fails = report.results.filter((x: { status: string }) => x.status === "fail");
  assert.deepEqual(fails, [], JSON.stringify(fails));
  const passed = report.results
    .filter((x: { status: string }) => x.status === "pass")
    .map((x: { id: string }) => x.id);
  for (const id of [
    "artifact.manifest.schema",
    "artifact.oci.layers",
    "artifact.disk.tar",
    "artifact.disk.backing",
    "artifact.blobs",
  ])
    assert.ok(passed.includes(id), `${id} passed`);
  assert.match(await readFile(junit, "utf8"), /<testsuite name="Artifact" tests="\d+" failures="0"/);
  const text = await ovm(["conformance", "artifact", "demo/vm:1.0"], env);
  assert.match(text.stdout, /^Artifact: conforms/m);
});

test("a snapshot artifact with a real RAM snapshot blob passes, the independent ramsnap reading and `lz4 -d` included", async () => {
  const tag = await snapshotVariant("snap");
  const results = await checkStoredArtifact(store, tag);
  // The one miss is a SHOULD: lz4-napi (what src/artifact/ramsnap.ts writes with) sets no content size.
  assert.deepEqual(
    results.filter((r) => r.status === "fail").map((r) => [r.id, r.requirement]),
    [["artifact.ramsnap.content-size", "SHOULD"]],
  );
  const passed = results.filter((r) => r.status === "pass").map((r) => r.id);
  for (const id of [
    "artifact.ramsnap.layout",
    "artifact.ramsnap.index",
    "artifact.ramsnap.device-state",
    "artifact.ramsnap.lz4-tool",
    "artifact.manifest.s7",
    "artifact.snapshot",
  ])
    assert.ok(passed.includes(id), `${id} passed (${JSON.stringify(results.find((r) => r.id === id))})`);
});

test("each broken artifact fails exactly the check of the rule it breaks, with its section", async () => {
  const cases: [string, () => Promise<string>, string[]][] = [
    [
      "layers out of order",
      () => variant("order", ({ oci }) => void oci.layers.reverse()),
      ["artifact.oci.layers §3.3"],
    ],
    [
      "a layer without a title",
      () =>
        variant(
          "title",
          ({ oci }) => void delete oci.layers[1].annotations!["org.opencontainers.image.title"],
        ),
      ["artifact.oci.layer-annotations §3.3"],
    ],
    [
      "no artifactType",
      () => variant("type", ({ oci }) => void delete oci.artifactType),
      ["artifact.oci.artifact-type §3.2"],
    ],
    [
      "a wrong ovms.name",
      () => variant("name", ({ oci }) => void (oci.annotations!["ovms.name"] = "other/vm")),
      ["artifact.oci.annotations §3.4"],
    ],
    [
      "an unknown member",
      () => variant("member", ({ config }) => void (config.bogus = 1)),
      ["artifact.manifest.schema §2.1"],
    ],
    [
      "a diff naming another parent",
      () => variant("parent", ({ config }) => void (config.diskLayers[1].parent = config.kernel.ref)),
      ["artifact.manifest.s3 §2.4 S3, §2.2"],
    ],
    [
      "a subject on a plain artifact",
      () =>
        variant(
          "subject",
          ({ oci }) => void (oci.subject = { mediaType: oci.mediaType, digest: oci.config.digest, size: 1 }),
        ),
      ["artifact.oci.subject §3.2, §3.5"],
    ],
    [
      "a diff backed by a host path",
      async () => {
        const tag = await variant("backing");
        await replaceDiffWithHostBacking(store, tag, demoAssets().diff, "/etc/passwd", dir);
        return tag;
      },
      ["artifact.disk.backing §4.2"],
    ],
    [
      "a layer tar with two entries",
      async () => {
        const tag = await variant("tar", ({ config, oci }) => {
          oci.layers = oci.layers.filter((l) => l.digest !== config.diskLayers[1].ref);
          config.diskLayers = [config.diskLayers[0]];
        });
        await replaceBaseWithTwoEntries(store, tag, demoAssets().base, dir);
        return tag;
      },
      ["artifact.disk.tar §4.2"],
    ],
    [
      "a snapshot without subject",
      () => snapshotVariant("nosubject", undefined, false),
      ["artifact.oci.subject §3.2, §3.5", "artifact.snapshot §5.8"],
    ],
    [
      "a RAM snapshot cut short (no trailer)",
      () => snapshotVariant("cut", (b) => b.subarray(0, b.length - 16)),
      ["artifact.ramsnap.layout §5.2, §5.5"],
    ],
    [
      "a RAM snapshot whose device state fails its checksum",
      () =>
        snapshotVariant("devstate", (b, h) => {
          const out = Buffer.from(b);
          out[h.index.deviceState.frameOffset + h.index.deviceState.frameLength - 2] ^= 0xff;
          return out;
        }),
      [
        "artifact.ramsnap.frames §5.2",
        "artifact.ramsnap.device-state §5.4",
        "artifact.ramsnap.lz4-tool §5.1–§5.2",
      ],
    ],
  ];
  for (const [what, make, want] of cases) {
    assert.deepEqual((await failures(await make())).sort(), want.sort(), what);
  }
});

test("ovm conformance artifact exits 1 on a failed MUST and names it", async () => {
  const tag = await variant("cli", ({ oci }) => void oci.layers.reverse());
  const r = await ovm(["conformance", "artifact", tag], env);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stdout, /FAIL\s+MUST\s+§3\.3\s+artifact\.oci\.layers/);
  assert.match(r.stdout, /^Artifact: DOES NOT CONFORM/m);
  // Not in the store, and its registry (nothing listens on the discard port) cannot be reached.
  const missing = await ovm(["conformance", "artifact", "127.0.0.1:9/demo/vm:nope"], env);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /127\.0\.0\.1:9\/demo\/vm:nope: not in the store .*, and pulling it failed/);
});
