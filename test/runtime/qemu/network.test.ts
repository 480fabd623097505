import { test } from "node:test";
import assert from "node:assert/strict";
import type { PreparedArtifact } from "../../../src/artifact/prepare.js";
import { qemuArgv, type QemuConfig } from "../../../src/runtime/qemu/argv.js";
import {
  hasUserNetworking,
  draftNetwork,
  forwardFailure,
  lostPortError,
  netdevArgv,
  networkMismatches,
  poolServes,
  portHolders,
} from "../../../src/runtime/qemu/network.js";
import { draftPlan } from "../../../src/runtime/qemu/plan.js";

const D = `sha256:${"a".repeat(64)}` as const;

function artifact(
  manifest: Record<string, unknown> = {},
  snapNetwork?: { mac: string } | null,
): PreparedArtifact {
  const a = {
    reference: "demo/vm:1.0",
    digest: D,
    manifest: { name: "demo/vm", version: "1.0", kernel: { ref: D }, ...manifest },
    kernelPath: "/k",
    disks: [],
  } as unknown as PreparedArtifact;
  if (snapNetwork !== undefined)
    a.ramSnapshot = {
      memoryFile: "/m",
      deviceStateFile: "/d",
      digest: D,
      metadata: {
        runtime: { name: "qemu", version: "7.2.0" },
        machine: "microvm",
        memoryBytes: 192 << 20,
        vcpus: 1,
        accel: "tcg",
        ...(snapNetwork ? { network: snapNetwork } : {}),
      },
    } as unknown as PreparedArtifact["ramSnapshot"];
  return a;
}

const code = (c: string, re: RegExp) => (e: any) => e.code === c && re.test(e.message);

