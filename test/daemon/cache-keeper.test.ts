import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { Store } from "../../src/store/store.js";
import { QemuRuntime } from "../../src/runtime/qemu/qemu-runtime.js";
import { SNAPSHOT_CACHE_ROOT, DEFAULT_SNAPSHOT_CACHE_BYTES } from "../../src/artifact/snapshot-cache.js";
import { CacheKeeper } from "../../src/daemon/cache-keeper.js";
import { createLogger } from "../../src/daemon/log.js";
import { waitFor } from "./harness.js";

// The daemon's housekeeping of the preload cache (issue 14, item 2) runs not only at start but
// every few minutes: a store deleted while the daemon runs loses its preloads without a restart
// or a gc. Here with a period of 200 ms, on a real store and the real QEMU runtime (no guest).
test("orphaned preloads are pruned periodically while the daemon runs, not only at its start", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ovms-keeper-"));
  await chmod(dir, 0o755);
  const orphan = join(SNAPSHOT_CACHE_ROOT, `test-periodic-${process.pid}`);
  const runtime = await QemuRuntime.create({ stateDir: join(dir, "state") });
  let logged = "";
  const log = createLogger(
    "info",
    new Writable({
      write: (c: Buffer, _e, cb) => {
        logged += c.toString();
        cb();
      },
    }),
  );
  const keeper = new CacheKeeper({
    store: await Store.open(join(dir, "store")),
    runtime,
    log,
    pooled: () => [],
    everyMs: 200,
  });
  try {
    assert.equal(
      keeper.capBytes,
      DEFAULT_SNAPSHOT_CACHE_BYTES,
      "2 GiB unless --snapshot-cache says otherwise",
    );
    await keeper.start();
    // A store deleted after the daemon started: its cache folder is an orphan from now on.
    await mkdir(join(orphan, "a".repeat(64)), { recursive: true });
    await writeFile(join(orphan, "a".repeat(64), "memory"), Buffer.alloc(64 * 1024, 1));
    await writeFile(join(orphan, "store-path"), join(dir, "deleted-store"));
    await waitFor("the periodic maintenance to prune the orphan", async () =>
      existsSync(orphan) ? undefined : true,
    );
    assert.match(logged, /pruned the preloads of stores that are gone.*periodic/);
  } finally {
    await keeper.stop();
    await runtime.close();
    await rm(orphan, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  }
});
