import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isOvmsError } from "../../src/core/errors.js";
import { MediaType } from "../../src/core/media-types.js";
import type { ImageManifest } from "../../src/core/oci.js";
import { Store } from "../../src/store/store.js";
import { generateKeyPair, loadSigningKey } from "../../src/sign/keys.js";
import { loadPolicy, parsePolicy, patternRegExp, ruleFor } from "../../src/sign/policy.js";
import { decide, enforce } from "../../src/sign/admission.js";
import { signManifest, storeSignature } from "../../src/sign/sign.js";
import { tempDir } from "../helpers.js";

test("patterns: * stays in one component, ** spans any number; the longest literal prefix wins", async () => {
  assert.ok(patternRegExp("127.0.0.1:5000/prod/**").test("127.0.0.1:5000/prod/a/b"));
  assert.ok(patternRegExp("127.0.0.1:5000/prod/**").test("127.0.0.1:5000/prod"));
  assert.ok(!patternRegExp("127.0.0.1:5000/prod/**").test("127.0.0.1:5000/production/x"));
  assert.ok(patternRegExp("r.example.com/dev/*").test("r.example.com/dev/vm"));
  assert.ok(!patternRegExp("r.example.com/dev/*").test("r.example.com/dev/a/vm"));
  assert.ok(!patternRegExp("r.example.com/dev/vm").test("r.example.com/dev/vmx"));
  const p = await parsePolicy(
    {
      version: 1,
      scopes: [
        { match: "127.0.0.1:5000/**", action: "accept" },
        { match: "127.0.0.1:5000/prod/**", action: "reject" },
        { match: "**", action: "accept" },
      ],
    },
    "/p.json",
  );
  assert.equal(
    ruleFor(p, { repository: "127.0.0.1:5000/prod/vm" }).name,
    'scopes[1] (match "127.0.0.1:5000/prod/**")',
  );
  assert.equal(
    ruleFor(p, { repository: "127.0.0.1:5000/dev/vm" }).name,
    'scopes[0] (match "127.0.0.1:5000/**")',
  );
  assert.equal(ruleFor(p, { repository: "docker.io/library/x" }).name, 'scopes[2] (match "**")');
  assert.equal(ruleFor(p, { local: true }).name, "local");
});

test("a policy that cannot be used is refused with every problem named, never read as no policy", async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, "policy.json");
  await writeFile(
    file,
    JSON.stringify({
      version: 1,
      keys: { missing: { path: "nope.pub" } },
      scopes: [
        { match: "x.io/**", action: "requireSigned" },
        { match: "y.io/**", action: "requireSigned", keys: ["ghost"] },
        { match: "z.io/**", action: "maybe" },
      ],
      surprise: 1,
    }),
  );
  await assert.rejects(loadPolicy(file), (e) => {
    assert.ok(isOvmsError(e, "CONFIG_INVALID"), String(e));
    for (const p of ["surprise", "scopes[2].action"])
      assert.match(e.message, new RegExp(p.replace(/[[\]]/g, "\\$&")));
    return true;
  });
  const file2 = join(dir, "policy2.json");
  await writeFile(
    file2,
    JSON.stringify({
      version: 1,
      keys: { missing: { path: "nope.pub" } },
      scopes: [
        { match: "x.io/**", action: "requireSigned" },
        { match: "y.io/**", action: "requireSigned", keys: ["ghost"] },
      ],
    }),
  );
  await assert.rejects(loadPolicy(file2), (e) => {
    assert.ok(isOvmsError(e, "CONFIG_INVALID"));
    assert.match(e.message, /keys\.missing: public key .*nope\.pub: no such file/);
    assert.match(e.message, /scopes\[0\]\.keys: requireSigned needs at least one key/);
    assert.match(e.message, /scopes\[1\]\.keys\[0\]: no key named "ghost"/);
    return true;
  });
  await assert.rejects(loadPolicy(join(dir, "absent.json")), (e) => isOvmsError(e, "FILE_NOT_FOUND"));
  await writeFile(file, "{not json");
  await assert.rejects(loadPolicy(file), /not valid JSON/);
});

test("decisions: reject, accept, requireSigned (unsigned, signed), RAM snapshots need a signature unless accepted, local", async (t) => {
  const dir = await tempDir(t);
  const store = await Store.open(join(dir, "store"));
  const pair = generateKeyPair("pw");
  await writeFile(join(dir, "release.key"), pair.privatePem);
  await writeFile(join(dir, "release.pub"), pair.publicPem);
  const m: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciEmpty, ...(await store.putBlob("{}")) },
    layers: [],
  };
  const desc = await store.putManifest(m);
  const doc = {
    version: 1,
    keys: { release: { path: "release.pub" } },
    scopes: [
      { match: "reg.io/prod/**", action: "requireSigned", keys: ["release"] },
      { match: "reg.io/open/**", action: "accept" },
      { match: "reg.io/bad/**", action: "reject" },
    ],
  };
  await writeFile(join(dir, "policy.json"), JSON.stringify(doc));
  const policy = await loadPolicy(join(dir, "policy.json"));
  const req = (repository: string, ramSnapshot = false) => ({
    reference: `${repository}:1`,
    descriptor: desc,
    ramSnapshot,
    from: { repository },
  });

  let d = await decide(policy, req("reg.io/bad/vm"), store);
  assert.deepEqual([d.allowed, d.rule], [false, 'scopes[2] (match "reg.io/bad/**")']);
  d = await decide(policy, req("reg.io/other/vm"), store);
  assert.deepEqual([d.allowed, d.rule], [false, "default"], "no scope: the default rejects");
  d = await decide(policy, req("reg.io/open/vm"), store);
  assert.equal(d.allowed, true);
  d = await decide(policy, req("reg.io/open/vm", true), store);
  assert.equal(d.allowed, false, "an unsigned RAM snapshot is refused even in an accept scope");
  assert.match(d.reason, /unsigned RAM snapshots may not run/);
  await assert.rejects(enforce(policy, req("reg.io/prod/vm"), store), (e) => {
    assert.ok(isOvmsError(e, "POLICY_DENIED"));
    assert.match(
      e.message,
      /refuses reg\.io\/prod\/vm:1 \(sha256:[a-f0-9]{64}\): rule scopes\[0\] \(match "reg\.io\/prod\/\*\*"\) requires a signature by release, and it has no signature/,
    );
    return true;
  });

  const key = await loadSigningKey(join(dir, "release.key"), async () => "pw");
  await storeSignature(store, await signManifest(desc, key));
  d = await decide(policy, req("reg.io/prod/vm"), store);
  assert.equal(d.allowed, true);
  assert.equal(d.signer?.keyName, "release");
  d = await decide(policy, req("reg.io/open/vm", true), store);
  assert.equal(d.allowed, true, "a signed snapshot passes");

  // ramSnapshots: accept turns the snapshot rule off; local decides for what was made here.
  const lax = await parsePolicy(
    {
      ...doc,
      keys: {},
      scopes: [{ match: "reg.io/open/**", action: "accept" }],
      ramSnapshots: "accept",
      local: { action: "reject" },
    },
    join(dir, "p.json"),
  );
  assert.equal((await decide(lax, req("reg.io/open/vm", true), store)).allowed, true);
  d = await decide(lax, { ...req("x"), from: { local: true } }, store);
  assert.deepEqual([d.allowed, d.rule], [false, "local"]);
  assert.equal(
    (await decide(policy, { ...req("x"), from: { local: true } }, store)).allowed,
    true,
    "local accepts by default",
  );
});