test("a cold boot has no NIC unless it publishes ports, asks for one, or its manifest declares network", () => {
  assert.equal(draftNetwork(artifact(), {}), undefined);
  const p = draftNetwork(artifact(), { ports: [{ guestPort: 80 }] })!;
  assert.equal(p.mode, "user");
  assert.match(p.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.deepEqual(p.ports, [{ guestPort: 80 }]);
  assert.equal(draftNetwork(artifact(), { network: "restricted" })!.mode, "restricted");
  assert.equal(draftNetwork(artifact({ network: { exposedPorts: ["80/tcp"] } }), {})!.mode, "user");
  assert.equal(draftNetwork(artifact({ network: {} }), { network: "none" }), undefined);
  assert.equal(
    draftNetwork(artifact(), { network: "user", mac: "52:54:00:AA:00:01" })!.mac,
    "52:54:00:aa:00:01",
  );
});

test("every cold boot gets its own MAC", () => {
  const macs = new Set(Array.from({ length: 50 }, () => draftNetwork(artifact(), { network: "user" })!.mac));
  assert.equal(macs.size, 50);
});

test("contradictions are refused before anything is created", () => {
  assert.throws(
    () => draftNetwork(artifact(), { network: "none", ports: [{ guestPort: 80 }] }),
    code("INVALID_ARGUMENT", /published ports need a network/),
  );
  assert.throws(
    () => draftNetwork(artifact({ network: { required: true } }), { network: "none" }),
    code("INVALID_ARGUMENT", /demo\/vm:1\.0 needs a network interface \(network\.required/),
  );
  assert.throws(
    () => draftNetwork(artifact(), { network: "none", mac: "52:54:00:00:00:01" }),
    code("INVALID_ARGUMENT", /network none gives the instance no NIC/),
  );
  assert.throws(
    () => draftNetwork(artifact(), { ports: [{ guestPort: 80, hostPort: 0 }] }),
    code("INVALID_ARGUMENT", /ports\[0\]\.hostPort: 0 is not a port/),
  );
  assert.throws(() => draftNetwork(artifact(), { mac: "03:00:00:00:00:01", network: "user" }), /multicast/);
});

test("a restore has a NIC exactly when its snapshot had one, with the snapshot's MAC", () => {
  const mac = "52:54:00:12:34:56";
  assert.equal(draftNetwork(artifact({}, null), {}), undefined);
  assert.deepEqual(draftNetwork(artifact({}, { mac }), {}), { mode: "user", mac, ports: [] });
  assert.deepEqual(
    draftNetwork(artifact({}, { mac }), { network: "restricted", ports: [{ guestPort: 80 }] }),
    {
      mode: "restricted",
      mac,
      ports: [{ guestPort: 80 }],
    },
  );
  assert.deepEqual(networkMismatches({ network: { mac } }, { network: "none", mac: "52:54:00:00:00:01" }), [
    `network: the snapshot's device state holds a NIC (${mac}), asked none (restricted cuts outbound access instead)`,
    `mac: snapshot ${mac}, asked 52:54:00:00:00:01 (a restored guest keeps its MAC in memory)`,
  ]);
  assert.deepEqual(networkMismatches({ network: { mac } }, { mac: mac.toUpperCase(), network: "user" }), []);
  assert.deepEqual(networkMismatches({}, { network: "user", ports: [{ guestPort: 80 }], mac }), [
    "network: the snapshot has no NIC, asked user",
    "ports: the snapshot has no NIC to publish ports to (snapshot an instance started with a network)",
    "mac: the snapshot has no NIC",
  ]);
  // The planner refuses them with the other §5.6 mismatches.
  assert.throws(
    () => draftPlan(artifact({}, null), { ports: [{ guestPort: 80 }] }, { runtime: "qemu", name: "vm" }),
    code("MANIFEST_INVALID", /cannot restore demo\/vm:1\.0: ports: the snapshot has no NIC/),
  );
});

test("the NIC on the command line: virtio-net on the machine's bus, forwards, restrict=on", () => {
  const n = {
    mode: "restricted" as const,
    mac: "52:54:00:12:34:56",
    forwards: [
      { protocol: "tcp" as const, hostIp: "127.0.0.1", hostPort: 8080, guestPort: 80 },
      { protocol: "udp" as const, hostIp: "0.0.0.0", hostPort: 5353, guestPort: 53 },
    ],
  };
  assert.deepEqual(netdevArgv(n, "microvm"), [
    "-netdev",
    "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:5353-:53",
    "-device",
    "virtio-net-device,netdev=net0,mac=52:54:00:12:34:56",
  ]);
  assert.deepEqual(netdevArgv({ ...n, mode: "user", forwards: [] }, "q35"), [
    "-netdev",
    "user,id=net0",
    "-device",
    "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=",
  ]);
});

test("qemuArgv puts the NIC after the disk (microvm's virtio-mmio slots must match on restore)", () => {
  const cfg: QemuConfig = {
    id: "x",
    machine: "microvm",
    accel: "tcg",
    memoryBytes: 1 << 28,
    vcpus: 1,
    kernel: "/k",
    cmdline: "",
    disk: "/o.qcow2",
    serialLog: "/s",
    qmpSocket: "/q",
    ramFile: "/r",
    devices: [],
    network: { mode: "user", mac: "52:54:00:12:34:56", forwards: [] },
  };
  const devices = qemuArgv(cfg).filter((_, i, a) => a[i - 1] === "-device");
  assert.deepEqual(devices, [
    "virtio-blk-device,drive=disk0",
    "virtio-net-device,netdev=net0,mac=52:54:00:12:34:56",
  ]);
  assert.ok(!qemuArgv({ ...cfg, network: undefined }).includes("-netdev"), "no network, no NIC");
});

test("a port lost to another program after the probe is recognised in QEMU's words", () => {
  const rule = forwardFailure(
    "QEMU did not start: qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80: Could not set up host forwarding rule 'tcp:127.0.0.1:8080-:80'",
  );
  assert.equal(rule, "tcp:127.0.0.1:8080-:80");
  const e = lostPortError(rule!);
  assert.equal(e.code, "CONFLICT");
  assert.match(
    e.message,
    /^host port 127\.0\.0\.1:8080\/tcp was taken by another program while the instance was starting; nothing was started/,
  );
  assert.equal(forwardFailure("qemu-system-x86_64: something else"), undefined);
});

test("a warm-pool process serves a start only with the same NIC, and ports it can still bind", () => {
  const pooled = { mode: "user", mac: "52:54:00:12:34:56" };
  const wanted = (mode: "user" | "restricted", hostPort: number) => ({
    mode,
    mac: pooled.mac,
    ports: [],
    published: [{ protocol: "tcp" as const, hostIp: "127.0.0.1", hostPort, guestPort: 80 }],
  });
  assert.equal(poolServes(undefined, undefined, "nobody"), true);
  assert.equal(poolServes(pooled, wanted("user", 8080), "nobody"), true);
  assert.equal(
    poolServes(pooled, wanted("restricted", 8080), undefined),
    false,
    "SLIRP options are fixed at start-up",
  );
  assert.equal(
    poolServes(pooled, wanted("user", 80), "nobody"),
    false,
    "an unprivileged QEMU cannot bind port 80",
  );
  assert.equal(poolServes(pooled, wanted("user", 80), undefined), true, "QEMU kept the daemon's user");
  assert.equal(poolServes(pooled, undefined, undefined), false);
});

test("only live instances hold their ports", () => {
  const ports = [{ protocol: "tcp" as const, hostIp: "127.0.0.1", hostPort: 8080, guestPort: 80 }];
  const held = [
    ...portHolders([
      { instance_id: "a", name: "a", state: "running", network: { ports } },
      { instance_id: "b", name: "b", state: "exited", network: { ports } },
      { instance_id: "c", name: "c", state: "starting" },
    ]),
  ];
  assert.deepEqual(held, [{ id: "a", name: "a", ports }]);
});

test("this host's QEMU has user-mode networking (QEMU 7.2 needs libslirp for it)", async () => {
  assert.equal(await hasUserNetworking(), true);
});
