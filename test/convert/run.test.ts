import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exec, ovm } from "../helpers.js";
import { startRegistry, type RegistryServer } from "../registry-server.js";
import { ContractChecker } from "../daemon/openapi-check.js";
import { serialLine, startDaemon, waitFor, type DaemonProc } from "../daemon/harness.js";
import { baseLayer, topLayer, writeImageLayout } from "./image-fixture.js";
import { vmConfig } from "./vm-fixture.js";

// Converted images and vm configs on real QEMU, through a real ovmd (every answer checked
// against the OpenAPI document) and the real CLI: a busybox image built here, in two layers
// with a whiteout, pushed to a real registry with skopeo, converted from the registry and from
// its OCI layout, run like `docker run`. Each test boots one guest (TCG: seconds each).
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;
let registry: RegistryServer;
let layout: string;

const PROGRAM = [
  'echo "greeting=$GREETING extra=$EXTRA"',
  'if test -e /etc/removed; then echo "removed: present"; else echo "removed: absent"; fi',
  'echo "user=$(id -u):$(id -g) cwd=$(pwd) host=$(cat /proc/sys/kernel/hostname)"',
  "exit 3",
].join("; ");

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-convert-run-"));
  d = await startDaemon(join(dir, "a"), checker);
  layout = join(dir, "layout");
  await writeImageLayout(layout, "1.0", [baseLayer(), topLayer()], {
    Env: ["PATH=/bin", "GREETING=hello from the image"],
    Cmd: ["sh", "-c", PROGRAM],
    WorkingDir: "/home/app",
    User: "app",
    ExposedPorts: { "8080/tcp": {} },
  });
  registry = await startRegistry();
  await exec("skopeo", [
    "copy",
    "-q",
    "--dest-tls-verify=false",
    `oci:${layout}:1.0`,
    `docker://${registry.host}/fixture/app:1.0`,
  ]);
});

