import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Command } from "commander";
import { COMMANDS, commandName, program } from "../../src/cli/program.js";
import { OVM, demoAssets, ovm, tempDir } from "../helpers.js";
import { startDaemon } from "../daemon/harness.js";
import { ContractChecker } from "../daemon/openapi-check.js";

// The commands people type all day start fast because they load only what they use (issue 11):
// `ovm --version`, `ovm ls` and `ovm ps` must not load schema compilation (ajv), sigstore,
// undici, tar, lz4 or the runtime. No timing here: what each command loads is counted.

/** HEAVY names what a cheap command must not load: packages and folders of dist/src. */
const HEAVY =
  /\/node_modules\/(ajv|ajv-formats|@sigstore|undici|tar|lz4-napi|protobufjs|ws|yaml|cli-progress|tweetnacl)\/|\/dist\/src\/(registry|artifact|runtime|daemon|shim|conformance|signing)\/|\/dist\/web\//;

/**
 * loaded runs `ovm ARGS` with a module hook (`--import`) that writes down every module it
 * resolves (ES modules, off-thread) and every CommonJS module in the cache at exit, and
 * returns the exit status and those files.
 */
async function loaded(
  dir: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; files: string[] }> {
  const list = join(dir, `loaded-${args.join("_").replace(/\W/g, "")}.txt`);
  await writeFile(list, "");
  const hooks = join(dir, "hooks.mjs");
  await writeFile(
    hooks,
    `import { appendFileSync } from "node:fs";
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(${JSON.stringify(list)}, r.url + "\\n");
  return r;
}\n`,
  );
  const register = join(dir, "register.mjs");
  await writeFile(
    register,
    `import { register, createRequire } from "node:module";
import { appendFileSync } from "node:fs";
register(${JSON.stringify(pathToFileURL(hooks).href)});
const cache = createRequire(import.meta.url).cache;
process.on("exit", () => appendFileSync(${JSON.stringify(list)}, Object.keys(cache).join("\\n") + "\\n"));\n`,
  );
  const code = await new Promise<number>((resolve) =>
    execFile(
      process.execPath,
      ["--import", pathToFileURL(register).href, OVM, ...args],
      { env: { ...process.env, ...env } },
      (err) => resolve(err ? (typeof err.code === "number" ? err.code : 1) : 0),
    ),
  );
  const files = (await readFile(list, "utf8")).split("\n").filter((l) => l && !l.startsWith("node:"));
  return { code, files };
}

/** heavy is what of `files` a cheap command should not have loaded. */
const heavy = (files: string[]) => [...new Set(files.filter((f) => HEAVY.test(f)))];

test("ovm --version, ls and ps load neither ajv, sigstore, undici, tar, lz4 nor the runtime", async (t) => {
  const dir = await tempDir(t);
  const env = { OVM_STORE: join(dir, "store"), XDG_RUNTIME_DIR: join(dir, "norun"), OVMD_SOCKET: "" };
  const built = await ovm(["build", "-t", "x/y:1", "--kernel", demoAssets().kernel], env);
  assert.equal(built.code, 0, built.stderr);

  // The control: the whole help loads every command, so the hook sees the heavy modules.
  const help = await loaded(dir, ["--help"], env);
  assert.equal(help.code, 0);
  for (const m of ["/node_modules/ajv/", "/dist/src/registry/", "/dist/src/artifact/"])
    assert.ok(
      help.files.some((f) => f.includes(m)),
      `ovm --help loads ${m} (else the hook sees nothing)`,
    );
  // undici loads on a registry's first request only: a pull from a server that knows nothing.
  const server = createServer((_req, res) => res.writeHead(404).end());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const pull = await loaded(dir, ["pull", "--plain-http", `127.0.0.1:${port}/x/y:1`], env);
  assert.notEqual(pull.code, 0);
  assert.ok(
    pull.files.some((f) => f.includes("/node_modules/undici/")),
    "ovm pull loads undici (else the hook sees nothing)",
  );

  const version = await loaded(dir, ["--version"], env);
  assert.equal(version.code, 0);
  assert.deepEqual(heavy(version.files), []);
  assert.deepEqual(
    version.files.filter((f) => f.includes("/node_modules/")),
    [],
    "ovm --version alone prints the version without loading commander",
  );
  // Through commander (another flag with it), the same words and status.
  const viaCommander = await ovm(["--debug", "--version"], env);
  assert.deepEqual([viaCommander.code, viaCommander.stdout], [0, (await ovm(["--version"], env)).stdout]);
  assert.ok(
    !version.files.some((f) => f.includes("/dist/src/cli/commands/")),
    `ovm --version loads no command: ${version.files.filter((f) => f.includes("/commands/")).join(", ")}`,
  );

  const ls = await loaded(dir, ["ls"], env);
  assert.equal(ls.code, 0);
  assert.deepEqual(heavy(ls.files), []);
  assert.ok(ls.files.some((f) => f.endsWith("/dist/src/store/store.js")));

  // ps with nobody answering: its error path (DAEMON_UNAVAILABLE) stays light too.
  const psDown = await loaded(dir, ["ps"], env);
  assert.equal(psDown.code, 1);
  assert.deepEqual(heavy(psDown.files), []);

  const d = await startDaemon(join(dir, "d"), new ContractChecker(), [], join(dir, "store"));
  t.after(() => d.stop());
  const ps = await loaded(dir, ["ps"], d.env);
  assert.equal(ps.code, 0, d.output());
  assert.deepEqual(heavy(ps.files), []);
  assert.ok(ps.files.some((f) => f.endsWith("/dist/src/client/client.js")));
  assert.ok(
    !ps.files.some((f) => f.endsWith("/dist/src/store/store.js")),
    "ovm ps talks to the daemon; it does not open the store",
  );
});

test("COMMANDS names exactly the commands and aliases each command file adds, in help order", async () => {
  const seen: string[] = [];
  for (const c of COMMANDS) {
    const p = new Command("ovm");
    (await c.load()).register(p);
    const names = p.commands.flatMap((s) => [s.name(), ...s.aliases()]);
    assert.deepEqual(names, [...c.names]);
    seen.push(...names);
  }
  const full = await program();
  assert.deepEqual(
    full.commands.flatMap((s) => [s.name(), ...s.aliases()]),
    seen,
  );
  assert.equal(new Set(seen).size, seen.length, "no name in two files");
});

test("the command line picks one command file; --version none; help and typos all", async () => {
  const names = async (...args: string[]) =>
    (await program(["node", "ovm", ...args])).commands.map((c) => c.name());
  assert.equal(commandName(["--store", "ls", "ps", "-a"]), "ps");
  assert.equal(commandName(["--json", "-q", "images"]), "images");
  assert.equal(commandName(["--", "ls"]), undefined);
  assert.deepEqual(await names("--version"), []);
  assert.deepEqual(await names("--store=/x", "images", "-q"), ["ls", "inspect", "tag", "rmi", "gc"]);
  assert.deepEqual(await names("ps", "-a"), ["ps"]);
  const all = (await program()).commands.length;
  for (const line of [[], ["help", "ps"], ["pss"], ["--version", "--help"]])
    assert.equal((await names(...line)).length, all, line.join(" "));
});
