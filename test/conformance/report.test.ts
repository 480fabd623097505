import { test } from "node:test";
import assert from "node:assert/strict";
import { Manual, Skip, Violation, runChecks, type Check } from "../../src/conformance/check.js";
import { formatReport, makeReport } from "../../src/conformance/report.js";
import { junitXml } from "../../src/conformance/junit.js";
import { OpenApiContract } from "../../src/conformance/openapi.js";

// The suite's own machinery: how a check's outcome becomes a result, when a run fails, and
// what the table, JUnit XML and the OpenAPI checker say. The suites themselves are tested
// against real peers in the other files of this folder.

const check = (
  id: string,
  requirement: Check<null>["requirement"],
  run: Check<null>["run"],
): Check<null> => ({
  id,
  section: "§0",
  level: "runtime-basic",
  requirement,
  title: `title of ${id}`,
  run,
});

test("runChecks: return is pass (info for INFO), Violation and any error fail, Skip skips, Manual is manual", async () => {
  const results = await runChecks(
    [
      check("a", "MUST", async () => ({ message: "fine" })),
      check("b", "MUST", async () => {
        throw new Violation("saw <this> & that");
      }),
      check("c", "SHOULD", async () => {
        throw new Error("boom");
      }),
      check("d", "MUST", async () => {
        throw new Skip("needs x");
      }),
      check("e", "MUST", async () => {
        throw new Manual("look by hand");
      }),
      check("f", "INFO", async () => ({ measured: { ms: 5 } })),
    ],
    null,
  );
  assert.deepEqual(
    results.map((r) => [r.id, r.status, r.message]),
    [
      ["a", "pass", "fine"],
      ["b", "fail", "saw <this> & that"],
      ["c", "fail", "boom"],
      ["d", "skip", "needs x"],
      ["e", "manual", "look by hand"],
      ["f", "info", undefined],
    ],
  );

  const report = makeReport(
    "runtime",
    "/run/x.sock",
    ["runtime-basic", "runtime-secure"],
    results,
    new Date(),
  );
  assert.equal(report.ok, false, "a failed MUST fails the run");
  assert.deepEqual(
    report.summary.map((s) => [s.level, s.ok, s.pass, s.fail, s.skip, s.manual, s.info]),
    [
      ["runtime-basic", false, 1, 2, 1, 1, 1],
      ["runtime-secure", true, 0, 0, 0, 0, 0],
    ],
  );
  const ok = makeReport(
    "runtime",
    "x",
    ["runtime-basic"],
    results.filter((r) => r.id !== "b"),
    new Date(),
  );
  assert.equal(ok.ok, true, "a failed SHOULD does not");

  const text = formatReport(report);
  assert.match(text, /^Runtime-Basic$/m);
  assert.match(text, /FAIL\s+MUST\s+§0\s+b: title of b — saw <this> & that/);
  assert.match(
    text,
    /Runtime-Basic: DOES NOT CONFORM \(1 passed, 1 failed, 1 SHOULD not met, 1 skipped, 1 manual, 1 info\)/,
  );

  const xml = junitXml(report);
  assert.match(xml, /<testsuite name="Runtime-Basic" tests="6" failures="1" errors="0" skipped="3"/);
  assert.match(xml, /<failure message="saw &lt;this&gt; &amp; that" type="MUST">/);
  assert.match(xml, /<skipped message="SHOULD not met: boom"\/>/, "a failed SHOULD is a skipped testcase");
  assert.match(xml, /<system-out>\{"ms":5\}<\/system-out>/);
  assert.equal((xml.match(/<testcase /g) ?? []).length, 6);
});

test("OpenApiContract: an undocumented status, a missing required field, another content type are problems", () => {
  const c = new OpenApiContract();
  const info = {
    instance_id: "3f2b8c1e-5d7a-4e8b-9c0d-1a2b3c4d5e6f",
    name: "web-1",
    state: "running",
    artifact: { reference: "demo/vm:1", digest: `sha256:${"a".repeat(64)}` },
    runtime: "qemu",
    accel: "tcg",
    machine: "q35",
    created_at: "2025-01-01T00:00:00Z",
    metrics: { uptime_ms: 1, memory_bytes: 1, vcpus: 1 },
    devices: [],
    network: { mode: "none", ports: [] },
  };
  assert.deepEqual(c.check("GET", "/status/web-1", 200, "application/json", info).problems, []);
  const { created_at: _drop, ...missing } = info;
  assert.match(c.check("GET", "/status/web-1", 200, "application/json", missing).problems[0], /created_at/);
  assert.match(
    c.check("GET", "/status/web-1", 409, "application/json", {}).problems[0],
    /does not list for getStatus/,
  );
  assert.match(c.check("GET", "/status/web-1", 200, "text/plain", info).problems[0], /content type/);
  assert.match(c.check("GET", "/nope", 200, "application/json", {}).problems[0], /not an operation/);
  const rec = { ts: "2025-01-01T00:00:00Z", stream: "serial", line: "x" };
  assert.deepEqual(c.check("GET", "/logs/web-1", 200, "application/x-ndjson", [rec, rec]).problems, []);
  assert.equal(
    c.check("GET", "/logs/web-1", 200, "application/x-ndjson", [rec, { ...rec, stream: "x" }]).problems
      .length,
    1,
  );
});
