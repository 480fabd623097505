import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { ContractChecker } from "../daemon/openapi-check.js";
import { startDaemon, type DaemonProc } from "../daemon/harness.js";
import { shimProcesses, startContainerd, writeImageTar, type Containerd } from "./containerd-harness.js";
import { CriClient, podConfig } from "./cri-client.js";

// The kubelet's path: a gRPC client speaking the CRI v1 API to the CRI plugin of a real
// containerd 1.6 (private root, state and socket) whose `ovms` runtime handler is the shim,
// with a real ovmd and real QEMU. A pod's container runs as a VM, its output lands in the
// CRI log file and its exit code in ContainerStatus, exactly what a kubelet sees.
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;
let c: Containerd;
let cri: CriClient;
const IMAGE = "ovms.test/app:1.0";

before(async () => {
  dir = await mkdtemp("/tmp/ovms-cri-");
  d = await startDaemon(join(dir, "d"), checker);
  // The pause image is never run (a pod's sandbox gets no VM), but the CRI plugin wants one present.
  c = await startContainerd(join(dir, "c"), { OVMD_SOCKET: d.socket }, { cri: true, sandboxImage: IMAGE });
  const tar = await writeImageTar(dir, { Env: ["PATH=/bin"], Cmd: ["sh"], User: "1000:1000" });
  const imp = await c.ctr(
    ["image", "import", "--base-name", "ovms.test/app", "--snapshotter", "native", tar],
    { namespace: "k8s.io" },
  );
  assert.equal(imp.code, 0, imp.stderr);
  cri = new CriClient(c.address);
  const v = await cri.call("Version", { version: "v1" });
  assert.equal(v.runtime_name, "containerd");
});

after(async () => {
  cri?.close();
  for (const i of (await d?.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? [])
    await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
  await c?.stop();
  await d?.stop();
  await rm(dir, { recursive: true, force: true });
});

test("CRI: RunPodSandbox (handler ovms), CreateContainer, StartContainer, ContainerStatus: the container runs as a VM and its exit code is reported; StopPodSandbox and RemovePodSandbox leave nothing", async () => {
  const logs = join(dir, "pods", "demo");
  await mkdir(logs, { recursive: true });
  const pod = podConfig("demo", logs);
  const { pod_sandbox_id: sandbox } = await cri.call("RunPodSandbox", {
    config: pod,
    runtime_handler: "ovms",
  });
  assert.ok(sandbox, "a sandbox id");
  const { container_id: id } = await cri.call("CreateContainer", {
    pod_sandbox_id: sandbox,
    config: {
      metadata: { name: "app", attempt: 0 },
      image: { image: IMAGE },
      command: ["sh", "-c"],
      args: ['echo "hello from the pod greeting=$GREETING user=$(id -u)"; exit 4'],
      envs: [{ key: "GREETING", value: "from the pod spec" }],
      log_path: "app.log",
    },
    sandbox_config: pod,
  });
  await cri.call("StartContainer", { container_id: id });
  let st: any;
  const deadline = Date.now() + 600_000;
  for (;;) {
    st = (await cri.call("ContainerStatus", { container_id: id })).status;
    if (st.state === "CONTAINER_EXITED" || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(st.state, "CONTAINER_EXITED", c.output().slice(-3000));
  assert.equal(st.exit_code, 4, "the program's exit status, as the kubelet sees it");
  assert.ok(st.started_at > 0 && st.finished_at >= st.started_at);
  const log = await readFile(join(logs, "app.log"), "utf8");
  assert.match(log, /^\S+ stdout F hello from the pod greeting=from the pod spec user=1000$/m, log);

  await cri.call("StopPodSandbox", { pod_sandbox_id: sandbox });
  await cri.call("RemovePodSandbox", { pod_sandbox_id: sandbox });
  assert.deepEqual((await d.api.get("/instances?all=1")).body.instances, [], "no VM is left");
  assert.doesNotMatch((await c.ctr(["task", "ls"], { namespace: "k8s.io" })).stdout, /\n\S/);
  const left = Date.now() + 10_000;
  while ((await shimProcesses(c.address)).length && Date.now() < left)
    await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(await shimProcesses(c.address), [], "no shim process is left");
});
