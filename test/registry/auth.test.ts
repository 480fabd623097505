import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Store } from "../../src/store/store.js";
import { RegistryClient } from "../../src/registry/client.js";
import { copy } from "../../src/registry/copy.js";
import { dockerConfigCredentials, loadCredential } from "../../src/registry/credentials.js";
import { isOvmsError } from "../../src/core/errors.js";
import { ovm, ovmJson, tempDir } from "../helpers.js";
import { registry } from "../registry-server.js";
import { buildArtifact, makeDisks } from "./fixtures.js";

test("basic auth (htpasswd): no or wrong credentials give a clear UNAUTHORIZED error; login, push, pull, logout", async (t) => {
  const reg = await registry(t, { auth: "htpasswd", users: { alice: "s3cret" } });
  const dir = await tempDir(t);
  // 5 MiB: the base layer moves in a transfer worker, which must authenticate too.
  const disks = await makeDisks(dir, 5);
  const src = await Store.open(join(dir, "src"));
  const ref = `${reg.host}/private/vm:1`;
  const built = await buildArtifact(src, ref, disks);
  const env = { DOCKER_CONFIG: join(dir, "docker") };

  const anon = await ovm(["--store", src.root, "push", ref], env);
  assert.equal(anon.code, 1);
  assert.match(anon.stderr, /401 UNAUTHORIZED/);
  assert.match(anon.stderr, /ovm login/);

  const wrong = await ovm(["login", reg.host, "-u", "alice", "--password-stdin"], env, "nope\n");
  assert.equal(wrong.code, 1);
  assert.match(
    wrong.stderr,
    /login to 127\.0\.0\.1:\d+ as "alice" failed: .*401 UNAUTHORIZED.*credentials were rejected/,
  );
  await assert.rejects(
    readFile(join(env.DOCKER_CONFIG, "config.json")),
    "nothing stored after a failed login",
  );

  const ok = await ovm(["login", reg.host, "-u", "alice", "--password-stdin"], env, "s3cret\n");
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /Login Succeeded/);
  const config = JSON.parse(await readFile(join(env.DOCKER_CONFIG, "config.json"), "utf8"));
  assert.equal(config.auths[reg.host].auth, Buffer.from("alice:s3cret").toString("base64"));

  const pushed = await ovmJson(["--store", src.root, "push", ref], env);
  assert.equal(pushed.digest, built.descriptor.digest);
  const pulled = await ovmJson(["--store", join(dir, "dst"), "pull", ref], env);
  assert.equal(pulled.digest, built.descriptor.digest);

  const out = await ovmJson(["logout", reg.host], env);
  assert.equal(out.removed, true);
  assert.equal(await loadCredential(reg.host, join(env.DOCKER_CONFIG, "config.json")), undefined);
  const after = await ovm(["--store", join(dir, "dst2"), "pull", ref], env);
  assert.equal(after.code, 1);
  assert.match(after.stderr, /UNAUTHORIZED/);
});

test("token auth: scopes asked per repository (pull, pull+push, mount source), anonymous refused, a pull-only user denied push", async (t) => {
  const reg = await registry(t, {
    auth: "token",
    users: { alice: "a-pass", bob: "b-pass" },
    grants: (user, _repo, asked) =>
      user === "alice" ? asked : user === "bob" ? asked.filter((a) => a === "pull") : [],
  });
  const issuer = reg.issuer!;
  const dir = await tempDir(t);
  const disks = await makeDisks(dir, 5);
  const src = await Store.open(join(dir, "src"));
  const ref = `${reg.host}/team/vm:1`;
  const built = await buildArtifact(src, ref, disks);
  const client = (user?: string, password?: string) => {
    const c = new RegistryClient({
      credentials: async () => (user ? { username: user, password } : undefined),
    });
    t.after(() => c.close());
    return c;
  };

  // Anonymous: the issuer grants nothing, so the registry refuses.
  await assert.rejects(copy(src, ref, client().repository(ref, { push: true }), "1"), (e: unknown) =>
    isOvmsError(e, "UNAUTHORIZED"),
  );
  // A wrong password: the token server itself refuses, and says so.
  await assert.rejects(
    copy(src, ref, client("alice", "bad").repository(ref, { push: true }), "1"),
    /token server .* refused the credentials of "alice"/,
  );

  issuer.requests.length = 0;
  const alice = client("alice", "a-pass");
  const r = await copy(src, ref, alice.repository(ref, { push: true }), "1");
  assert.equal(r.digest, built.descriptor.digest);
  assert.ok(
    issuer.requests.length >= 1 && issuer.requests.length <= 2,
    `one token for the push (asked ${issuer.requests.length})`,
  );
  assert.deepEqual(issuer.requests[0].scopes, ["repository:team/vm:pull,push"]);
  assert.equal(issuer.requests[0].service, "ovms-test-registry");
  assert.equal(issuer.requests[0].user, "alice");

  // Cross-repository mount needs pull on the source too.
  issuer.requests.length = 0;
  const m = await copy(
    alice.repository(ref),
    "1",
    alice.repository(`${reg.host}/other/vm`, { push: true }),
    "1",
  );
  assert.equal(m.blobsMounted, 4, "config, kernel, base, diff");
  assert.ok(
    issuer.requests.some(
      (q) =>
        q.scopes.includes("repository:other/vm:pull,push") && q.scopes.includes("repository:team/vm:pull"),
    ),
    JSON.stringify(issuer.requests),
  );

  // bob may pull, not push.
  const bob = client("bob", "b-pass");
  const dst = await Store.open(join(dir, "bob"));
  const pulled = await copy(bob.repository(ref), "1", dst, ref);
  assert.equal(pulled.digest, built.descriptor.digest);
  await assert.rejects(
    copy(src, ref, bob.repository(`${reg.host}/team/vm`, { push: true }), "2"),
    (e: unknown) => {
      assert.ok(isOvmsError(e, "UNAUTHORIZED") || isOvmsError(e, "DENIED"), String(e));
      assert.match(
        (e as Error).message,
        /(POST|PUT) "http:\/\/127\.0\.0\.1:\d+\/v2\/team\/vm\/.*": 401 UNAUTHORIZED.*\(the credentials do not grant repository:team\/vm:pull,push\)$/,
      );
      return true;
    },
  );

  // The CLI goes through the same flow with the docker config written by `ovm login`.
  const env = { DOCKER_CONFIG: join(dir, "docker") };
  const login = await ovm(["login", reg.host, "-u", "alice", "-p", "a-pass"], env);
  assert.equal(login.code, 0, login.stderr);
  assert.match(login.stderr, /insecure/);
  const tags = await ovmJson(["tags", `${reg.host}/team/vm`], env);
  assert.deepEqual(tags.tags, ["1"]);
});

