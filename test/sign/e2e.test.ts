import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { buildDemo, ovm } from "../helpers.js";
import { startRegistry, type RegistryServer } from "../registry-server.js";
import { ContractChecker } from "../daemon/openapi-check.js";
import { serialLine, startDaemon, type DaemonProc } from "../daemon/harness.js";

// The whole trust path against real parts: keys from `ovm key generate`, the demo VM built and
// signed in one store, pushed to the real registry (distribution 2.8: referrers through the
// sha256-<hex> tag fallback), pulled into the store of a real ovmd under a policy, verified,
// and booted on real QEMU; a snapshot signed and pushed by `ovm snapshot -t … --sign`, and
// restored by a second daemon whose policy accepts the repository but not unsigned snapshots.
const checker = new ContractChecker();
let dir: string;
let registry: RegistryServer;
let host: string;
let env: Record<string, string>;
const daemons: DaemonProc[] = [];
const PASS = { OVM_KEY_PASSWORD: "correct horse" };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ovms-trust-"));
  await chmod(dir, 0o755);
  registry = await startRegistry();
  host = registry.host;
  env = { DOCKER_CONFIG: join(dir, "docker"), ...PASS };
});

after(async () => {
  for (const d of daemons) {
    for (const i of (await d.api.get("/instances?all=1").catch(() => undefined))?.body.instances ?? [])
      await d.api.request("DELETE", `/instances/${i.instance_id}?force=1`).catch(() => undefined);
    await d.stop();
  }
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

const json = (s: string) => JSON.parse(s);

test("key generate → sign → push → pull under a policy → verify → run; unsigned and tampered artifacts are refused", async () => {
  const keys = join(dir, "keys");
  await mkdir(keys);
  let r = await ovm(["--json", "key", "generate", "-o", join(keys, "release")], env);
  assert.equal(r.code, 0, r.stderr);
  const fingerprint = json(r.stdout).fingerprint as string;
  r = await ovm(["key", "generate", "-o", join(keys, "release")], env);
  assert.equal(r.code, 2, "an existing key is never overwritten without --force");
  r = await ovm(["key", "generate", "-o", join(keys, "other")], env);
  assert.equal(r.code, 0, r.stderr);

  // Build and sign in the build store; push both a signed and an unsigned version.
  const build = join(dir, "build-store");
  await buildDemo(await Store.open(build), `${host}/demo/vm:1.0`, false);
  await buildDemo(await Store.open(build), `${host}/demo/vm:unsigned`, false);
  const benv = { ...env, OVM_STORE: build };
  r = await ovm(["--json", "sign", `${host}/demo/vm:1.0`, "--key", join(keys, "release.key")], benv);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(json(r.stdout).key, fingerprint);
  const r2 = await ovm(["sign", `${host}/demo/vm:1.0`, "--key", join(keys, "release.key")], {
    ...benv,
    OVM_KEY_PASSWORD: "wrong",
  });
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /wrong passphrase/);
  for (const tag of ["1.0", "unsigned"]) {
    r = await ovm(["--json", "push", `${host}/demo/vm:${tag}`], benv);
    assert.equal(r.code, 0, r.stderr);
  }

  const policy = join(dir, "policy.json");
  await writeFile(
    policy,
    JSON.stringify({
      version: 1,
      keys: { release: { path: "keys/release.pub" } },
      scopes: [{ match: `${host}/demo/**`, action: "requireSigned", keys: ["release"] }],
    }),
  );
  const d = await startDaemon(join(dir, "d1"), checker, ["--policy", policy]);
  daemons.push(d);
  const denv = { ...env, ...d.env };

  // ovm pull --policy: the signed one is named, the unsigned one is not.
  r = await ovm(["--json", "pull", `${host}/demo/vm:1.0`, "--policy", policy], denv);
  assert.equal(r.code, 0, r.stderr);
  assert.match(json(r.stdout).policy, /signed by release/);
  const digest = json(r.stdout).digest as string;
  r = await ovm(["--json", "pull", `${host}/demo/vm:unsigned`, "--policy", policy], denv);
  assert.equal(r.code, 1);
  assert.equal(json(r.stderr).error.code, "POLICY_DENIED");
  assert.match(
    json(r.stderr).error.message,
    /rule scopes\[0\] .* requires a signature by release, and it has no signature/,
  );
  const names = (await (await Store.open(d.store)).entries()).map((e) => e.reference).filter(Boolean);
  assert.deepEqual(names, [`${host}/demo/vm:1.0`], "the refused artifact got no name");

  // ovm verify in the daemon's store: the release key verifies, another key does not.
  r = await ovm(["--json", "verify", `${host}/demo/vm:1.0`, "--key", join(keys, "release.pub")], denv);
  assert.equal(r.code, 0, r.stderr);
  const v = json(r.stdout);
  assert.equal(v.verified, true);
  assert.equal(v.blobs, "verified");
  assert.equal(v.signatures[0].key, fingerprint);
  assert.match(v.signatures[0].signedAt, /^\d{4}-\d\d-\d\dT/);
  r = await ovm(["--json", "verify", `${host}/demo/vm:1.0`, "--key", join(keys, "other.pub")], denv);
  assert.equal(r.code, 1);
  assert.equal(json(r.stderr).error.code, "SIGNATURE_INVALID");
  r = await ovm(["verify", `${host}/demo/vm:1.0`, "--policy", policy], denv);
  assert.equal(r.code, 0, r.stderr);

  // Admission: the signed artifact boots; the unsigned one (pulled by the daemon) is 403.
  let s = await d.api.post("/start", {
    manifest: `${host}/demo/vm:1.0`,
    overrides: { name: "signed", accel: "tcg", cmdline: "ovms.mode=counter" },
  });
  assert.equal(s.status, 202, JSON.stringify(s.body));
  await serialLine(d.api, "signed", /^OVMS-READY$/, 120_000);
  s = await d.api.post("/start", { manifest: `${host}/demo/vm:unsigned`, overrides: { name: "unsigned" } });
  assert.equal(s.status, 403, JSON.stringify(s.body));
  assert.equal(s.body.error.code, "POLICY_DENIED");
  assert.match(
    s.body.error.message,
    new RegExp(
      `refuses ${host.replace(/\./g, "\\.")}/demo/vm:unsigned \\(sha256:[a-f0-9]{64}\\): rule scopes\\[0\\]`,
    ),
  );
  assert.equal(s.body.error.details.rule, `scopes[0] (match "${host}/demo/**")`);
  assert.ok(
    !(await d.api.get("/instances?all=1")).body.instances.some(
      (i: { name: string }) => i.name === "unsigned",
    ),
    "no instance was created",
  );

  // A snapshot, signed and pushed in one step; another pushed unsigned.
  await serialLine(d.api, "signed", /^OVMS-COUNTER: 2$/, 120_000);
  r = await ovm(
    ["--json", "snapshot", "signed", "-t", `${host}/demo/vm:snap`, "--sign", join(keys, "release.key")],
    denv,
  );
  assert.equal(r.code, 0, r.stderr);
  const snap = json(r.stdout);
  assert.equal(snap.pushed, `${host}/demo/vm:snap`);
  assert.equal(snap.key, fingerprint);
  r = await ovm(["--json", "snapshot", "signed", "-t", `${host}/demo/vm:snap-unsigned`], denv);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(json(r.stdout).pushed, `${host}/demo/vm:snap-unsigned`);
  assert.equal(json(r.stdout).signature, undefined);

  // Tampering in the store after signing: a layer blob changed → verify fails, start is refused.
  const store = await Store.open(d.store);
  const m = await store.readJson<{ layers: { digest: `sha256:${string}` }[] }>(digest as `sha256:${string}`);
  const kernel = store.blobPath(m.layers[0].digest);
  await chmod(kernel, 0o644);
  await writeFile(kernel, Buffer.from("not the kernel that was signed"));
  r = await ovm(["--json", "verify", `${host}/demo/vm:1.0`, "--key", join(keys, "release.pub")], denv);
  assert.equal(r.code, 1);
  assert.match(json(r.stderr).error.message, /a blob does not match the signed manifest/);
  s = await d.api.post("/start", { manifest: `${host}/demo/vm:1.0`, overrides: { name: "tampered" } });
  assert.ok(s.status >= 400, JSON.stringify(s.body));
  assert.equal(s.status, 422);
  assert.equal(s.body.error.details.cause_code, "DIGEST_MISMATCH");

  // A second daemon, whose policy accepts the repository but keeps the default for RAM snapshots.
  const lax = join(dir, "lax.json");
  await writeFile(
    lax,
    JSON.stringify({
      version: 1,
      keys: { release: { path: "keys/release.pub" } },
      scopes: [{ match: `${host}/demo/**`, action: "accept" }],
    }),
  );
  const d2 = await startDaemon(join(dir, "d2"), checker, ["--policy", lax]);
  daemons.push(d2);
  s = await d2.api.post("/start", { manifest: `${host}/demo/vm:snap-unsigned` });
  assert.equal(s.status, 403, JSON.stringify(s.body));
  assert.match(s.body.error.message, /carries a RAM snapshot, and unsigned RAM snapshots may not run/);
  s = await d2.api.post("/start", { manifest: `${host}/demo/vm:snap`, overrides: { name: "clone" } });
  assert.equal(s.status, 202, JSON.stringify(s.body));
  const first = Number((await serialLine(d2.api, "clone", /^OVMS-COUNTER: \d+$/, 120_000)).split(" ")[1]);
  assert.ok(first >= 2, `the signed snapshot restored and counts on from ${first}`);
});
