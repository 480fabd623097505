import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ovm } from "../helpers.js";
import { daemonStateDir } from "../../src/store/paths.js";
import { buildDemoCli, waitFor } from "../daemon/harness.js";

// Instance commands as a docker user types them (issue 14, items 3, 5, 6, 7 and 11), against
// ovmd daemons that `ovm run` starts in the background. No OVMD_SOCKET here: each store's
// daemon is found by the store (one daemon per store, rfc §6.1).
let dir: string;
let envA: Record<string, string>;
let envB: Record<string, string>;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-cli-inst-"));
  await chmod(dir, 0o755); // as root, QEMU runs as nobody and must reach the stores' instance folders
  const run = join(dir, "run");
  await mkdir(run, { mode: 0o700 });
  envA = { OVM_STORE: join(dir, "a"), XDG_RUNTIME_DIR: run, OVMD_SOCKET: "" };
  envB = { OVM_STORE: join(dir, "b"), XDG_RUNTIME_DIR: run, OVMD_SOCKET: "" };
  await buildDemoCli(envA);
  await buildDemoCli(envB, "other/vm:1");
  for (const [name, extra] of [
    ["ms", []],
    ["web", ["--cmdline", "ovms.mode=ivshmem"]],
  ] as const) {
    const r = await ovm(
      ["run", "-d", "--name", name, "--accel", "tcg", "--memory", "128M", ...extra, "demo/vm:1.0"],
      envA,
    );
    assert.equal(r.code, 0, r.stderr);
  }
});

after(async () => {
  for (const env of [envA, envB]) {
    await ovm(["rm", "-f", ...(await ids(env))], env).catch(() => undefined);
    const pid = Number(
      (await readFile(join(daemonStateDir(env.OVM_STORE), "ovmd.pid"), "utf8").catch(() => "")).trim(),
    );
    if (pid) {
      process.kill(pid, "SIGTERM");
      await waitFor("ovmd to exit", async () => (alive(pid) ? undefined : true), 15_000).catch(() =>
        process.kill(pid, "SIGKILL"),
      );
    }
  }
  await rm(dir, { recursive: true, force: true });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function ids(env: Record<string, string>): Promise<string[]> {
  const r = await ovm(["ps", "-aq"], env);
  return r.stdout.split("\n").filter(Boolean);
}

test("ps -q prints short ids and ls -q references, one per line", async () => {
  const q = await ovm(["ps", "-aq"], envA);
  assert.equal(q.code, 0, q.stderr);
  const lines = q.stdout.trim().split("\n");
  assert.equal(lines.length, 2);
  for (const l of lines) assert.match(l, /^[0-9a-f]{12}$/);
  const names = await Promise.all(
    lines.map(async (id) => JSON.parse((await ovm(["--json", "status", id], envA)).stdout).name),
  );
  assert.deepEqual(names.sort(), ["ms", "web"]);
  assert.equal((await ovm(["ls", "-q"], envA)).stdout, "demo/vm:1.0\n");
  assert.equal((await ovm(["-q", "ls"], envA)).stdout, "demo/vm:1.0\n");
});

test("inject --device nodev and run --name 'a b' are refused in the words of the flag", async () => {
  await waitFor("web to run", async () =>
    (await ovm(["logs", "web"], envA)).stdout.includes("OVMS-IVSHMEM: ready") ? true : undefined,
  );
  const bad = await ovm(["inject", "web", "--file", "/etc/hostname", "--device", "nodev"], envA);
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr.trim(), "ovm: --device nodev: instance web has no such device (it has: shm0)");
  const name = await ovm(["run", "-d", "--name", "a b", "demo/vm:1.0"], envA);
  assert.equal(name.code, 2);
  assert.match(name.stderr, /^ovm: --name 'a b': names are letters, digits, '\.', '_' and '-'/);
  assert.doesNotMatch(name.stderr, /POST|pattern|\/overrides/);
});

test("stop nosuch ms: every argument is handled, each failure reported, exit 1", async () => {
  const r = await ovm(["stop", "--force", "nosuch", "ms"], envA);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim(), "ovm: stop nosuch: no such instance");
  assert.equal(r.stdout.trim(), "ms");
  assert.equal(JSON.parse((await ovm(["--json", "status", "ms"], envA)).stdout).state, "exited");
});

