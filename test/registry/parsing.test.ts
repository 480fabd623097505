import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { mergeScopes, parseChallenges } from "../../src/registry/auth.js";
import { RegistryClient } from "../../src/registry/client.js";
import { isLoopbackHost } from "../../src/registry/scheme-fallback.js";
import { loadCredential, removeCredential, saveCredential } from "../../src/registry/credentials.js";
import { parsePlatform, selectPlatform } from "../../src/registry/platform.js";
import { redactUrl, responseError } from "../../src/registry/registry-error.js";
import { parseNextLink } from "../../src/registry/tags.js";
import { registryHost } from "../../src/cli/commands/login.js";
import { tempDir } from "../helpers.js";

test("WWW-Authenticate: bearer with quoted commas, basic, several challenges in one header", () => {
  assert.deepEqual(
    parseChallenges(
      'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope"',
    ),
    [
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.example/token",
          service: "registry.example",
          scope: "repository:a/b:pull,push",
          error: "insufficient_scope",
        },
      },
    ],
  );
  assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [
    { scheme: "basic", params: { realm: "Registry Realm" } },
  ]);
  assert.deepEqual(parseChallenges('Basic realm="x", Bearer realm="https://t/", service=s'), [
    { scheme: "basic", params: { realm: "x" } },
    { scheme: "bearer", params: { realm: "https://t/", service: "s" } },
  ]);
  assert.deepEqual(parseChallenges(undefined), []);
});

test("scopes merge per resource, sorted", () => {
  assert.deepEqual(
    mergeScopes(["repository:a:pull", "repository:a:push", "repository:b:pull", "repository:a:pull"]),
    ["repository:a:pull,push", "repository:b:pull"],
  );
});

test("URLs in errors lose passwords and secret query values; messages lead with the request", () => {
  assert.equal(
    redactUrl("https://user:pw@r.example/v2/a/blobs/uploads/abc?_state=SECRET&digest=sha256:1"),
    "https://r.example/v2/a/blobs/uploads/abc?_state=REDACTED&digest=sha256%3A1",
  );
  const e = responseError(
    "GET",
    "https://r.example/v2/a/manifests/x",
    404,
    JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] }),
  );
  assert.equal(e.code, "MANIFEST_UNKNOWN");
  assert.equal(e.status, 404);
  assert.equal(
    e.message,
    'GET "https://r.example/v2/a/manifests/x": 404 MANIFEST_UNKNOWN: manifest unknown (no such tag or manifest in this repository)',
  );
  const d = responseError("PUT", "https://r.example/v2/a/manifests/1", 403, "");
  assert.equal(d.code, "DENIED");
});

test("plain HTTP only for loopback registries (after HTTPS failed) unless asked", () => {
  for (const h of ["127.0.0.1:5000", "127.1.2.3", "localhost:5000", "[::1]:5000", "::1"])
    assert.equal(isLoopbackHost(h), true, h);
  for (const h of ["10.0.0.1:5000", "registry.example", "128.0.0.1", "[2001:db8::1]:443"])
    assert.equal(isLoopbackHost(h), false, h);
  const c = new RegistryClient({ credentials: async () => undefined });
  assert.equal(
    c.baseUrl("127.0.0.1:5000").protocol,
    "https:",
    "HTTPS first, HTTP once a loopback registry proves to speak it",
  );
  assert.equal(c.baseUrl("registry.example").protocol, "https:");
  assert.equal(c.baseUrl("docker.io").host, "registry-1.docker.io");
  assert.equal(
    new RegistryClient({ plainHttp: true }).baseUrl("registry.example:5000").toString(),
    "http://registry.example:5000/",
  );
});

test("Link header: the next page, relative or absolute", () => {
  const base = new URL("http://r/v2/a/tags/list?n=2");
  assert.equal(
    parseNextLink('</v2/a/tags/list?n=2&last=b>; rel="next"', base)?.toString(),
    "http://r/v2/a/tags/list?n=2&last=b",
  );
  assert.equal(parseNextLink("<http://other/x?last=c>; rel=next", base)?.toString(), "http://other/x?last=c");
  assert.equal(parseNextLink('</prev>; rel="prev"', base), undefined);
  assert.equal(parseNextLink(undefined, base), undefined);
});

test("platforms: parse, pick from an index, clear error when absent", () => {
  assert.deepEqual(parsePlatform("linux/arm64/v8"), { os: "linux", architecture: "arm64", variant: "v8" });
  assert.throws(() => parsePlatform("linux"), /expected os\/arch/);
  const d = (arch: string) => ({
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    digest: `sha256:${arch[0].repeat(64)}` as `sha256:${string}`,
    size: 1,
    platform: { os: "linux", architecture: arch },
  });
  const index = { schemaVersion: 2 as const, manifests: [d("amd64"), d("arm64")] };
  assert.equal(
    selectPlatform(index, { os: "linux", architecture: "arm64" }, "x").platform?.architecture,
    "arm64",
  );
  assert.throws(
    () => selectPlatform(index, { os: "linux", architecture: "s390x" }, "x"),
    /no manifest for linux\/s390x .*linux\/amd64, linux\/arm64/,
  );
});

test("docker config: login writes base64 auth (0600), logout removes it, Docker Hub uses its historical key", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "docker", "config.json");
  await mkdir(join(dir, "docker"));
  await writeFile(path, JSON.stringify({ auths: {}, psFormat: "keep me" }));
  assert.equal(await saveCredential("127.0.0.1:5000", "u", "p:w", path), "file");
  assert.equal(await saveCredential("docker.io", "hub", "pw", path), "file");
  const config = JSON.parse(await readFile(path, "utf8"));
  assert.equal(config.psFormat, "keep me");
  assert.equal(config.auths["127.0.0.1:5000"].auth, Buffer.from("u:p:w").toString("base64"));
  assert.ok(config.auths["https://index.docker.io/v1/"]);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await loadCredential("127.0.0.1:5000", path), { username: "u", password: "p:w" });
  assert.deepEqual(await loadCredential("docker.io", path), { username: "hub", password: "pw" });
  assert.equal(await removeCredential("127.0.0.1:5000", path), true);
  assert.equal(await removeCredential("127.0.0.1:5000", path), false);
  assert.equal(await loadCredential("127.0.0.1:5000", path), undefined);
  assert.equal(registryHost("https://Registry.example:5000/v2/"), "Registry.example:5000");
  assert.equal(registryHost("index.docker.io"), "docker.io");
  assert.throws(() => registryHost("not a host"), /not a registry/);
});
