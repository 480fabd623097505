import { setTimeout as sleep } from "node:timers/promises";
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OVM } from "../helpers.js";
import { ContractChecker } from "../daemon/openapi-check.js";
import { buildDemoCli, startDaemon, waitFor, type DaemonProc } from "../daemon/harness.js";

// A foreground `ovm run` never leaves its VM running when it ends (issue 14, item 1): whatever
// ends the client — SIGTERM, SIGHUP, Ctrl-C before the start was answered, SIGKILL — the
// instance ends too. One real ovmd for the file; the guests are the demo VM on TCG.
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-run-fg-"));
  d = await startDaemon(join(dir, "d"), checker);
  await buildDemoCli(d.env);
});

after(async () => {
  for (const i of (await d.api.get("/instances?all=1")).body.instances ?? [])
    await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`);
  await d?.stop();
  await rm(dir, { recursive: true, force: true });
});

const RUN = ["--accel", "tcg", "--memory", "128M", "demo/vm:1.0"];

/** Client is one `ovm run` process with what it printed so far. */
interface Client {
  proc: ChildProcess;
  stderr(): string;
  exit: Promise<number | string | null>;
}

function runClient(argv: string[], name: string): Client {
  const proc = spawn(argv[0], [...argv.slice(1), "run", "--name", name, ...RUN], {
    env: { ...process.env, ...d.env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  proc.stderr!.on("data", (c: Buffer) => (err += c.toString()));
  const exit = new Promise<number | string | null>((r) => proc.once("exit", (code, sig) => r(code ?? sig)));
  return { proc, stderr: () => err, exit };
}

/** instance is the daemon's view of an instance by name (undefined while there is none). */
async function instance(name: string): Promise<{ state: string; reason?: string } | undefined> {
  const r = await d.api.get(`/status/${name}`);
  return r.status === 200 ? r.body : undefined;
}

/** ended waits until the named instance is exited or failed; with `mayNotExist`, none at all is fine too. */
async function ended(name: string, mayNotExist = false): Promise<string> {
  return waitFor(
    `instance ${name} to end`,
    async () => {
      const i = await instance(name);
      if (!i) return mayNotExist ? "never started" : undefined;
      return i.state === "exited" || i.state === "failed" ? i.state : undefined;
    },
    90_000,
  );
}

test("timeout -s TERM ovm run: the command exits 124 and its instance is stopped", async () => {
  const c = runClient(["timeout", "-s", "TERM", "8", process.execPath, OVM], "fg-term");
  assert.equal(await c.exit, 124, c.stderr());
  assert.ok(await instance("fg-term"), `the run got as far as starting the instance: ${c.stderr()}`);
  assert.match(await ended("fg-term"), /exited|failed/);
  assert.match(d.output(), /its attached client went away/);
});

test("SIGHUP (the terminal closed): exit 129, and the instance is stopped", async () => {
  const c = runClient([process.execPath, OVM], "fg-hup");
  await waitFor("the instance to start", async () => (/is starting/.test(c.stderr()) ? true : undefined));
  c.proc.kill("SIGHUP");
  assert.equal(await c.exit, 129, c.stderr());
  await ended("fg-hup");
});

test("SIGKILL of the client: the daemon notices its attached client is gone and stops the instance", async () => {
  const c = runClient([process.execPath, OVM], "fg-kill");
  await waitFor("the instance to start", async () => (/is starting/.test(c.stderr()) ? true : undefined));
  assert.equal((await instance("fg-kill"))?.state !== "exited", true);
  c.proc.kill("SIGKILL");
  assert.equal(await c.exit, "SIGKILL");
  await ended("fg-kill");
});

test("Ctrl-C while the daemon is still starting the instance (before 'is starting'): nothing is left running", async () => {
  // The moment the daemon has created the instance, its POST /start may still be unanswered:
  // a cold start takes ~0.4 s, and the interrupt must land inside it. Whether it does is a
  // race, so up to 5 tries, each of which must leave nothing running; one must land early.
  let early = 0;
  for (let i = 0; i < 5 && !early; i++) {
    const name = `fg-int-early-${i}`;
    const c = runClient([process.execPath, OVM], name);
    for (let n = 0; !(await instance(name)); n++) {
      if (n > 6000) throw new Error(`the daemon never created ${name}`);
      await sleep(10);
    }
    c.proc.kill("SIGINT");
    const code = await c.exit;
    assert.ok(code === 130 || code === 0 || code === "SIGINT", `${name}: exit ${code}`);
    if (!/is starting/.test(c.stderr())) early++;
    await ended(name);
  }
  assert.equal(early, 1, "one interrupt landed before the daemon's answer");
  // And at moments picked blind, from right after the process starts to well into the start.
  const blind = [100, 300, 600, 1000].map((ms) => {
    const c = runClient([process.execPath, OVM], `fg-int-${ms}`);
    setTimeout(() => c.proc.kill("SIGINT"), ms);
    return c;
  });
  const codes = await Promise.all(blind.map((c) => c.exit));
  for (const code of codes) assert.ok(code === 130 || code === 0 || code === "SIGINT", `exit ${code}`);
  for (const ms of [100, 300, 600, 1000]) await ended(`fg-int-${ms}`, true);
});

test("an attached start whose client never follows is stopped after the grace period; one not attached is not", async () => {
  const r = await d.api.post("/start", {
    manifest: "demo/vm:1.0",
    attach: true,
    overrides: { name: "fg-grace", accel: "tcg", memory: 128 << 20 },
  });
  assert.equal(r.status, 202);
  const free = await d.api.post("/start", {
    manifest: "demo/vm:1.0",
    overrides: { name: "fg-free", accel: "tcg", memory: 128 << 20 },
  });
  assert.equal(free.status, 202);
  await ended("fg-grace");
  assert.match(d.output(), /no client attached within 30 s of the start/);
  const f = await instance("fg-free");
  assert.ok(f && f.state !== "exited" && f.state !== "failed", `fg-free is ${f?.state}`);
  await d.api.post("/stop", { instance_id: "fg-free", force: true });
});

test("GET /logs?attach=1 without follow=1 is a 400 naming the parameter", async () => {
  const r = await d.api.get("/logs/fg-free?attach=1");
  assert.equal(r.status, 400);
  assert.deepEqual(
    r.body.error.details.problems.map((p: { path: string }) => p.path),
    ["/query/attach"],
  );
});
