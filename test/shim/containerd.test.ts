import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { ovm } from "../helpers.js";
import { ContractChecker } from "../daemon/openapi-check.js";
import { startDaemon, type DaemonProc } from "../daemon/harness.js";
import { shimProcesses, startContainerd, writeImageTar, type Containerd } from "./containerd-harness.js";

// The shim under the real containerd 1.6 (Debian) on a private root, state folder and socket,
// with a real ovmd booting real QEMU guests: `ctr run` of an image built and imported here
// runs as a VM (args, env, cwd and the image's user through config.json), prints the program's output and returns its exit status; a detached task is
// listed, killed and deleted; nothing is left running. Each test boots one guest (TCG: slow
// on a loaded machine, hence the generous deadlines).
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;
let c: Containerd;
const IMAGE = "ovms.test/app:1.0";
const RUN = ["run", "--runtime", "io.containerd.ovms.v2", "--snapshotter", "native"];

before(async () => {
  // Short: the shim's socket path lives beside containerd's, and a UNIX socket path is short.
  dir = await mkdtemp("/tmp/ovms-shim-");
  d = await startDaemon(join(dir, "d"), checker);
  c = await startContainerd(join(dir, "c"), { OVMD_SOCKET: d.socket });
  const tar = await writeImageTar(dir, {
    Env: ["PATH=/bin", "GREETING=from the image"],
    Cmd: ["sh"],
    User: "1000:1000",
  });
  const imp = await c.ctr([
    "image",
    "import",
    "--base-name",
    "ovms.test/app",
    "--snapshotter",
    "native",
    tar,
  ]);
  assert.equal(imp.code, 0, imp.stderr);
});

