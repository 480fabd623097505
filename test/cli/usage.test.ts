import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Command } from "commander";
import { program } from "../../src/cli/program.js";
import { SOCKET_DEFAULTS, resolveSocketPath, storeSocketPath } from "../../src/api/paths.js";
import { OVM, demoAssets, ovm, ovmJson, tempDir } from "../helpers.js";

// What `ovm` says about what was typed, without a daemon (issue 14, items 9, 10 and 11).

/** commands lists every command of the tree with its full name (`ovm key generate`). */
function commands(c: Command, path = "ovm"): [string, Command][] {
  return [[path, c], ...c.commands.flatMap((s) => commands(s, `${path} ${s.name()}`))];
}

/** helpOf renders a command's help as `--help` prints it, text added after it included. */
function helpOf(c: Command): string {
  let text = "";
  c.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
  c.outputHelp();
  return text;
}

test("every command's --help ends with examples", async () => {
  const missing = commands(await program())
    .filter(([, c]) => !/\nExamples:\n {2}\S/.test(helpOf(c)))
    .map(([name]) => name);
  assert.deepEqual(missing, []);
});

test("defaults are written one way in every help: (default: X)", async () => {
  for (const [name, c] of commands(await program())) {
    const help = helpOf(c).replace(/\s+/g, " ");
    for (const m of help.matchAll(/\(default\b[^)]*\)?/g))
      assert.match(m[0], /^\(default: [^"]/, `${name}: "${m[0]}"`);
  }
});

test("pull --help offers no upload option; push and copy do", async () => {
  const all = Object.fromEntries(commands(await program()));
  assert.doesNotMatch(helpOf(all["ovm pull"]), /--chunk-size/);
  assert.match(helpOf(all["ovm push"]), /--chunk-size/);
  assert.match(helpOf(all["ovm copy"]), /--chunk-size/);
});

test("--socket help states the order resolveSocketPath follows", async () => {
  for (const [name, c] of commands(await program())) {
    const opt = c.options.find((o) => o.long === "--socket");
    if (opt) assert.ok(opt.description?.endsWith(SOCKET_DEFAULTS), `${name}: ${opt.description}`);
  }
  const order = ["$OVMD_SOCKET", "$XDG_RUNTIME_DIR/ovms/", "/run/ovms/", "/tmp/ovms-UID/"].map((s) =>
    SOCKET_DEFAULTS.indexOf(s),
  );
  assert.ok(
    order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1])),
    SOCKET_DEFAULTS,
  );
  // The code, in that order: the flag, then $OVMD_SOCKET, then the store's own socket.
  const store = { dir: "/srv/a", defaultDir: "/home/u/.local/share/ovms/store" };
  const env = { XDG_RUNTIME_DIR: "/run/user/7", OVMD_SOCKET: "/x/env.sock" };
  assert.equal(resolveSocketPath("/x/flag.sock", env, store), "/x/flag.sock");
  assert.equal(resolveSocketPath(undefined, env, store), "/x/env.sock");
  assert.match(
    resolveSocketPath(undefined, { XDG_RUNTIME_DIR: "/run/user/7" }, store),
    /^\/run\/user\/7\/ovms\/ovmd-[0-9a-f]{16}\.sock$/,
  );
  assert.equal(
    storeSocketPath(
      { dir: store.defaultDir, defaultDir: store.defaultDir },
      { XDG_RUNTIME_DIR: "/run/user/7" },
    ),
    "/run/user/7/ovms/ovmd.sock",
    "the default store's daemon keeps the default socket",
  );
});

test("an unknown command or a missing argument: one line and a pointer to --help, exit 2", async () => {
  for (const [args, line, pointer] of [
    [["nosuch"], /^ovm: unknown command 'nosuch'$/m, "ovm --help"],
    [["stpo"], /^\(Did you mean stop\?\)$/m, "ovm --help"],
    [["stop"], /^ovm: missing required argument 'id'$/m, "ovm stop --help"],
    [["kill"], /^ovm: missing required argument 'id'$/m, "ovm kill --help"],
    [["key", "gen"], /^ovm: unknown command 'gen'$/m, "ovm key --help"],
    [["ps", "--bogus"], /^ovm: unknown option '--bogus'$/m, "ovm ps --help"],
  ] as const) {
    const r = await ovm([...args]);
    assert.equal(r.code, 2, args.join(" "));
    assert.match(r.stderr, line);
    assert.ok(r.stderr.includes(`(see '${pointer}' for its flags and examples)`), r.stderr);
    assert.doesNotMatch(r.stderr, /Usage:|Options:/, "not the whole help");
    assert.ok(r.stderr.trim().split("\n").length <= 3, r.stderr);
  }
});

