import { test } from "node:test";
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { isOvmsError } from "../../src/core/errors.js";
import { RegistryError, networkError } from "../../src/registry/registry-error.js";
import { backoff } from "../../src/registry/retry-policy.js";
import { RetryTransport } from "../../src/registry/retry-transport.js";
import { FakeTransport, answer, fakeClock, get } from "./fake-transport.js";

const policy = { attempts: 4, baseMs: 100, maxMs: 2_000 };
const URL_ = "http://r.example/v2/a/manifests/1";
const refused = () => Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });

test("a 503 twice, then 200: three requests, waiting as the policy says", async () => {
  const inner = new FakeTransport((req, n) => answer(req.url, n < 3 ? 503 : 200));
  const clock = fakeClock();
  const res = await new RetryTransport(inner, policy, clock).send(get(URL_));
  assert.equal(res.statusCode, 200);
  assert.equal(inner.requests.length, 3);
  assert.deepEqual(clock.waits, [backoff(policy, 1, () => 0.5), backoff(policy, 2, () => 0.5)]);
});

test("a transient answer that persists: `attempts` requests, then an error that says so", async () => {
  const inner = new FakeTransport((req) =>
    answer(req.url, 429, {}, JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] })),
  );
  const clock = fakeClock();
  await assert.rejects(
    new RetryTransport(inner, policy, clock).send(get(URL_, { context: "manifest x" })),
    (e) => {
      assert.ok(e instanceof RegistryError);
      assert.equal(e.code, "TOOMANYREQUESTS");
      assert.equal(e.attempts, 4);
      assert.equal(e.transient, true);
      assert.match(
        e.message,
        /^manifest x: GET "http:\/\/r\.example\/v2\/a\/manifests\/1": 429 TOOMANYREQUESTS: slow down .*\(after 4 attempts\)$/,
      );
      return true;
    },
  );
  assert.equal(inner.requests.length, 4);
  assert.equal(clock.waits.length, 3);
});

test("Retry-After is honoured (capped at maxMs) instead of the backoff", async () => {
  const inner = new FakeTransport((req, n) =>
    answer(
      req.url,
      n === 1 ? 503 : n === 2 ? 429 : 200,
      n === 1 ? { "retry-after": "1" } : { "retry-after": "3600" },
    ),
  );
  const clock = fakeClock();
  await new RetryTransport(inner, policy, clock).send(get(URL_));
  assert.deepEqual(clock.waits, [1_000, 2_000]);
});

test("requests not marked retryable are never repeated: writes, streamed bodies, retry=false", async () => {
  const requests = [
    get(URL_, { method: "PATCH", body: Buffer.from("x"), ok: [202] }),
    get(URL_, { method: "PUT", body: Readable.from([Buffer.from("x")]), ok: [201], retry: true }),
    get(URL_, { method: "POST", ok: [202] }),
    get(URL_, { retry: false }),
  ];
  for (const req of requests) {
    const inner = new FakeTransport((r) => answer(r.url, 503));
    const clock = fakeClock();
    await assert.rejects(new RetryTransport(inner, policy, clock).send(req), (e) => {
      assert.ok(e instanceof RegistryError);
      assert.equal(e.attempts, 1);
      assert.doesNotMatch(e.message, /after/);
      return true;
    });
    assert.equal(inner.requests.length, 1, req.method);
    assert.deepEqual(clock.waits, []);

    const dropped = new FakeTransport(() => {
      throw networkError(req.method, req.url, refused());
    });
    await assert.rejects(new RetryTransport(dropped, policy, fakeClock()).send(req), /ECONNREFUSED/);
    assert.equal(dropped.requests.length, 1, req.method);
  }
});

test("network failures are retried, other failures and refusals are not; ok statuses come back as they are", async () => {
  const flaky = new FakeTransport((req, n) => {
    if (n < 3) throw networkError("GET", req.url, refused());
    return answer(req.url, 200);
  });
  assert.equal((await new RetryTransport(flaky, policy, fakeClock()).send(get(URL_))).statusCode, 200);
  assert.equal(flaky.requests.length, 3);

  const down = new FakeTransport((req) => {
    throw networkError("GET", req.url, refused());
  });
  await assert.rejects(new RetryTransport(down, policy, fakeClock()).send(get(URL_)), (e) => {
    assert.ok(isOvmsError(e, "REGISTRY_UNREACHABLE"));
    assert.equal((e as RegistryError).attempts, 4);
    return true;
  });

  const tls = new FakeTransport(() => {
    throw new RegistryError("TLS_ERROR", "not trusted", {
      cause: Object.assign(new Error("self-signed"), { code: "SELF_SIGNED_CERT_IN_CHAIN" }),
    });
  });
  await assert.rejects(new RetryTransport(tls, policy, fakeClock()).send(get(URL_)), /not trusted/);
  assert.equal(tls.requests.length, 1);

  const notFound = new FakeTransport((req) => answer(req.url, 404));
  assert.equal(
    (await new RetryTransport(notFound, policy, fakeClock()).send(get(URL_, { ok: [200, 404] }))).statusCode,
    404,
  );
  await assert.rejects(new RetryTransport(notFound, policy, fakeClock()).send(get(URL_)), (e) =>
    isOvmsError(e, "NOT_FOUND"),
  );
  assert.equal(notFound.requests.length, 2, "a 404 is not retried");
});

test("a cancel during the wait between attempts ends the request at once with CANCELLED", async () => {
  const inner = new FakeTransport((req) => answer(req.url, 503));
  const controller = new AbortController();
  const slow = { attempts: 5, baseMs: 60_000, maxMs: 60_000 };
  const started = Date.now();
  const sent = new RetryTransport(inner, slow).send(get(URL_, { signal: controller.signal }));
  setTimeout(() => controller.abort(), 20);
  await assert.rejects(sent, (e) => isOvmsError(e, "CANCELLED"));
  assert.ok(Date.now() - started < 5_000);
  assert.equal(inner.requests.length, 1);
});
