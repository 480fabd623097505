import { test } from "node:test";
import assert from "node:assert/strict";
import { Command } from "commander";
import { addDaemonOptions, serveOptions } from "../../src/daemon/options.js";
import { WarmPools } from "../../src/daemon/warm-pools.js";

const D = `sha256:${"b".repeat(64)}`;

test("--warm-pool and --warm-pool-for set the global and per-snapshot pool sizes", () => {
  const cmd = addDaemonOptions(new Command("ovmd")).exitOverride();
  cmd.parse(["--warm-pool", "2", "--warm-pool-for", "demo/vm:snap=4", "--warm-pool-for", `${D}=0`], {
    from: "user",
  });
  const o = serveOptions(cmd.opts());
  assert.equal(o.warmPool, 2);
  assert.deepEqual(o.warmPools, { "demo/vm:snap": 4, [D]: 0 });
  const bad = addDaemonOptions(new Command("ovmd")).exitOverride();
  assert.throws(() => bad.parse(["--warm-pool-for", "demo/vm:snap"], { from: "user" }), /want REF=N/);
});

test("a snapshot's own pool size wins over the global one, by digest first, then by normalized reference", () => {
  const c = new WarmPools({} as never, {} as never, {
    warmPool: 1,
    warmPools: { "demo/vm:snap": 4, [D]: 0 },
  });
  assert.equal(c.sizeFor("docker.io/demo/vm:snap", `sha256:${"a".repeat(64)}`), 4);
  assert.equal(c.sizeFor("demo/vm:snap", D), 0, "the digest setting wins");
  assert.equal(c.sizeFor("other/vm:1", `sha256:${"c".repeat(64)}`), 1, "others get the global size");
  assert.equal(c.sizeFor("/some/layout/path", `sha256:${"c".repeat(64)}`), 1);
});