test("credentials come from a docker credential helper when the config names one (credHelpers, credsStore)", async (t) => {
  const reg = await registry(t, { auth: "htpasswd", users: { carol: "c-pass" } });
  const dir = await tempDir(t);
  const bin = join(dir, "bin");
  await mkdir(bin);
  const log = join(dir, "helper.log");
  // A credential helper speaking the docker-credential-helpers protocol from a file.
  await writeFile(
    join(bin, "docker-credential-ovmstest"),
    `#!/bin/sh
echo "$1" >> ${log}
case "$1" in
  get) read host; if [ "$host" = "${reg.host}" ]; then echo '{"ServerURL":"${reg.host}","Username":"carol","Secret":"c-pass"}'; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) cat > ${join(dir, "stored.json")} ;;
  erase) read host; echo "$host" > ${join(dir, "erased")} ;;
esac
`,
  );
  await chmod(join(bin, "docker-credential-ovmstest"), 0o755);
  const cfgDir = join(dir, "docker");
  await mkdir(cfgDir);
  await writeFile(
    join(cfgDir, "config.json"),
    JSON.stringify({ credHelpers: { [reg.host]: "ovmstest" }, auths: {} }),
  );
  const env = { DOCKER_CONFIG: cfgDir, PATH: `${bin}:${process.env.PATH}` };
  process.env.PATH = env.PATH;
  t.after(() => {
    process.env.PATH = process.env
      .PATH!.split(":")
      .filter((p) => p !== bin)
      .join(":");
  });

  assert.deepEqual(await dockerConfigCredentials(join(cfgDir, "config.json"))(reg.host), {
    username: "carol",
    password: "c-pass",
  });
  assert.equal(await loadCredential("other.example:5000", join(cfgDir, "config.json")), undefined);

  const disks = await makeDisks(dir, 1);
  const src = await Store.open(join(dir, "src"));
  const ref = `${reg.host}/helper/vm:1`;
  await buildArtifact(src, ref, disks);
  const pushed = await ovm(["--store", src.root, "push", ref], env);
  assert.equal(pushed.code, 0, pushed.stderr);

  // login stores through the helper, logout erases through it; the file keeps no password.
  await writeFile(join(cfgDir, "config.json"), JSON.stringify({ credsStore: "ovmstest" }));
  const login = await ovm(["login", reg.host, "-u", "carol", "--password-stdin"], env, "c-pass");
  assert.equal(login.code, 0, login.stderr);
  assert.deepEqual(JSON.parse(await readFile(join(dir, "stored.json"), "utf8")), {
    ServerURL: reg.host,
    Username: "carol",
    Secret: "c-pass",
  });
  assert.doesNotMatch(await readFile(join(cfgDir, "config.json"), "utf8"), /c-pass|auth"/);
  const logout = await ovm(["logout", reg.host], env);
  assert.equal(logout.code, 0, logout.stderr);
  assert.equal((await readFile(join(dir, "erased"), "utf8")).trim(), reg.host);
});

test("TLS: a loopback registry serving HTTPS is used over HTTPS; --ca-file trusts its certificate, without it the error says so", async (t) => {
  const reg = await registry(t, { tls: true });
  const dir = await tempDir(t);
  const disks = await makeDisks(dir, 5);
  const src = await Store.open(join(dir, "src"));
  const ref = `${reg.host}/tls/vm:1`;
  const built = await buildArtifact(src, ref, disks);
  const env = { DOCKER_CONFIG: join(dir, "docker") };

  const untrusted = await ovm(["--store", src.root, "push", ref], env);
  assert.equal(untrusted.code, 1);
  assert.match(
    untrusted.stderr,
    /https:\/\/127\.0\.0\.1:\d+\/v2\/tls\/vm\/.*certificate is not trusted.*--ca-file/,
  );

  const pushed = await ovmJson(["--store", src.root, "push", "--ca-file", reg.caFile!, ref], env);
  assert.equal(pushed.digest, built.descriptor.digest);
  const pulled = await ovmJson(["--store", join(dir, "dst"), "pull", "--ca-file", reg.caFile!, ref], env);
  assert.equal(pulled.digest, built.descriptor.digest);

  const plain = await ovm(["--store", join(dir, "dst2"), "pull", "--plain-http", ref], env);
  assert.equal(plain.code, 1);
  assert.match(plain.stderr, /GET "http:\/\/127\.0\.0\.1:\d+\/v2\/tls\/vm\/manifests\/1": 400/);
});
