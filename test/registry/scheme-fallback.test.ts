import { test } from "node:test";
import assert from "node:assert/strict";
import { networkError } from "../../src/registry/registry-error.js";
import { SchemeFallback, apiHost } from "../../src/registry/scheme-fallback.js";
import { FakeTransport, answer, get } from "./fake-transport.js";

/** notTls is what a TLS handshake with a plain HTTP server fails with. */
const notTls = (url: URL) =>
  networkError(
    "GET",
    url,
    Object.assign(new Error("SSL routines::wrong version number"), { code: "ERR_SSL_WRONG_VERSION_NUMBER" }),
  );

/** httpOnly answers HTTP and fails every HTTPS handshake, like a registry without TLS. */
const httpOnly = () =>
  new FakeTransport((req) => {
    if (req.url.protocol === "https:") throw notTls(req.url);
    return answer(req.url, 200);
  });

test("a loopback registry that speaks HTTP: HTTPS first, then HTTP, remembered for every later request", async () => {
  const inner = httpOnly();
  const s = new SchemeFallback(inner, "127.0.0.1:5000");
  assert.equal(s.scheme, undefined);
  assert.equal(s.baseUrl().toString(), "https://127.0.0.1:5000/");
  const res = await s.send(get("https://127.0.0.1:5000/v2/"));
  assert.equal(res.url.toString(), "http://127.0.0.1:5000/v2/");
  assert.deepEqual(
    inner.requests.map((r) => r.url.toString()),
    ["https://127.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/"],
  );
  assert.equal(s.scheme, "http");
  assert.equal(s.baseUrl().toString(), "http://127.0.0.1:5000/");
  // A URL built before the scheme was known is rewritten; no HTTPS attempt any more.
  await s.send(get("https://127.0.0.1:5000/v2/a/manifests/1"));
  assert.equal(inner.requests.length, 3);
  assert.equal(inner.requests[2].url.toString(), "http://127.0.0.1:5000/v2/a/manifests/1");
  // Other hosts (a redirect to storage) are left as they are.
  await s.send(get("https://cdn.example/blob")).catch(() => undefined);
  assert.equal(inner.requests[3].url.toString(), "https://cdn.example/blob");
});

test("no fallback for a remote registry, nor once HTTPS has worked; --plain-http is HTTP from the start", async () => {
  const remote = new SchemeFallback(httpOnly(), "registry.example");
  await assert.rejects(remote.send(get("https://registry.example/v2/")), /wrong version number/);
  assert.equal(remote.scheme, undefined);

  let tls = true;
  const flips = new FakeTransport((req) => {
    if (req.url.protocol === "https:" && !tls) throw notTls(req.url);
    return answer(req.url, 200);
  });
  const local = new SchemeFallback(flips, "localhost:5000");
  await local.send(get("https://localhost:5000/v2/"));
  assert.equal(local.scheme, "https");
  tls = false;
  await assert.rejects(local.send(get("https://localhost:5000/v2/")), /wrong version number/);
  assert.equal(flips.requests.length, 2);

  const inner = httpOnly();
  const plain = new SchemeFallback(inner, "registry.example:5000", true);
  assert.equal(plain.scheme, "http");
  assert.equal(plain.baseUrl().toString(), "http://registry.example:5000/");
  await plain.send(get("https://registry.example:5000/v2/"));
  assert.deepEqual(
    inner.requests.map((r) => r.url.protocol),
    ["http:"],
  );
  assert.equal(apiHost("docker.io"), "registry-1.docker.io");
});
