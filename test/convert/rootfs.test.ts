import { test } from "node:test";
import assert from "node:assert/strict";
import type { Digest } from "../../src/core/digest.js";
import { isOvmsError } from "../../src/core/errors.js";
import type { LayerEntry } from "../../src/artifact/convert/layer-cache.js";
import { RootFs } from "../../src/artifact/convert/rootfs.js";

const L1 = `sha256:${"1".repeat(64)}` as Digest;
const L2 = `sha256:${"2".repeat(64)}` as Digest;
const L3 = `sha256:${"3".repeat(64)}` as Digest;
let n = 0;
const file = (path: string, extra: Partial<LayerEntry> = {}): LayerEntry => ({
  path,
  type: "file",
  mode: 0o644,
  uid: 0,
  gid: 0,
  mtime: 1,
  size: 1,
  content: n++,
  ...extra,
});
const dir = (path: string, extra: Partial<LayerEntry> = {}): LayerEntry => ({
  path,
  type: "dir",
  mode: 0o755,
  uid: 0,
  gid: 0,
  mtime: 1,
  ...extra,
});
const mark = (path: string, type: "whiteout" | "opaque"): LayerEntry => ({
  path,
  type,
  mode: 0,
  uid: 0,
  gid: 0,
  mtime: 0,
});
const sym = (path: string, target: string): LayerEntry => ({
  path,
  type: "symlink",
  target,
  mode: 0o777,
  uid: 0,
  gid: 0,
  mtime: 1,
});

test("a whiteout hides a lower file or folder with everything under it, never what its own layer adds", () => {
  const r = new RootFs();
  r.apply(L1, [dir("etc"), file("etc/a"), dir("etc/d"), file("etc/d/x"), file("etc/b")]);
  // In layer 2 the file comes before its whiteout in the tar: the whiteout still only hides layer 1's.
  r.apply(L2, [
    file("etc/b"),
    mark("etc/b", "whiteout"),
    mark("etc/d", "whiteout"),
    mark("etc/a", "whiteout"),
  ]);
  assert.deepEqual(r.paths(), ["", "etc", "etc/b"]);
  assert.deepEqual(r.nodes.get("etc/b")!.content!.layer, L2);
});

test("an opaque folder hides what lower layers had in it and keeps what its layer adds", () => {
  const r = new RootFs();
  r.apply(L1, [dir("opt"), file("opt/old"), dir("opt/sub"), file("opt/sub/deep"), file("optx")]);
  r.apply(L2, [file("opt/new"), mark("opt", "opaque"), dir("opt", { mode: 0o700 })]);
  assert.deepEqual(r.paths(), ["", "opt", "opt/new", "optx"]);
  assert.equal(r.nodes.get("opt")!.mode, 0o700);
});

test("a folder replaced by a folder keeps its children; a file and a folder replace each other", () => {
  const r = new RootFs();
  r.apply(L1, [dir("a", { uid: 5 }), file("a/keep"), file("b"), dir("c"), file("c/gone")]);
  r.apply(L2, [dir("a", { uid: 7 }), dir("b"), file("b/in"), file("c")]);
  assert.deepEqual(r.paths(), ["", "a", "a/keep", "b", "b/in", "c"]);
  assert.equal(r.nodes.get("a")!.uid, 7);
  assert.equal(r.nodes.get("c")!.type, "file");
});

test("paths through symlinked folders stay inside the root; missing parents become folders", () => {
  const r = new RootFs();
  r.apply(L1, [dir("usr/bin"), sym("bin", "usr/bin"), sym("escape", "../../../../etc"), sym("abs", "/usr")]);
  r.apply(L2, [file("bin/tool"), file("escape/passwd"), file("abs/lib/x"), file("new/deep/file")]);
  assert.ok(r.nodes.has("usr/bin/tool"), "bin/ -> usr/bin");
  assert.ok(r.nodes.has("etc/passwd"), "../.. stops at the root");
  assert.ok(r.nodes.has("usr/lib/x"), "an absolute target is from the root");
  assert.equal(r.nodes.get("new/deep")!.type, "dir");
  assert.equal(r.nodes.get("bin")!.type, "symlink", "the symlink itself stays");
  assert.equal(r.find("bin/tool")?.content?.layer, L2);
  assert.equal(r.find("nothing/here"), undefined);
  const loop = new RootFs();
  loop.apply(L1, [sym("a", "b"), sym("b", "a")]);
  assert.throws(
    () => loop.apply(L2, [file("a/x")]),
    (e) => isOvmsError(e, "IMAGE_UNSUPPORTED") && /symlinks/.test(e.message),
  );
});

test("a hard link is the same inode as its target at that moment, and keeps it when the target is replaced", () => {
  const r = new RootFs();
  r.apply(L1, [
    file("bin/busybox"),
    { path: "bin/sh", type: "hardlink", target: "bin/busybox", mode: 0o755, uid: 0, gid: 0, mtime: 1 },
  ]);
  assert.deepEqual(r.nodes.get("bin/sh")!.content, r.nodes.get("bin/busybox")!.content);
  r.apply(L2, [file("bin/busybox")]);
  assert.equal(r.nodes.get("bin/sh")!.content!.layer, L1);
  assert.equal(r.nodes.get("bin/busybox")!.content!.layer, L2);
  assert.throws(
    () =>
      r.apply(L3, [{ path: "x", type: "hardlink", target: "missing", mode: 0, uid: 0, gid: 0, mtime: 0 }]),
    (e) => isOvmsError(e, "IMAGE_UNSUPPORTED") && /does not exist/.test(e.message),
  );
});

test("the root entry sets the root's metadata; a whiteout of the root's child at top level works", () => {
  const r = new RootFs(42);
  assert.equal(r.nodes.get("")!.mtime, 42);
  r.apply(L1, [dir("", { mode: 0o700, mtime: 9 }), file("top")]);
  r.apply(L2, [mark("top", "whiteout")]);
  assert.deepEqual(r.paths(), [""]);
  assert.equal(r.nodes.get("")!.mode, 0o700);
});