test("ovm kill -s takes a signal name (with or without SIG) or number 1-64; anything else is a usage error naming it", async () => {
  for (const bad of ["FOO", "0", "65", "SIGNOPE"]) {
    const r = await ovm(["kill", "-s", bad, "web"]);
    assert.equal(r.code, 2, bad);
    assert.match(r.stderr, new RegExp(`--signal ${bad}: not a signal`), r.stderr);
  }
});

test("ovm build --cpus abc|0|1.5|2x|256 is refused like ovm run --cpus, and nothing is created", async (t) => {
  const dir = await tempDir(t);
  const store = join(dir, "store");
  for (const v of ["abc", "0", "1.5", "2x", "256", "-1"]) {
    for (const cmd of [
      ["build", "-t", "x/y:1", "--kernel", demoAssets().kernel],
      ["run", "x/y:1"],
    ]) {
      const r = await ovm(["--store", store, ...cmd, "--cpus", v]);
      assert.equal(r.code, 2, `${cmd[0]} --cpus ${v}: ${r.stderr}`);
      assert.match(
        r.stderr,
        new RegExp(`--cpus ${v.replace(".", "\\.")}: expected a whole number of vCPUs from 1 to 255`),
      );
    }
  }
  assert.equal(existsSync(store), false);
});

test("a store that does not exist is created only by commands that write, which say so", async (t) => {
  const dir = await tempDir(t);
  const store = join(dir, "nope", "store");
  const ls = await ovm(["--store", store, "ls"]);
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, /^REFERENCE/);
  assert.match(ls.stderr, /no store at .*nope\/store/);
  assert.deepEqual(await ovmJson(["--store", store, "ls"]), []);
  for (const args of [
    ["inspect", "x/y:1"],
    ["rmi", "x/y:1"],
    ["gc"],
    ["tag", "x/y:1", "x/y:2"],
    ["push", "127.0.0.1:1/x/y:1"],
  ]) {
    const r = await ovm(["--store", store, ...args]);
    assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
    assert.match(r.stderr, /no store at/, args[0]);
  }
  assert.equal(existsSync(join(dir, "nope")), false, "reading created nothing");
  const a = demoAssets();
  const b = await ovm(["--store", store, "build", "-t", "x/y:1", "--kernel", a.kernel]);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, new RegExp(`creating the store ${store}`));
  assert.ok(existsSync(join(store, "oci-layout")));
  const again = await ovm(["--store", store, "build", "-t", "x/y:2", "--kernel", a.kernel]);
  assert.doesNotMatch(again.stderr, /creating the store/);
});

