import { test } from "node:test";
import assert from "node:assert/strict";
import { checkMac, formatPort, parseExposedPort, parsePortSpec } from "../../src/core/ports.js";
import { checkManifest } from "../../src/core/validate.js";

test("parsePortSpec reads -p the docker way", () => {
  assert.deepEqual(parsePortSpec("8080:80"), { protocol: "tcp", hostPort: 8080, guestPort: 80 });
  assert.deepEqual(parsePortSpec("0.0.0.0:8080:80/udp"), {
    protocol: "udp",
    hostIp: "0.0.0.0",
    hostPort: 8080,
    guestPort: 80,
  });
  assert.deepEqual(parsePortSpec("80"), { protocol: "tcp", guestPort: 80 }, "a free host port");
  assert.deepEqual(parsePortSpec("127.0.0.1::53/UDP"), {
    protocol: "udp",
    hostIp: "127.0.0.1",
    guestPort: 53,
  });
});

test("parsePortSpec refuses what it cannot publish, naming the spec (usage errors)", () => {
  const usage = (re: RegExp) => (e: any) => e.code === "USAGE" && re.test(e.message);
  assert.throws(() => parsePortSpec("8080:80/sctp"), usage(/-p 8080:80\/sctp: protocol "sctp"/));
  assert.throws(() => parsePortSpec("70000:80"), usage(/host port "70000" is not a port/));
  assert.throws(() => parsePortSpec("8080:0"), usage(/guest port "0"/));
  assert.throws(() => parsePortSpec("localhost:8080:80"), usage(/"localhost" is not an IPv4 address/));
  assert.throws(() => parsePortSpec("8000-8010:80"), usage(/ranges are not supported/));
  assert.throws(() => parsePortSpec(":80"), usage(/write \[HOST_IP:\]HOST_PORT:GUEST_PORT/));
  assert.throws(() => parsePortSpec("1:2:3:4"), usage(/write/));
});

test("formatPort writes a published port as docker ps does", () => {
  assert.equal(
    formatPort({ protocol: "udp", hostIp: "0.0.0.0", hostPort: 5353, guestPort: 53 }),
    "0.0.0.0:5353->53/udp",
  );
});

test("checkMac takes unicast MACs in any case and refuses the rest", () => {
  assert.equal(checkMac("52:54:00:AB:cd:01"), "52:54:00:ab:cd:01");
  assert.throws(() => checkMac("01:00:5e:00:00:01"), /multicast/);
  assert.throws(
    () => checkMac("52-54-00-ab-cd-01"),
    (e: any) => e.code === "INVALID_ARGUMENT",
  );
});

test("exposed ports: OCI's spelling, each once, within range (rfc §2.2)", () => {
  assert.deepEqual(parseExposedPort("8080"), { port: 8080, protocol: "tcp" });
  assert.deepEqual(parseExposedPort("53/udp"), { port: 53, protocol: "udp" });
  assert.equal(parseExposedPort("99999/tcp"), undefined);
  const m = (network: unknown) => ({
    schemaVersion: 1,
    mediaType: "application/vnd.ovms.manifest.v1+json",
    name: "demo/web",
    version: "1",
    kernel: { ref: `sha256:${"a".repeat(64)}` },
    network,
  });
  assert.deepEqual(checkManifest(m({ required: true, exposedPorts: ["80/tcp", "53/udp"] })), []);
  assert.deepEqual(checkManifest(m({ exposedPorts: ["80", "80/tcp", "99999"] })), [
    { path: "network.exposedPorts[1]", message: "80/tcp is listed twice" },
    { path: "network.exposedPorts[2]", message: "must be a port (1-65535) with an optional /tcp or /udp" },
  ]);
  assert.deepEqual(checkManifest(m({ exposedPorts: ["http"] })), [
    {
      path: "network.exposedPorts[0]",
      message: "must be a port and protocol such as 80/tcp, 53/udp or 8080",
    },
  ]);
  assert.deepEqual(checkManifest(m({ interfaces: 2 })), [
    {
      path: "network.interfaces",
      message: "is not a known field (put vendor fields under `extensions` with a namespaced key)",
    },
  ]);
});
