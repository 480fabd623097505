import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, rm, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ovm } from "../helpers.js";
import { startRegistry, type RegistryServer } from "../registry-server.js";
import { SubjectDroppingProxy } from "./subject-dropping-proxy.js";

// `ovm conformance registry` against the real CNCF registry (v2.8: no Referrers API, so the
// tag-schema fallback must be what is reported), and against a proxy in front of it that
// gives manifests back without their subject: that, and nothing else, must fail.

let registry: RegistryServer;
let dir: string;

before(async () => {
  registry = await startRegistry();
  dir = await mkdtemp(join(tmpdir(), "ovms-conformance-registry-"));
});

after(async () => {
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** run runs the registry suite with --json (small blobs: the sizes are not what is tested) and parses the report. */
async function run(repository: string, junit?: string) {
  const r = await ovm([
    "--json",
    "conformance",
    "registry",
    repository,
    "--large-mib",
    "16",
    "--chunk-mib",
    "1",
    ...(junit ? ["--junit", junit] : []),
  ]);
  return { code: r.code, stderr: r.stderr, report: JSON.parse(r.stdout || "{}") };
}

test("docker-registry 2.8 carries OVMS artifacts; the referrers tag schema is the fallback reported", async () => {
  const junit = join(dir, "registry.xml");
  const { code, stderr, report } = await run(`${registry.host}/conformance/ok`, junit);
  assert.equal(code, 0, stderr + JSON.stringify(report.results));
  const by = Object.fromEntries(report.results.map((r: { id: string }) => [r.id, r]));
  for (const id of [
    "registry.api",
    "registry.artifact",
    "registry.subject",
    "registry.referrers",
    "registry.blob.large",
    "registry.blob.chunked",
  ])
    assert.equal(by[id].status, "pass", `${id}: ${by[id].message}`);
  assert.match(
    by["registry.referrers"].message,
    /no Referrers API \(404\): OVMS keeps the referrers tag schema, tag sha256-[a-f0-9]{64}/,
  );
  assert.match(report.about["OVMS will use"].referrers, /^referrers tag schema/);
  assert.equal(report.about["OVMS will use"].mount, "yes");
  assert.match(
    await readFile(junit, "utf8"),
    /<testsuite name="Registry compatibility" tests="8" failures="0"/,
  );
});

test("a registry that gives manifests back without their subject fails registry.subject (§3.5), and only that", async () => {
  const proxy = await new SubjectDroppingProxy(registry.port).start();
  try {
    const { code, report } = await run(`${proxy.host}/conformance/nosubject`);
    assert.equal(code, 1);
    assert.ok(proxy.dropped > 0, "the proxy dropped a subject");
    const failed = report.results.filter((r: { status: string }) => r.status === "fail");
    assert.deepEqual(
      failed.map((r: { id: string; section: string }) => `${r.id} ${r.section}`),
      ["registry.subject §3.5"],
    );
    assert.match(failed[0].message, /came back without its subject/);
  } finally {
    await proxy.close();
  }
});