test("stop --json reports the instance id (not the name) and the failures", async () => {
  const web = JSON.parse((await ovm(["--json", "status", "web"], envA)).stdout).instance_id;
  const r = await ovm(["--json", "stop", "--force", "web", "nosuch"], envA);
  assert.equal(r.code, 1);
  const doc = JSON.parse(r.stdout);
  assert.deepEqual(doc.stopped, [{ instance_id: web, name: "web", status: "exited" }]);
  assert.deepEqual(
    doc.errors.map((e: { target: string; code: string }) => [e.target, e.code]),
    [["nosuch", "NOT_FOUND"]],
  );
});

test("rm removes instances only, rmi artifacts only, each in its own words", async () => {
  await ovm(["tag", "demo/vm:1.0", "web"], envA);
  const rm1 = await ovm(["rm", "web"], envA);
  assert.equal(rm1.code, 0, rm1.stderr);
  const rm2 = await ovm(["rm", "web"], envA);
  assert.equal(rm2.code, 1, "a second rm does not untag the artifact named web");
  assert.match(rm2.stderr, /rm web: no such instance; an artifact is named web: `ovm rmi web` removes it/);
  assert.equal((await ovm(["inspect", "web"], envA)).code, 0);
  const rm3 = await ovm(["rm", "nosuch"], envA);
  assert.equal(rm3.stderr.trim(), "ovm: rm nosuch: no such instance");
  await ovm(["tag", "demo/vm:1.0", "demo/vm:keep"], envA);
  const rmi = await ovm(["rmi", "nosuch:1", "demo/vm:keep", "web"], envA);
  assert.equal(rmi.code, 1);
  assert.match(rmi.stderr, /^ovm: rmi nosuch:1: no such artifact in the store /);
  assert.match(rmi.stdout, /Untagged: demo\/vm:keep .*\nUntagged: web /);
  assert.equal((await ovm(["inspect", "demo/vm:keep"], envA)).code, 1, "the second argument was handled");
});

test("ovm rm -f $(ovm ps -aq) removes every instance", async () => {
  const all = await ids(envA);
  assert.equal(all.length, 1, "ms is left");
  const r = await ovm(["rm", "-f", ...all], envA);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await ids(envA), []);
});

test("OVM_STORE=/other ovm run -d: the other store's own daemon runs it, never the running one's", async () => {
  const a = JSON.parse((await ovm(["--json", "ps"], envA)).stdout);
  assert.deepEqual(a, [], "store a's daemon answers");
  const r = await ovm(
    ["run", "-d", "--name", "other", "--accel", "tcg", "--memory", "128M", "other/vm:1"],
    envB,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /started ovmd \(pid \d+\) on .*\/ovms\/ovmd-[0-9a-f]{16}\.sock/);
  assert.deepEqual(
    JSON.parse((await ovm(["--json", "ps", "-a"], envB)).stdout).map((i: { name: string }) => i.name),
    ["other"],
  );
  assert.deepEqual(
    JSON.parse((await ovm(["--json", "ps", "-a"], envA)).stdout),
    [],
    "nothing in store a's daemon",
  );
});

test("a daemon named by --socket or OVMD_SOCKET that serves another store is refused, naming both", async () => {
  // Store a's daemon socket, as the daemon itself reports it in its log.
  const log = await readFile(join(daemonStateDir(envA.OVM_STORE), "ovmd.log"), "utf8");
  const sock = / listening socket=(\S+)/.exec(log)?.[1];
  assert.ok(sock, log);
  for (const [args, env, named] of [
    [["run", "-d", "other/vm:1"], { ...envB, OVMD_SOCKET: sock }, "\\$OVMD_SOCKET"],
    [["ps", "--socket", sock], envB, "--socket"],
  ] as const) {
    const r = await ovm([...args], env);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `serves the store ${envA.OVM_STORE}, but this command uses the store ${envB.OVM_STORE} \\(\\$OVM_STORE\\)`,
      ),
    );
    assert.match(r.stderr, new RegExp(`leave out ${named} to reach the daemon of ${envB.OVM_STORE}`));
  }
});
