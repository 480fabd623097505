import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { loadArtifact } from "../../src/artifact/artifact.js";
import { layersDir, prepareArtifact } from "../../src/artifact/prepare.js";
import { buildDemo, tempDir } from "../helpers.js";
import { existsSync } from "node:fs";

// rfc §2.2: `metadata.platform.uefi: true` asks for UEFI boot, which v0.1 does not define; a
// runtime refuses it with NOT_IMPLEMENTED instead of booting the kernel directly (found by
// `ovm conformance runtime`, check runtime.refuse.uefi).
test("an artifact asking for UEFI boot is refused with NOT_IMPLEMENTED before anything is unpacked", async (t) => {
  const store = await Store.open(join(await tempDir(t), "store"));
  await buildDemo(store, "demo/vm:1.0", false);
  const a = await loadArtifact(store, "demo/vm:1.0");
  const uefi = {
    ...a,
    ovms: { ...a.ovms, metadata: { ...a.ovms.metadata, platform: { arch: "x86_64" as const, uefi: true } } },
  };
  await assert.rejects(
    prepareArtifact(store, uefi),
    (e: any) => e.code === "NOT_IMPLEMENTED" && /uefi/.test(e.message),
  );
  assert.ok(!existsSync(layersDir(store)), "no disk layer was unpacked");
  await prepareArtifact(store, a);
  assert.ok(existsSync(layersDir(store)), "the same artifact without uefi prepares");
});
