import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEMO_CMDLINE, ovm } from "../helpers.js";
import { ContractChecker } from "./openapi-check.js";
import {
  buildDemoCli,
  instanceDiagnosis,
  serialLine,
  startDaemon,
  waitFor,
  type DaemonProc,
} from "./harness.js";

// One real ovmd, the demo artifact without ivshmem (microvm, so it can be snapshotted) and one
// guest running busybox httpd (ovms.mode=httpd) behind a published port, shared by the tests
// that look at it. Tests run in order: the snapshot test restores clones of that guest.
const checker = new ContractChecker();
let dir: string;
let d: DaemonProc;
let webPort: number;
let webMac: string;

/** State is what the demo guest's /cgi-bin/state answers. */
interface State {
  hits: number;
  counter: number;
  mac: string;
  net: string;
  boot_id: string;
}

/** freePort is a TCP port nobody listens on at the moment (the kernel's pick). */
async function freePort(): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * get fetches a URL with a real HTTP client (Node's fetch), retrying while the guest's side is
 * not there yet (SLIRP accepts the host connection, then resets it when nothing listens in the
 * guest), and returns the status and body.
 */
async function get(
  url: string,
  timeoutMs = 60_000,
  instance?: string,
): Promise<{ status: number; body: string }> {
  return waitFor(
    `an HTTP answer from ${url}`,
    async () => {
      try {
        const r = await fetch(url, { signal: AbortSignal.timeout(10_000) });
        return { status: r.status, body: await r.text() };
      } catch {
        return undefined;
      }
    },
    timeoutMs,
    instance ? () => instanceDiagnosis(d.api, instance) : undefined,
  );
}

/** state asks the demo guest's web server on `port` for its state; `instance` is who answers there. */
async function state(port: number, instance?: string): Promise<State> {
  const r = await get(`http://127.0.0.1:${port}/cgi-bin/state`, 60_000, instance);
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body) as State;
}

const start = (overrides: Record<string, unknown>, manifest = "demo/net:1.0") =>
  d.api.post("/start", { manifest, overrides: { accel: "tcg", ...overrides } });

async function instanceCount(): Promise<number> {
  return (await d.api.get("/instances?all=1")).body.instances.length;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-daemon-net-"));
  d = await startDaemon(join(dir, "a"), checker);
  // The real CLI builds it: kernel, busybox initrd (virtio_net and the httpd pages), layered disk.
  await buildDemoCli(d.env, "demo/net:1.0", { ivshmem: false });
  const r = await start({ name: "web", cmdline: "ovms.mode=httpd", ports: [{ guest_port: 80 }] });
  assert.equal(r.status, 202, JSON.stringify(r.body));
});