test("a path that cannot be a store is refused in words, and left as it was", async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, "a-file");
  await writeFile(file, "x");
  const busy = join(dir, "busy");
  await mkdir(busy);
  await writeFile(join(busy, "notes.txt"), "mine");
  const k = demoAssets().kernel;
  for (const [store, why] of [
    ["/etc/passwd", /store \/etc\/passwd is a file, not a folder/],
    [join(file, "store"), /a part of this path is a file/],
    [busy, /holds other things and no oci-layout/],
  ] as const) {
    for (const args of [["ls"], ["build", "-t", "x/y:1", "--kernel", k]]) {
      const r = await ovm(["--store", store, ...args]);
      assert.equal(r.code, 2, `${store} ${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, why);
      assert.doesNotMatch(r.stderr, /ENOTDIR|EEXIST/);
    }
  }
  assert.deepEqual(await readdir(busy), ["notes.txt"]);
});

test("--disk FILE:FORMAT names an unknown format; validate names a missing file", async (t) => {
  const dir = await tempDir(t);
  const a = demoAssets();
  const r = await ovm([
    "--store",
    join(dir, "s"),
    "build",
    "-t",
    "x/y:1",
    "--kernel",
    a.kernel,
    "--disk",
    `${a.base}:vmdk`,
  ]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--disk .*base\.qcow2:vmdk: unknown disk format "vmdk" \(qcow2 or raw\)/);
  const v = await ovm(["validate", "/nope.json"]);
  assert.equal(v.code, 1);
  assert.equal(v.stdout.trim(), "/nope.json: no such file");
  const j = await ovm(["--json", "validate", "/nope.json"]);
  assert.deepEqual(JSON.parse(j.stdout).files[0].problems, [{ path: "", message: "no such file" }]);
});

test("flags beside a build file replace what it says (docs/build-file.md)", async (t) => {
  const dir = await tempDir(t);
  const a = demoAssets();
  const file = join(dir, "ovm.yaml");
  await writeFile(
    file,
    [
      "name: x/y",
      'version: "1"',
      `kernel: { path: ${a.kernel}, args: console=ttyS0 }`,
      "devices: [{ type: ivshmem, name: shm0, size: 1M }]",
      "network: { required: true, exposedPorts: ['80/tcp'] }",
      "resources: { memory: 256M, vcpus: 1 }",
    ].join("\n"),
  );
  const store = join(dir, "s");
  const out = await ovmJson([
    "--store",
    store,
    "build",
    "-f",
    file,
    "-t",
    "x/y:2",
    "--memory",
    "512M",
    "--cpus",
    "2",
    "--device",
    "type=ivshmem,name=jobs,size=64K",
    "--expose",
    "53/udp",
    "--cmdline",
    "console=ttyS0 quiet",
  ]);
  const m = out.manifest;
  assert.deepEqual(m.resources, { memory: 512 << 20, vcpus: 2 });
  assert.deepEqual(m.devices, [{ type: "ivshmem", name: "jobs", size: 64 << 10 }]);
  assert.deepEqual(m.network, { required: true, exposedPorts: ["53/udp"] });
  assert.equal(m.kernel.args, "console=ttyS0 quiet");
  const mem = await ovmJson(["--store", store, "build", "-f", file, "-t", "x/y:3", "--memory", "384M"]);
  assert.deepEqual(
    mem.manifest.resources,
    { memory: 384 << 20, vcpus: 1 },
    "--memory keeps the file's vcpus",
  );
});

/** keysOf lists every member name of a JSON document, leaving out embedded documents (`skip`). */
function keysOf(v: unknown, skip: string[] = []): string[] {
  if (Array.isArray(v)) return v.flatMap((x) => keysOf(x, skip));
  if (v === null || typeof v !== "object") return [];
  return Object.entries(v).flatMap(([k, x]) => (skip.includes(k) ? [k] : [k, ...keysOf(x, skip)]));
}

test("--json documents about artifacts and the store use camelCase names (rfc §7)", async (t) => {
  const dir = await tempDir(t);
  const a = demoAssets();
  const env = { OVM_STORE: join(dir, "s") };
  const docs = [
    await ovmJson(["build", "-t", "x/y:1", "--kernel", a.kernel, "--initrd", a.initrd], env),
    await ovmJson(["ls"], env),
    await ovmJson(["inspect", "x/y:1"], env),
    await ovmJson(["tag", "x/y:1", "x/y:2"], env),
    await ovmJson(["rmi", "x/y:2"], env),
    await ovmJson(["gc"], env),
    await ovmJson(["system", "df"], env),
  ];
  for (const doc of docs)
    for (const k of keysOf(doc, ["manifest", "oci"]))
      assert.match(k, /^[a-z][a-zA-Z0-9]*$/, `${k} in ${JSON.stringify(doc).slice(0, 200)}`);
});

test("a reader that stops early (ovm … --help | head -1) ends ovm quietly, exit 0, no EPIPE crash", async () => {
  // `head -1` exits after one line; a long help is still being written into the closed pipe.
  const r = spawnSync(
    "bash",
    [
      "-c",
      `set -o pipefail; for i in 1 2 3 4 5; do "${process.execPath}" "${OVM}" convert --help | head -1 >/dev/null || exit $?; done`,
    ],
    {
      encoding: "utf8",
    },
  );
  assert.equal(r.stderr, "");
  assert.equal(r.status, 0);
});