after(async () => {
  for (const i of (await d?.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? [])
    await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
  await c?.stop();
  await d?.stop();
  await rm(dir, { recursive: true, force: true });
});

test("ctr run --runtime io.containerd.ovms.v2 prints the program's output and returns its exit status; TaskExit is published", async () => {
  const events = spawn("ctr", ["--address", c.address, "events"], { stdio: ["ignore", "pipe", "ignore"] });
  let seen = "";
  events.stdout.on("data", (b: Buffer) => (seen += b.toString()));
  try {
    const r = await c.ctr([
      ...RUN,
      "--rm",
      "--env",
      "EXTRA=from ctr",
      "--cwd",
      "/tmp",
      IMAGE,
      "t-run",
      "sh",
      "-c",
      'echo "greeting=$GREETING extra=$EXTRA"; echo "user=$(id -u):$(id -g) cwd=$(pwd)"; exit 7',
    ]);
    assert.equal(r.code, 7, `the program's exit status: ${r.stderr}\n${c.output().slice(-3000)}`);
    assert.deepEqual(r.stdout.trimEnd().split("\n"), [
      "greeting=from the image extra=from ctr",
      "user=1000:1000 cwd=/tmp",
    ]);
    const deadline = Date.now() + 30_000;
    while (!/\/tasks\/delete/.test(seen) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    assert.match(seen, /\/tasks\/create .*"container_id":"t-run"/);
    assert.match(seen, /\/tasks\/start .*"container_id":"t-run"/);
    assert.match(seen, /\/tasks\/exit .*"container_id":"t-run".*"exit_status":7/);
    assert.match(seen, /\/tasks\/delete .*"container_id":"t-run"/);
  } finally {
    events.kill();
  }
  assert.deepEqual(
    (await d.api.get("/instances?all=1")).body.instances,
    [],
    "the VM was removed with the task",
  );
});

test("stdout and stderr are separate streams: ctr run hands the program's fd 1 and fd 2 to its own stdout and stderr", async () => {
  const r = await c.ctr([
    ...RUN,
    "--rm",
    IMAGE,
    "t-err",
    "sh",
    "-c",
    "echo out-1; echo err-1 >&2; echo out-2; ls /no-such-file; echo err-2 >&2; exit 3",
  ]);
  assert.equal(r.code, 3, `${r.stderr}\n${c.output().slice(-2000)}`);
  assert.deepEqual(r.stdout.trimEnd().split("\n"), ["out-1", "out-2"], "stdout holds fd 1 alone");
  assert.deepEqual(
    r.stderr.trimEnd().split("\n"),
    ["err-1", "ls: /no-such-file: No such file or directory", "err-2"],
    "stderr holds fd 2 alone, in order",
  );
  assert.deepEqual((await d.api.get("/instances?all=1")).body.instances, []);
});

test("stdin: ctr run feeds its own stdin to the program through the FIFO containerd gives, then end-of-file", async () => {
  const r = await c.ctr(
    [
      ...RUN,
      "--rm",
      IMAGE,
      "t-in",
      "sh",
      "-c",
      'while read -r l; do echo "got:$l"; done; echo eof; head -c 3 /dev/stdin | wc -c; exit 4',
    ],
    { input: "one\ntwo words\n" + "x".repeat(5000) + "\n" },
  );
  assert.equal(r.code, 4, `${r.stderr}\n${c.output().slice(-2000)}`);
  assert.deepEqual(
    r.stdout.trimEnd().split("\n"),
    ["got:one", "got:two words", `got:${"x".repeat(5000)}`, "eof", "0"],
    "every line, a long one across several control lines, then end-of-file for good",
  );
});

test("ctr task ls/kill/delete: a detached task runs as a VM, SIGTERM reaches the program, delete leaves nothing running", async () => {
  const r = await c.ctr([...RUN, "-d", IMAGE, "t-bg", "sh", "-c", "echo started; exec sleep 1000"]);
  assert.equal(r.code, 0, r.stderr);
  const ls = await c.ctr(["task", "ls"]);
  const row = ls.stdout.split("\n").find((l) => l.startsWith("t-bg"));
  assert.match(row ?? "", /^t-bg\s+(\d+)\s+RUNNING/, ls.stdout);
  const pid = Number(/^t-bg\s+(\d+)/.exec(row!)![1]);
  const insts = (await d.api.get("/instances")).body.instances;
  assert.equal(insts.length, 1);
  assert.equal(insts[0].pid, pid, "the task's pid is the VMM's");
  const del = await c.ctr(["task", "delete", "t-bg"]);
  assert.notEqual(del.code, 0, "a running task is not deleted");
  // Wait for the guest's program to be up before the signal (its output is on the console).
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    const logs = await d.api.get(`/logs/${insts[0].instance_id}`).catch(() => undefined);
    if (JSON.stringify(logs?.body ?? "").includes("started")) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const kill = await c.ctr(["task", "kill", "t-bg"]);
  assert.equal(kill.code, 0, kill.stderr);
  let status = "";
  while (Date.now() < deadline) {
    status = (await c.ctr(["task", "ls"])).stdout;
    if (/^t-bg\s+\d+\s+STOPPED/m.test(status)) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.match(status, /^t-bg\s+\d+\s+STOPPED/m);
  const gone = await c.ctr(["task", "delete", "t-bg"]);
  assert.equal(gone.code, 0, gone.stderr);
  assert.match(gone.stderr, /exit with non-zero exit code 143/, "SIGTERM ended the program: 128 + 15");
  assert.equal((await c.ctr(["container", "rm", "t-bg"])).code, 0);
  assert.doesNotMatch((await c.ctr(["task", "ls"])).stdout, /t-bg/);
  assert.deepEqual((await d.api.get("/instances?all=1")).body.instances, []);
  const left = Date.now() + 10_000;
  while ((await shimProcesses(c.address)).length && Date.now() < left)
    await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(await shimProcesses(c.address), [], "no shim process is left");
  const sockets = await readdir(join(c.dir, "s")).catch(() => []);
  assert.deepEqual(sockets, [], "no shim socket is left");
});

/** logText is an instance's console so far, one string. */
async function logText(id: string): Promise<string> {
  const r = await d.api.get(`/logs/${id}`).catch(() => undefined);
  return ((r?.body as { line: string }[] | undefined) ?? []).map((l) => l.line).join("\n");
}

test("signals reach the program in the guest: a trapped SIGTERM (ovm kill -s TERM) leaves it running, ctr task kill -s SIGUSR1 ends it with its own status", async () => {
  const program = [
    'trap "echo got-term" TERM',
    'trap "echo got-usr1; exit 42" USR1',
    "echo ready",
    "while :; do sleep 1; done",
  ].join("; ");
  const r = await c.ctr([...RUN, "-d", IMAGE, "t-sig", "sh", "-c", program]);
  assert.equal(r.code, 0, r.stderr);
  const [inst] = (await d.api.get("/instances")).body.instances;
  const deadline = Date.now() + 300_000;
  const until = async (text: string) => {
    while (!(await logText(inst.instance_id)).includes(text) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 300));
    assert.ok((await logText(inst.instance_id)).includes(text), `${text} in the console`);
  };
  await until("ready");
  const term = await ovm(["--json", "kill", "-s", "TERM", inst.instance_id], d.env);
  assert.equal(term.code, 0, term.stderr);
  assert.deepEqual(
    JSON.parse(term.stdout).killed.map((k: { status: string; signal: number }) => [k.status, k.signal]),
    [["signalled", 15]],
  );
  await until("got-term");
  assert.match(
    (await c.ctr(["task", "ls"])).stdout,
    /^t-sig\s+\d+\s+RUNNING/m,
    "the program trapped SIGTERM",
  );
  const kill = await c.ctr(["task", "kill", "-s", "SIGUSR1", "t-sig"]);
  assert.equal(kill.code, 0, kill.stderr);
  let ls = "";
  while (Date.now() < deadline) {
    ls = (await c.ctr(["task", "ls"])).stdout;
    if (/^t-sig\s+\d+\s+STOPPED/m.test(ls)) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.match(ls, /^t-sig\s+\d+\s+STOPPED/m);
  assert.match(await logText(inst.instance_id), /got-usr1/);
  const late = await d.api.post("/kill", { instance_id: inst.instance_id, signal: 10 });
  assert.equal(late.status, 409, "an ended instance takes no signal");
  assert.equal(late.body.error.code, "CONFLICT");
  const del = await c.ctr(["task", "delete", "t-sig"]);
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stderr, /exit with non-zero exit code 42/, "the status the program chose in its trap");
  assert.equal((await c.ctr(["container", "rm", "t-sig"])).code, 0);
  assert.deepEqual((await d.api.get("/instances?all=1")).body.instances, []);
});

test("the ovms.artifact annotation: a container starts from a RAM-snapshot artifact and its program goes on from the snapshot", async () => {
  const conv = await ovm(["convert", `oci:${join(dir, "image-layout")}:1.0`, "-t", "snapme/app:1"], d.env);
  assert.equal(conv.code, 0, conv.stderr);
  const program = "echo before-snapshot; sleep 8; echo after-restore; exit 5";
  const s = await d.api.post("/start", {
    manifest: "snapme/app:1",
    overrides: { args: ["sh", "-c", program] },
  });
  assert.equal(s.status, 202, JSON.stringify(s.body));
  const id = s.body.instance_id;
  const deadline = Date.now() + 300_000;
  while (!(await logText(id)).includes("before-snapshot") && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 200));
  const snap = await d.api.post("/snapshot", { instance_id: id, tag: "snapme/app:snap", stop: true });
  assert.equal(snap.status, 200, JSON.stringify(snap.body));
  await d.api.request("DELETE", `/instances/${id}?force=1`);

  const r = await c.ctr([...RUN, "--rm", "--annotation", "ovms.artifact=snapme/app:snap", IMAGE, "t-snap"]);
  assert.equal(r.code, 5, `the restored program's exit status: ${r.stderr}\n${c.output().slice(-2000)}`);
  assert.equal(r.stdout.trim(), "after-restore", "the program went on after the snapshot; nothing ran twice");
  assert.deepEqual((await d.api.get("/instances?all=1")).body.instances, []);
});

test("a shim killed under a running task: containerd's cleanup (containerd-shim-ovms-v2 delete) removes its VM, none is orphaned", async () => {
  const r = await c.ctr([...RUN, "-d", IMAGE, "t-orphan", "sh", "-c", "exec sleep 1000"]);
  assert.equal(r.code, 0, r.stderr);
  const insts = (await d.api.get("/instances")).body.instances;
  assert.equal(insts.length, 1, "the task's VM runs");
  const shim = (await shimProcesses(c.address)).find((l) => l.includes("-id t-orphan"));
  assert.ok(shim, "the task's shim process");
  process.kill(Number(shim.trim().split(/\s+/)[0]), "SIGKILL");
  const deadline = Date.now() + 120_000;
  let left = insts;
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    left = (await d.api.get("/instances?all=1")).body.instances;
  }
  assert.deepEqual(left, [], "the VM of the dead shim's task was removed");
  assert.doesNotMatch((await c.ctr(["task", "ls"])).stdout, /^t-orphan\s+\d+\s+RUNNING/m);
  await c.ctr(["task", "delete", "t-orphan"]);
  assert.equal((await c.ctr(["container", "rm", "t-orphan"])).code, 0);
  assert.deepEqual(await shimProcesses(c.address), []);
});

