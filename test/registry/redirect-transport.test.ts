import { test } from "node:test";
import assert from "node:assert/strict";
import { RedirectTransport } from "../../src/registry/redirect-transport.js";
import { FakeTransport, answer, get } from "./fake-transport.js";

test("reads follow redirects (relative and absolute); writes and accepted statuses do not", async () => {
  const inner = new FakeTransport((req) => {
    if (req.url.pathname === "/v2/a/blobs/x") return answer(req.url, 307, { location: "/storage/x?sig=1" });
    if (req.url.pathname === "/storage/x") return answer(req.url, 302, { location: "http://cdn.example/x" });
    return answer(req.url, 200, {}, "bytes");
  });
  const t = new RedirectTransport(inner);
  const res = await t.send(get("http://r.example/v2/a/blobs/x", { headers: { range: "bytes=5-" } }));
  assert.equal(res.statusCode, 200);
  assert.equal(res.url.toString(), "http://cdn.example/x");
  assert.deepEqual(
    inner.requests.map((r) => [r.url.toString(), r.headers?.range]),
    [
      ["http://r.example/v2/a/blobs/x", "bytes=5-"],
      ["http://r.example/storage/x?sig=1", "bytes=5-"],
      ["http://cdn.example/x", "bytes=5-"],
    ],
  );

  const put = await t.send(get("http://r.example/v2/a/blobs/x", { method: "PUT", ok: [201] }));
  assert.equal(put.statusCode, 307, "a write's redirect goes back to the caller");
  const asked = await t.send(get("http://r.example/v2/a/blobs/x", { ok: [307] }));
  assert.equal(asked.statusCode, 307);
});

test("a redirect loop is an error after 10 hops", async () => {
  const inner = new FakeTransport((req) => answer(req.url, 301, { location: req.url.pathname }));
  await assert.rejects(new RedirectTransport(inner).send(get("http://r.example/loop")), /too many redirects/);
  assert.equal(inner.requests.length, 11);
});
