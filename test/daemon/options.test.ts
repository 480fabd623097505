import { test } from "node:test";
import assert from "node:assert/strict";
import { Command } from "commander";
import { addDaemonOptions, serveOptions, type DaemonFlags } from "../../src/daemon/options.js";

const parse = (args: string[]) =>
  serveOptions(
    addDaemonOptions(new Command("ovmd").exitOverride().configureOutput({ writeErr: () => undefined }))
      .parse(["node", "ovmd", ...args])
      .opts<DaemonFlags>(),
  );

test("--confine, --no-limits and --boot-timeout reach the daemon's options", () => {
  assert.deepEqual(
    { confine: parse([]).confine, limits: parse([]).limits, boot: parse([]).bootTimeoutMs },
    { confine: "auto", limits: undefined, boot: 60_000 },
    "defaults: namespaces where possible, limits, 60 s",
  );
  const o = parse(["--confine", "off", "--no-limits", "--boot-timeout", "2.5"]);
  assert.equal(o.confine, "off");
  assert.equal(o.limits, false);
  assert.equal(o.bootTimeoutMs, 2500);
  assert.equal(parse(["--boot-timeout", "0"]).bootTimeoutMs, 0, "0: no watchdog");
  assert.throws(() => parse(["--confine", "maybe"]), /Allowed choices are auto, on, off/);
  assert.throws(
    () => parse(["--boot-timeout", "-3"]),
    (e: any) => e.code === "USAGE" && /--boot-timeout -3/.test(e.message),
  );
});

test("--background-snapshots off reaches the daemon's options; auto is the default", () => {
  assert.equal(
    parse([]).backgroundSnapshots,
    undefined,
    "default: background snapshots where QEMU can have them",
  );
  assert.equal(parse(["--background-snapshots", "off"]).backgroundSnapshots, false);
  assert.equal(parse(["--background-snapshots", "auto"]).backgroundSnapshots, undefined);
  assert.throws(() => parse(["--background-snapshots", "yes"]), /Allowed choices are auto, off/);
});