test("ovmd restarted under a running task: the shim waits for the new daemon and reports the task's real state and exit status", async () => {
  const r = await c.ctr([...RUN, "-d", IMAGE, "t-restart", "sh", "-c", "echo up; exec sleep 1000"]);
  assert.equal(r.code, 0, r.stderr);
  const [inst] = (await d.api.get("/instances")).body.instances;
  const deadline = Date.now() + 300_000;
  while (!(await logText(inst.instance_id)).includes("up") && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 300));
  await d.stop();
  d = await startDaemon(join(dir, "d"), checker);
  const again = (await d.api.get("/instances")).body.instances;
  assert.deepEqual(
    again.map((i: { instance_id: string; state: string }) => [i.instance_id, i.state]),
    [[inst.instance_id, "running"]],
    "the new ovmd re-attached the VM",
  );
  assert.match((await c.ctr(["task", "ls"])).stdout, /^t-restart\s+\d+\s+RUNNING/m);
  assert.equal((await c.ctr(["task", "kill", "t-restart"])).code, 0);
  let ls = "";
  while (Date.now() < deadline) {
    ls = (await c.ctr(["task", "ls"])).stdout;
    if (/^t-restart\s+\d+\s+STOPPED/m.test(ls)) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.match(ls, /^t-restart\s+\d+\s+STOPPED/m, "the stop through the new daemon ended the task");
  const del = await c.ctr(["task", "delete", "t-restart"]);
  assert.equal(del.code, 0, del.stderr);
  assert.match(
    del.stderr,
    /exit with non-zero exit code 143/,
    "the program's real exit status, read from the new daemon",
  );
  assert.equal((await c.ctr(["container", "rm", "t-restart"])).code, 0);
  assert.deepEqual((await d.api.get("/instances?all=1")).body.instances, []);
});

test("the overlayfs snapshotter: the shim mounts the layers (as runc's shim does), reads the rootfs, and unmounts it at delete", async () => {
  const imp = await c.ctr([
    "image",
    "import",
    "--base-name",
    "ovms.test/app",
    "--snapshotter",
    "overlayfs",
    join(dir, "image.tar"),
  ]);
  assert.equal(imp.code, 0, imp.stderr);
  const r = await c.ctr([
    "run",
    "--runtime",
    "io.containerd.ovms.v2",
    "--snapshotter",
    "overlayfs",
    "--rm",
    IMAGE,
    "t-overlay",
    "sh",
    "-c",
    "ls /bin/busybox; exit 2",
  ]);
  assert.equal(r.code, 2, `${r.stderr}\n${c.output().slice(-2000)}`);
  assert.equal(r.stdout.trim(), "/bin/busybox");
  const mounts = await readFile("/proc/self/mounts", "utf8");
  assert.doesNotMatch(
    mounts,
    new RegExp(c.dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")),
    "nothing left mounted",
  );
});
