import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ovm } from "../helpers.js";
import { freePort, startRegistry } from "../registry-server.js";
import { ContractChecker } from "../daemon/openapi-check.js";
import { startDaemon, type DaemonProc } from "../daemon/harness.js";
import { LyingRuntimeProxy } from "./lying-runtime-proxy.js";

// `ovm conformance runtime` against one real ovmd (real QEMU, the demo guest): every level
// ovmd claims passes; then through a proxy that lies — wrong status codes, a missing field, a
// state that skips a move, snapshots that reboot instead of restoring — each lie is reported
// with its RFC section, and nothing else is. One daemon for both runs; each run boots two
// guests and restores two clones.

const TOKEN = "conformance-token";
let dir: string;
let d: DaemonProc;
let tcp: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-conformance-runtime-"));
  tcp = `127.0.0.1:${await freePort()}`;
  d = await startDaemon(join(dir, "d"), new ContractChecker(), ["--listen", tcp, "--token", TOKEN]);
});

after(async () => {
  await d?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** run runs the runtime suite through the CLI with --json and returns its exit status and report. */
async function run(args: string[]) {
  const r = await ovm(["--json", "conformance", "runtime", ...args], d.env);
  let report: any;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    assert.fail(`no JSON report (exit ${r.code}): ${r.stderr}`);
  }
  const failed = report.results.filter((x: { status: string }) => x.status === "fail");
  return {
    code: r.code,
    report,
    failed: failed.map((x: { id: string; section: string }) => `${x.id} ${x.section}`) as string[],
    all: failed,
  };
}

test("ovmd passes Runtime-Basic, Runtime-Snapshot and Runtime-Secure (as root: each QEMU in namespaces of its own)", async () => {
  const junit = join(dir, "runtime.xml");
  const { code, report, failed, all } = await run([
    "--socket",
    d.socket,
    "--url",
    `http://${tcp}`,
    "--token",
    TOKEN,
    "--level",
    "all",
    "--runtime-store",
    d.store,
    "--junit",
    junit,
  ]);
  const summary = Object.fromEntries(
    report.summary.map((s: { level: string; ok: boolean }) => [s.level, s.ok]),
  );
  assert.equal(summary["runtime-basic"], true, JSON.stringify(all, null, 1));
  assert.equal(summary["runtime-snapshot"], true, JSON.stringify(all, null, 1));
  assert.equal(summary["runtime-secure"], true, JSON.stringify(all, null, 1));
  assert.deepEqual(failed, [], JSON.stringify(all, null, 1));
  assert.equal(code, 0);
  const by = Object.fromEntries(report.results.map((r: { id: string }) => [r.id, r]));
  for (const id of [
    "runtime.restore.continues",
    "runtime.stop.escalation",
    "runtime.lifecycle.stopping",
    "runtime.inject.reaches-guest",
    "runtime.snapshot.artifact",
    "runtime.secure.tcp-token",
    "runtime.secure.seccomp",
    ...(process.getuid?.() === 0 ? ["runtime.secure.vmm-namespaces"] : []),
    "runtime.api.openapi",
  ])
    assert.equal(by[id].status, "pass", `${id}: ${by[id].message}`);
  assert.equal(by["runtime.recovery"].status, "manual");
  const xml = await readFile(junit, "utf8");
  assert.equal((xml.match(/<testcase /g) ?? []).length, report.results.length);
  assert.match(xml, /<testsuites [^>]*failures="0"/);
});

test("a runtime that lies is caught: each lie fails its check with its RFC section, and nothing else fails", async () => {
  await mkdir(join(dir, "liar"), { mode: 0o700 });
  const proxy = await new LyingRuntimeProxy(d.socket, join(dir, "liar", "ovmd.sock"), {
    conflictAs400: true,
    dropCreatedAt: true,
    stoppingAsExited: true,
    rebootSnapshots: true,
  }).start();
  try {
    const { code, failed, all } = await run(["--socket", proxy.socketPath, "--level", "snapshot"]);
    assert.equal(code, 1);
    for (const [lie, n] of Object.entries(proxy.told)) assert.ok(n > 0, `the proxy told the lie ${lie}`);
    assert.deepEqual(
      failed.sort(),
      [
        // 409 answered as 400: the error model, judged on every answer of the run.
        "runtime.errors.http-status §6.2",
        // InstanceInfo without created_at: the OpenAPI document, judged on every answer.
        "runtime.api.openapi §6, OpenAPI",
        // `stopping` reported as `exited` while the VMM still runs out its grace.
        "runtime.lifecycle.stopping §6.5",
        // The snapshot cold-boots: the guest counts from 0.
        "runtime.restore.continues §5.7",
      ].sort(),
      JSON.stringify(all, null, 1),
    );
    const msg = (id: string) => all.find((x: { id: string }) => x.id === id).message as string;
    assert.match(msg("runtime.errors.http-status"), /400 with CONFLICT \(want 409\)/);
    assert.match(msg("runtime.api.openapi"), /created_at/);
    assert.match(msg("runtime.restore.continues"), /OVMS-READY: it was booted, not restored/);
  } finally {
    await proxy.close();
  }
});

test("over TCP the suite pushes its artifacts to a registry and starts them by reference (Runtime-Basic)", async () => {
  const usage = await ovm(["conformance", "runtime", "--url", `http://${tcp}`, "--token", TOKEN], d.env);
  assert.equal(usage.code, 2, "over TCP without --registry: a usage error");
  assert.match(usage.stderr, /--registry/);
  const registry = await startRegistry();
  try {
    const repo = `${registry.host}/conformance/fixtures`;
    const { code, report, all } = await run(["--url", `http://${tcp}`, "--token", TOKEN, "--registry", repo]);
    assert.equal(code, 0, JSON.stringify(all, null, 1));
    assert.match(report.about.artifacts, new RegExp(`pushed to ${repo}, started by reference`));
    const by = Object.fromEntries(report.results.map((r: { id: string }) => [r.id, r]));
    assert.match(by["runtime.start.accepted"].message, new RegExp(`from ${repo}:ivshmem`));
    assert.equal(
      by["runtime.errors.artifact-not-found"].status,
      "pass",
      "a missing tag of the registry is ARTIFACT_NOT_FOUND",
    );
  } finally {
    await registry.stop();
  }
});
