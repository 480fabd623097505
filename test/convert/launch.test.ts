import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BootstrapConfig } from "../../src/core/bootstrap.js";
import { isOvmsError } from "../../src/core/errors.js";
import {
  DEFAULT_PATH,
  GUEST_BUSYBOX,
  renderLaunch,
  resolveLaunch,
} from "../../src/artifact/convert/launch.js";
import { tempDir } from "../helpers.js";

const base: BootstrapConfig = {
  schemaVersion: 1,
  mediaType: "application/vnd.ovms.bootstrap.config.v1+json",
};

test("argv follows the OCI rules: entrypoint + cmd; a command override replaces cmd and keeps the entrypoint", () => {
  assert.deepEqual(resolveLaunch({ ...base, cmd: ["sh", "-c", "x"] }).argv, ["sh", "-c", "x"]);
  const ep = { ...base, entrypoint: ["/bin/tool", "--flag"], cmd: ["default"] };
  assert.deepEqual(resolveLaunch(ep).argv, ["/bin/tool", "--flag", "default"]);
  assert.deepEqual(resolveLaunch(ep, { args: ["a", "b"] }).argv, ["/bin/tool", "--flag", "a", "b"]);
  assert.deepEqual(resolveLaunch({ ...base, cmd: ["x"] }, { args: ["echo", "hi"] }).argv, ["echo", "hi"]);
  // An empty override is no override.
  assert.deepEqual(resolveLaunch({ ...base, cmd: ["x"] }, { args: [] }).argv, ["x"]);
});

test("nothing to run, or a program name with '=', is refused with INVALID_ARGUMENT saying what to do", () => {
  assert.throws(
    () => resolveLaunch(base),
    (e) =>
      isOvmsError(e, "INVALID_ARGUMENT") &&
      /neither an entrypoint nor a cmd; give one after `--`/.test(e.message),
  );
  assert.throws(
    () => resolveLaunch(base, { args: ["A=1"] }),
    (e) => isOvmsError(e, "INVALID_ARGUMENT"),
  );
});

test("env: the image's, overrides replace names, PATH/HOME/HOSTNAME added only when missing", () => {
  const l = resolveLaunch(
    { ...base, cmd: ["x"], env: ["A=1", "PATH=/bin", "B=x=y"] },
    { env: ["A=2", "C="], hostname: "web-1" },
  );
  assert.deepEqual(l.env, ["A=2", "PATH=/bin", "B=x=y", "C=", "HOME=/root", "HOSTNAME=web-1"]);
  const u = resolveLaunch({ ...base, cmd: ["x"], user: { uid: 1000, gid: 50 } });
  assert.deepEqual(u.env, [`PATH=${DEFAULT_PATH}`, "HOME=/"]);
  assert.equal(u.uid, 1000);
  assert.equal(u.gid, 50);
  assert.equal(resolveLaunch({ ...base, cmd: ["x"], stopSignal: "SIGINT" }).stopSignal, "INT");
  assert.equal(resolveLaunch({ ...base, cmd: ["x"] }).stopSignal, "TERM");
  for (const bad of ["NOEQUALS", "=v", "-x=1"])
    assert.throws(
      () => resolveLaunch({ ...base, cmd: ["x"] }, { env: [bad] }),
      (e) => isOvmsError(e, "INVALID_ARGUMENT"),
    );
});

test("the launch file is shell that passes every string through untouched (run here with busybox sh)", async (t) => {
  const dir = await tempDir(t);
  const nasty = [
    "it's",
    '"double"',
    "$(echo no)",
    "`echo no`",
    "$HOME",
    "a b\tc",
    "line1\nline2",
    "back\\slash",
    "*",
    "",
  ];
  const launch = resolveLaunch(
    {
      ...base,
      entrypoint: [
        "/usr/bin/busybox",
        "sh",
        "-c",
        'for a in "$@"; do printf "[%s]\\n" "$a"; done; env',
        "argv0",
      ],
    },
    { args: nasty, env: ["WEIRD=$(no) 'q' \"d\" `b`", "EMPTY="], hostname: "h1" },
  );
  // The guest's busybox lives in /dev/.ovms; here the host's stands in for it.
  const script = renderLaunch({ ...launch, workdir: dir }).replaceAll(GUEST_BUSYBOX, "/usr/bin/busybox");
  await writeFile(join(dir, "launch"), script);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      "/usr/bin/busybox",
      ["sh", "-c", `. ${join(dir, "launch")}; cd "$ovms_workdir"; ovms_exec`],
      (e, so, se) => (e ? reject(new Error(`${e.message}: ${se}`)) : resolve(so)),
    ),
  );
  const [args, env] = [out.slice(0, out.indexOf("]\n", out.lastIndexOf("[]")) + 2), out];
  assert.equal(args, nasty.map((a) => `[${a}]\n`).join(""));
  const lines = env.split("\n");
  assert.ok(lines.includes("WEIRD=$(no) 'q' \"d\" `b`"), env);
  assert.ok(lines.includes("EMPTY="), env);
  assert.ok(lines.includes("HOSTNAME=h1"), env);
  assert.ok(lines.includes(`PATH=${DEFAULT_PATH}`), env);
  assert.match(script, /^ovms_hostname='h1'$/m);
  assert.match(script, /^ovms_stop_signal='TERM'$/m);
});