after(async () => {
  for (const i of (await d?.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? []) {
    await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
  }
  await d?.stop();
  await rm(dir, { recursive: true, force: true });
});

test("a guest serving HTTP is reached on its published host port with a real HTTP client", async () => {
  const s = await d.api.get("/status/web");
  assert.equal(s.body.network.mode, "user");
  assert.match(s.body.network.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.equal(s.body.network.ports.length, 1);
  const p = s.body.network.ports[0];
  assert.deepEqual(
    { ...p, host_port: 0 },
    { protocol: "tcp", host_ip: "127.0.0.1", host_port: 0, guest_port: 80 },
  );
  assert.ok(p.host_port > 0, "the runtime picked a free host port");
  webPort = p.host_port;
  webMac = s.body.network.mac;
  // The guest found the virtio-net NIC and took its address by DHCP.
  assert.equal(
    await serialLine(d.api, "web", /^OVMS-NET:/),
    `OVMS-NET: eth0 ${webMac} 10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3`,
  );
  await serialLine(d.api, "web", /^OVMS-HTTPD: listening/);
  const index = await get(`http://127.0.0.1:${webPort}/`);
  assert.equal(index.status, 200);
  assert.match(index.body, /OVMS demo guest/);
  const st = await state(webPort, "web");
  assert.equal(st.hits, 1, "this request is the guest's first");
  assert.equal(st.mac, webMac, "the guest sees the MAC the runtime gave its NIC");
  assert.equal(st.net, "10.0.2.15/24");
});

test("network user: the guest reaches out (the host's loopback is 10.0.2.2 inside)", async () => {
  const host: Server = createServer((_, res) => res.end("hello from the host\n"));
  await new Promise<void>((r) => host.listen(0, "127.0.0.1", r));
  try {
    const port = (host.address() as { port: number }).port;
    const r = await get(`http://127.0.0.1:${webPort}/cgi-bin/fetch?10.0.2.2:${port}`);
    assert.equal(r.status, 200, r.body);
    assert.match(r.body, /hello from the host/);
  } finally {
    await new Promise((r) => host.close(r));
  }
});

test("a host port in use is refused with a clear error, and nothing is started", async () => {
  const before = await instanceCount();
  // Another program holds the port.
  const other = createTcpServer();
  await new Promise<void>((r) => other.listen(0, "127.0.0.1", r));
  const taken = (other.address() as { port: number }).port;
  try {
    const r = await start({ name: "clash", ports: [{ host_port: taken, guest_port: 80 }] });
    assert.equal(r.status, 409, JSON.stringify(r.body));
    assert.equal(r.body.error.code, "CONFLICT");
    assert.match(
      r.body.error.message,
      new RegExp(`host port 127\\.0\\.0\\.1:${taken}/tcp is already in use by another program`),
    );
    assert.equal(r.body.error.details.port, `127.0.0.1:${taken}/tcp`);
    // The same through the CLI, as a user meets it: one line, exit 1.
    const cli = await ovm(["run", "-d", "--accel", "tcg", "-p", `${taken}:80`, "demo/net:1.0"], d.env);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, new RegExp(`^ovm: host port 127\\.0\\.0\\.1:${taken}/tcp is already in use`));
  } finally {
    await new Promise((r) => other.close(r));
  }
  // An instance of this daemon holds the port.
  const mine = await start({ ports: [{ host_port: webPort, guest_port: 8080 }] });
  assert.equal(mine.status, 409);
  assert.match(mine.body.error.message, /is already published by instance web \(/);
  // 0.0.0.0 overlaps every address of the same port.
  const any = await start({ ports: [{ host_ip: "0.0.0.0", host_port: webPort, guest_port: 80 }] });
  assert.equal(any.status, 409);
  assert.equal(await instanceCount(), before, "no instance was created");
  // What cannot work is refused as a bad request, before anything starts too.
  const none = await start({ network: "none", ports: [{ guest_port: 80 }] });
  assert.equal(none.status, 400);
  assert.match(none.body.error.message, /published ports need a network/);
  const foreign = await start({ ports: [{ host_ip: "192.0.2.1", guest_port: 80 }] });
  assert.equal(foreign.status, 400);
  assert.match(foreign.body.error.message, /192\.0\.2\.1 is not an address of this host/);
  const schema = await start({ ports: [{ guest_port: 70000 }] });
  assert.equal(schema.status, 400);
  assert.equal(schema.body.error.details.problems[0].path, "/overrides/ports/0/guest_port");
  const usage = await ovm(["run", "-p", "8080:80/sctp", "demo/net:1.0"], d.env);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /-p 8080:80\/sctp: protocol "sctp" is not tcp or udp/);
  assert.equal(await instanceCount(), before, "no instance was created");
});

test("ovm ps and ovm status show the network and the published ports", async () => {
  const ps = await ovm(["ps"], d.env);
  assert.equal(ps.code, 0, ps.stderr);
  const [head, row] = ps.stdout.trim().split("\n");
  assert.match(head, /\sPORTS$/);
  assert.match(row, new RegExp(`\\sweb\\s.*\\s127\\.0\\.0\\.1:${webPort}->80/tcp$`));
  const st = await ovm(["status", "web"], d.env);
  assert.match(st.stdout, new RegExp(`^Network:\\s+user, MAC ${webMac}$`, "m"));
  assert.match(st.stdout, new RegExp(`^Ports:\\s+127\\.0\\.0\\.1:${webPort}->80/tcp$`, "m"));
  const json = JSON.parse((await ovm(["status", "web", "--json"], d.env)).stdout);
  assert.deepEqual(json.network.ports, [
    { protocol: "tcp", host_ip: "127.0.0.1", host_port: webPort, guest_port: 80 },
  ]);
});

test("after a snapshot, two clones on two host ports answer independently, each with its own state", async () => {
  const atSnap = await state(webPort, "web");
  const snap = await d.api.post("/snapshot", { instance_id: "web", tag: "demo/net:snap" });
  assert.equal(snap.status, 200, JSON.stringify(snap.body));
  const [pa, pb] = [await freePort(), await freePort()];
  const ra = await start({ name: "clone-a", ports: [{ host_port: pa, guest_port: 80 }] }, "demo/net:snap");
  assert.equal(ra.status, 202, JSON.stringify(ra.body));
  const rb = await start({ name: "clone-b", ports: [{ host_port: pb, guest_port: 80 }] }, "demo/net:snap");
  assert.equal(rb.status, 202, JSON.stringify(rb.body));
  for (const [name, port] of [
    ["clone-a", pa],
    ["clone-b", pb],
  ] as const) {
    const s = (await d.api.get(`/status/${name}`)).body;
    assert.equal(s.state, "running", JSON.stringify(s));
    assert.deepEqual(s.network.ports, [
      { protocol: "tcp", host_ip: "127.0.0.1", host_port: port, guest_port: 80 },
    ]);
    // A restored guest keeps the MAC it has in memory; each clone has a private SLIRP network.
    assert.equal(s.network.mac, webMac);
  }
  // Both continue the source's past: the same boot, hits and counter from the snapshot on.
  const a1 = await state(pa, "clone-a");
  const b1 = await state(pb, "clone-b");
  for (const s of [a1, b1]) {
    assert.equal(s.boot_id, atSnap.boot_id, "a restored clone, not a new boot");
    assert.equal(s.hits, atSnap.hits + 1);
    assert.ok(s.counter >= atSnap.counter, `counter ${s.counter} goes on from ${atSnap.counter}`);
  }
  // Then they diverge: requests to one do not count in the other, nor in the source.
  const a2 = await state(pa, "clone-a");
  const a3 = await state(pa, "clone-a");
  const b2 = await state(pb, "clone-b");
  assert.deepEqual([a2.hits, a3.hits, b2.hits], [atSnap.hits + 2, atSnap.hits + 3, atSnap.hits + 2]);
  assert.equal((await state(webPort, "web")).hits, atSnap.hits + 1, "the source kept running on its own");
  // Stopping one clone leaves the other serving, and frees the stopped one's port.
  assert.equal((await d.api.post("/stop", { instance_id: "clone-a", force: true })).body.status, "exited");
  assert.equal((await state(pb, "clone-b")).hits, atSnap.hits + 3);
  assert.deepEqual(
    (await d.api.get("/status/clone-a")).body.network.ports,
    [],
    "an ended instance holds no port",
  );
  const again = await start({ name: "clone-c", ports: [{ host_port: pa, guest_port: 80 }] }, "demo/net:snap");
  assert.equal(again.status, 202, `port ${pa} is free again: ${JSON.stringify(again.body)}`);
  assert.equal((await state(pa, "clone-c")).boot_id, atSnap.boot_id);
});

test("network restricted: published ports reach the guest, the guest reaches nothing", async () => {
  const host: Server = createServer((_, res) => res.end("hello from the host\n"));
  await new Promise<void>((r) => host.listen(0, "127.0.0.1", r));
  try {
    const r = await start(
      { name: "jailed", network: "restricted", ports: [{ guest_port: 80 }] },
      "demo/net:snap",
    );
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const s = (await d.api.get("/status/jailed")).body;
    assert.equal(s.network.mode, "restricted");
    const port = s.network.ports[0].host_port;
    assert.equal((await state(port, "jailed")).mac, webMac);
    const hostPort = (host.address() as { port: number }).port;
    const out = await get(`http://127.0.0.1:${port}/cgi-bin/fetch?10.0.2.2:${hostPort}`);
    assert.equal(out.status, 502, out.body);
    assert.match(out.body, /guest could not reach 10\.0\.2\.2/);
  } finally {
    await new Promise((r) => host.close(r));
  }
});

test("a restore keeps the snapshot's NIC: no network, or another MAC, is refused before QEMU starts", async () => {
  const before = await instanceCount();
  const none = await start({ network: "none" }, "demo/net:snap");
  assert.equal(none.status, 422, JSON.stringify(none.body));
  assert.equal(none.body.error.code, "MANIFEST_INVALID");
  assert.match(
    none.body.error.message,
    new RegExp(`network: the snapshot's device state holds a NIC \\(${webMac}\\)`),
  );
  const mac = await start({ mac: "52:54:00:00:00:01" }, "demo/net:snap");
  assert.equal(mac.status, 422);
  assert.match(mac.body.error.message, new RegExp(`mac: snapshot ${webMac}, asked 52:54:00:00:00:01`));
  assert.equal(await instanceCount(), before);
  // The snapshot artifact says so itself: its guest needs a NIC.
  const inspect = JSON.parse((await ovm(["--json", "inspect", "demo/net:snap"], d.env)).stdout);
  assert.equal(inspect.manifest.network.required, true);
});

test("ovm run -P publishes every port the artifact declares on a free host port", async () => {
  await buildDemoCli(d.env, "demo/net:exposed", {
    ivshmem: false,
    cmdline: `${DEMO_CMDLINE} ovms.mode=httpd`,
    extra: ["--expose", "80/tcp"],
  });
  const r = await ovm(["run", "-d", "-P", "--accel", "tcg", "--name", "exposed", "demo/net:exposed"], d.env);
  assert.equal(r.code, 0, r.stderr);
  const s = await d.api.get("/status/exposed");
  assert.equal(s.body.network.ports.length, 1, JSON.stringify(s.body.network));
  const p = s.body.network.ports[0];
  assert.deepEqual(
    { ...p, host_port: 0 },
    { protocol: "tcp", host_ip: "127.0.0.1", host_port: 0, guest_port: 80 },
  );
  assert.notEqual(p.host_port, 80, "a free host port, not the guest's");
  assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${p.host_port}->80/tcp`), "ovm run says where it went");
  const index = await get(`http://127.0.0.1:${p.host_port}/`);
  assert.equal(index.status, 200);
  assert.match(index.body, /OVMS demo guest/);
  // -p for a declared port keeps its own mapping: -P adds nothing twice.
  const host = await freePort();
  const both = await start(
    { name: "exposed2", ports: [{ guest_port: 80, host_port: host }], publish_all: true },
    "demo/net:exposed",
  );
  assert.equal(both.status, 202, JSON.stringify(both.body));
  const s2 = await d.api.get("/status/exposed2");
  assert.deepEqual(
    s2.body.network.ports.map((x: { host_port: number; guest_port: number }) => [x.host_port, x.guest_port]),
    [[host, 80]],
  );
  for (const n of ["exposed", "exposed2"]) await d.api.request("DELETE", `/instances/${n}?force=1`);
});