after(async () => {
  for (const i of (await d?.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? [])
    await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
  await d?.stop();
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

test("from the registry: ovm convert, then ovm run --rm prints the program's output and exits with its status", async () => {
  const c = await ovm(["--json", "convert", `${registry.host}/fixture/app:1.0`, "-t", "app/vm:1"], d.env);
  assert.equal(c.code, 0, c.stderr);
  const conv = JSON.parse(c.stdout);
  assert.equal(conv.containerMode, true);
  assert.deepEqual(conv.bootstrap.exposedPorts, ["8080/tcp"]);
  const insp = await ovm(["inspect", "app/vm:1"], d.env);
  assert.match(insp.stdout, /^Ports: +8080\/tcp$/m);
  assert.match(insp.stdout, /^Image: +127\.0\.0\.1:\d+\/fixture\/app:1\.0 sha256:/m);
  const r = await ovm(["run", "--rm", "--accel", "tcg", "-e", "EXTRA=from-run", "app/vm:1"], d.env);
  assert.equal(r.code, 3, `exit status of the program: ${r.stderr}`);
  assert.deepEqual(r.stdout.trimEnd().split("\n"), [
    "greeting=hello from the image extra=from-run",
    "removed: absent",
    `user=1000:1000 cwd=/home/app host=${/^(vm-[0-9a-f]{6})/.exec(r.stderr)?.[1] ?? "?"}`,
  ]);
  assert.match(r.stderr, /exited \(the program exited with status 3\)/);
  const left = await d.api.get("/instances?all=1");
  assert.deepEqual(left.body.instances, [], "--rm removed the instance");
});

test("from oci:DIR: -- overrides the command; the API reports the program's exit status", async () => {
  const c = await ovm(["convert", `oci:${layout}:1.0`, "-t", "app/vm:oci"], d.env);
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stderr, /layer 1\/2 .*: cached/, "the layers were unpacked by the first conversion");
  const r = await ovm(
    [
      "run",
      "--name",
      "over",
      "--accel",
      "tcg",
      "app/vm:oci",
      "--",
      "sh",
      "-c",
      'echo "overridden $GREETING"; ls -1 /etc',
    ],
    d.env,
  );
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout.split("\n");
  assert.equal(out[0], "overridden hello from the image");
  assert.ok(out.includes("kept") && !out.includes("removed"), r.stdout);
  const s = await d.api.get("/status/over");
  assert.equal(s.status, 200);
  assert.equal(s.body.state, "exited");
  assert.equal(s.body.program_exit_code, 0);
  assert.equal(s.body.exit_code, 0, "QEMU ended cleanly: OVMS-Init powered the guest off");
  assert.ok(s.body.metrics.boot_ms > 0, "boot_ms: from the start request to the program's first output");
});

test("a stop sends the image's stop signal to the program, whose status (128 + 15) comes back", async () => {
  const r = await d.api.post("/start", {
    manifest: "app/vm:oci",
    overrides: { name: "stopper", accel: "tcg", args: ["sh", "-c", "echo ready; exec sleep 600"] },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await serialLine(d.api, "stopper", /^ready$/, 180_000);
  const stop = await d.api.post("/stop", { instance_id: "stopper", timeout_ms: 60_000 });
  assert.equal(stop.status, 200);
  const s = await waitFor("stopper to end", async () => {
    const x = await d.api.get("/status/stopper");
    return x.body.state === "exited" || x.body.state === "failed" ? x.body : undefined;
  });
  assert.equal(s.state, "exited");
  assert.equal(s.program_exit_code, 143, JSON.stringify(s));
  // Overrides for an artifact that is not a container image are refused before anything starts.
  const bad = await d.api.post("/start", { manifest: "app/vm:oci", overrides: { env: ["NOEQUALS"] } });
  assert.equal(bad.status, 400);
});

test("a vm config converts and boots to its first console line; --runtime and preferredRuntime", async () => {
  const cfg = join(dir, "config.json");
  await writeFile(cfg, JSON.stringify(vmConfig({ hypervisor: "/usr/local/bin/firecracker" })));
  const c = await ovm(["convert", cfg, "-t", "legacy/vm:1"], d.env);
  assert.equal(c.code, 0, c.stderr);
  assert.match(
    c.stdout,
    /^not carried: vm\.hypervisor\.parameters\[0\] = "opts1=foo": VMM command-line parameters/m,
  );
  assert.match(
    c.stdout,
    /^carried: vm\.hypervisor\.path → runtimeHints\.preferredRuntime \(the VMM family \(firecracker\)/m,
  );

  const unknown = await ovm(["run", "--runtime=nope", "legacy/vm:1"], d.env);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /--runtime nope: unknown runtime adapter \(known: qemu\)/);
  const preferred = await ovm(["run", "-d", "legacy/vm:1"], d.env);
  assert.equal(preferred.code, 1);
  assert.match(
    preferred.stderr,
    /prefers runtime firecracker .*none of them is installed here: this runtime runs qemu; run it anyway with --runtime=qemu/,
  );
  const rmd = await ovm(["run", "-d", "--rm", "legacy/vm:1"], d.env);
  assert.equal(rmd.code, 2);
  const env = await ovm(["run", "-d", "--runtime=qemu", "-e", "A=1", "legacy/vm:1"], d.env);
  assert.equal(env.code, 1);
  assert.match(env.stderr, /is not a container image \(containerMode\)/);
  const started = (await d.api.get("/instances?all=1")).body.instances.filter(
    (i: { artifact: { reference: string } }) => i.artifact.reference.startsWith("legacy/"),
  );
  assert.deepEqual(started, [], "nothing was started");

  const run = await ovm(
    ["run", "-d", "--name", "legacy", "--accel", "tcg", "--runtime=qemu", "legacy/vm:1"],
    d.env,
  );
  assert.equal(run.code, 0, run.stderr);
  const first = await waitFor(
    "the first console line",
    async () => {
      const l = await d.api.get("/logs/legacy");
      return l.body.length ? l.body[0].line : undefined;
    },
    180_000,
  );
  assert.ok(first.length > 0);
  assert.match(
    await serialLine(d.api, "legacy", /^OVMS-DISK:/, 180_000),
    /base layer/,
    "it boots from vm.image",
  );
});
