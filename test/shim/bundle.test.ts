import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { link, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rootFsFromDir } from "../../src/artifact/convert/convert-rootfs.js";
import { readBundle } from "../../src/shim/bundle.js";

// What Create reads from a bundle: config.json's process (bad members named by their JSON
// path), and the rootfs directory as a RootFs (types, modes, owners, hard links kept).

async function bundleWith(config: unknown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ovms-bundle-"));
  await writeFile(join(dir, "config.json"), typeof config === "string" ? config : JSON.stringify(config));
  return dir;
}

test("readBundle: process args, env, cwd and user become the bootstrap config; annotations and the memory limit are read", async (t) => {
  const dir = await bundleWith({
    process: { args: ["sh", "-c", "echo hi"], env: ["A=1"], cwd: "/work", user: { uid: 1000, gid: 100 } },
    root: { path: "rootfs" },
    annotations: { "ovms.artifact": "snap/app:1", n: 3 },
    linux: { resources: { memory: { limit: 128 << 20 } } },
  });
  t.after(() => rm(dir, { recursive: true, force: true }));
  const b = await readBundle(dir);
  assert.deepEqual(b.bootstrap, {
    schemaVersion: 1,
    mediaType: "application/vnd.ovms.bootstrap.config.v1+json",
    entrypoint: ["sh", "-c", "echo hi"],
    env: ["A=1"],
    workdir: "/work",
    user: { uid: 1000, gid: 100 },
  });
  assert.equal(b.rootPath, join(dir, "rootfs"));
  assert.deepEqual(b.annotations, { "ovms.artifact": "snap/app:1" });
  assert.equal(b.memory, 128 << 20);
});

test("readBundle: a bad config.json is CONFIG_INVALID naming the file and the member", async (t) => {
  const cases: [unknown, RegExp][] = [
    ["{not json", /config\.json: .*JSON/],
    [{}, /config\.json: process is missing/],
    [{ process: { args: [] } }, /process\.args is empty/],
    [{ process: { args: ["sh", 3] } }, /process\.args must be an array of strings/],
    [{ process: { args: ["sh"], cwd: "rel" } }, /process\.cwd must be an absolute path/],
    [{ process: { args: ["sh"], user: { uid: -1 } } }, /process\.user\.uid must be a non-negative integer/],
  ];
  for (const [config, want] of cases) {
    const dir = await bundleWith(config);
    t.after(() => rm(dir, { recursive: true, force: true }));
    await assert.rejects(readBundle(dir), (e: any) => {
      assert.equal(e.code, "CONFIG_INVALID");
      assert.match(e.message, want);
      return true;
    });
  }
});

test("rootFsFromDir: a directory's files, folders, symlinks, fifos and hard links with their modes and owners", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ovms-rootfs-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, "bin"));
  await writeFile(join(dir, "bin", "tool"), "#!/bin/sh\n", { mode: 0o4755 });
  await link(join(dir, "bin", "tool"), join(dir, "bin", "tool2"));
  await symlink("tool", join(dir, "bin", "alias"));
  execFileSync("mkfifo", [join(dir, "fifo")]);
  execFileSync("chown", ["1000:1000", join(dir, "bin")]);
  execFileSync("chmod", ["4755", join(dir, "bin", "tool")]);
  const { root, files } = await rootFsFromDir(dir);
  assert.deepEqual(root.paths(), ["", "bin", "bin/alias", "bin/tool", "bin/tool2", "fifo"]);
  const tool = root.nodes.get("bin/tool")!;
  assert.equal(tool.type, "file");
  assert.equal(tool.mode, 0o4755);
  assert.deepEqual(root.nodes.get("bin/tool2")!.content, tool.content, "a hard link is one content");
  assert.equal(files.contentPath(tool.content!.layer, tool.content!.n), join(dir, "bin", "tool"));
  assert.deepEqual(
    [root.nodes.get("bin")!.uid, root.nodes.get("bin")!.gid, root.nodes.get("bin")!.type],
    [1000, 1000, "dir"],
  );
  assert.equal(root.nodes.get("bin/alias")!.target, "tool");
  assert.equal(root.nodes.get("fifo")!.type, "fifo");
  await assert.rejects(rootFsFromDir(join(dir, "missing")), /not a directory/);
});
