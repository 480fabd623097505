import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { sha256, type Digest } from "../../src/core/digest.js";
import { isOvmsError } from "../../src/core/errors.js";
import { Store } from "../../src/store/store.js";
import { RegistryClient } from "../../src/registry/client.js";
import { copy } from "../../src/registry/copy.js";
import { OVM, ovmJson, spawn } from "../helpers.js";
import { setup, type Setup } from "./proxied-artifact.js";

/** biggestIngest is the size of the largest temp file of the store's ingest folder (0: none). */
async function biggestIngest(root: string): Promise<number> {
  const dir = join(root, ".ovms", "ingest");
  const files = await readdir(dir).catch(() => [] as string[]);
  const sizes = await Promise.all(
    files.map((f) =>
      stat(join(dir, f)).then(
        (s) => s.size,
        () => 0,
      ),
    ),
  );
  return Math.max(0, ...sizes);
}

/**
 * STALL_AT: the proxy holds the base blob (12 MiB) after this many bytes: past two of the
 * store's 4 MiB staging buffers (store/append-file.ts), so part of it is surely in the file.
 */
const BASE_MIB = 12;
const STALL_AT = 9 << 20;

/** midBlob resolves once the proxy holds the base blob half-sent and the store has a partial temp file of it. */
async function midBlob(s: Setup, root: string, stalled: Promise<void>): Promise<void> {
  await stalled;
  for (let i = 0; i < 500 && (await biggestIngest(root)) < 4 << 20; i++) await sleep(10);
  assert.ok(
    (await biggestIngest(root)) >= 4 << 20,
    "the base blob is being written when the pull is stopped",
  );
}

/** assertNothingHalfWritten: no temp file, no name, no base blob, and every blob there is whole. */
async function assertNothingHalfWritten(s: Setup, root: string): Promise<void> {
  assert.deepEqual(await readdir(join(root, ".ovms", "ingest")), [], "no temp file left");
  const store = await Store.open(root);
  assert.deepEqual(await store.entries(), [], "no name written");
  assert.equal(await store.exists({ digest: s.base as Digest }), false, "no partial base blob");
  const dir = join(root, "blobs", "sha256");
  for (const hex of await readdir(dir))
    assert.equal(sha256(await readFile(join(dir, hex))), `sha256:${hex}`, "only whole blobs");
}

test("a pull cancelled in the middle of a blob (in a transfer worker, and in the main thread) stops at once and leaves nothing half-written", async (t) => {
  const s = await setup(t, BASE_MIB);
  for (const workers of [true, false]) {
    const root = join(s.dir, `dst-${workers ? "workers" : "main"}`);
    const dst = await Store.open(root);
    const client = new RegistryClient({ credentials: async () => undefined });
    const controller = new AbortController();
    const stalled = s.proxy.stallOnce(s.base, STALL_AT);
    const pulling = copy(client.repository(s.ref), "1", dst, s.ref, { signal: controller.signal, workers });
    await midBlob(s, root, stalled);
    const stopped = Date.now();
    controller.abort();
    await assert.rejects(pulling, (e) => isOvmsError(e, "CANCELLED"));
    assert.ok(Date.now() - stopped < 5_000, `stopped in ${Date.now() - stopped} ms`);
    await assertNothingHalfWritten(s, root);
    await client.close();
    s.proxy.reset();
  }
  // The store is fine to pull into again.
  const pulled = await ovmJson(["--store", join(s.dir, "dst-main"), "pull", s.ref], {
    DOCKER_CONFIG: join(s.dir, "docker"),
  });
  assert.equal(pulled.digest, s.digest);
});

test("Ctrl-C during `ovm pull`: exit 130 with one line, SIGTERM 143 (one JSON line with --json); nothing half-written", async (t) => {
  const s = await setup(t, BASE_MIB);
  const env = { ...process.env, DOCKER_CONFIG: join(s.dir, "docker") };
  for (const [signal, status, json] of [
    ["SIGINT", 130, false],
    ["SIGTERM", 143, true],
  ] as const) {
    const root = join(s.dir, `dst-${signal}`);
    const stalled = s.proxy.stallOnce(s.base, STALL_AT);
    const args = [OVM, ...(json ? ["--json"] : []), "--store", root, "pull", s.ref];
    const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    await midBlob(s, root, stalled);
    const stopped = Date.now();
    child.kill(signal);
    const code = await exited;
    assert.ok(Date.now() - stopped < 5_000, `exited ${Date.now() - stopped} ms after ${signal}`);
    assert.equal(code, status, stderr);
    assert.equal(stdout, "");
    // A pull into a store that does not exist yet says first that it creates it (issue 14).
    const lines = stderr
      .trimEnd()
      .split("\n")
      .filter((l) => !l.startsWith("creating the store "));
    assert.equal(lines.length, 1, stderr);
    if (json)
      assert.deepEqual(JSON.parse(lines[0]), {
        error: {
          code: "CANCELLED",
          message: `pull of ${s.ref} interrupted (SIGTERM); nothing half-written was kept`,
        },
      });
    else assert.equal(lines[0], `ovm: pull of ${s.ref} interrupted (SIGINT); nothing half-written was kept`);
    await assertNothingHalfWritten(s, root);
    s.proxy.reset();
  }
});
