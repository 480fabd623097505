import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DEFAULT_RETRY_POLICY,
  backoff,
  isTransientStatus,
  retryAfter,
  retryPolicy,
} from "../../src/registry/retry-policy.js";

const policy = { attempts: 5, baseMs: 100, maxMs: 1_000 };

test("backoff doubles from baseMs, is capped at maxMs, and jitters ±25%", () => {
  const mid = () => 0.5;
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((n) => backoff(policy, n, mid)),
    [100, 200, 400, 800, 1000, 1000],
  );
  assert.equal(
    backoff(policy, 2, () => 0),
    150,
  );
  assert.equal(
    backoff(policy, 2, () => 1),
    250,
  );
  for (let i = 0; i < 100; i++) {
    const d = backoff(policy, 3);
    assert.ok(d >= 300 && d <= 500, String(d));
  }
});

test("Retry-After: seconds or an HTTP date, capped at maxMs; anything else is ignored", () => {
  assert.equal(retryAfter(policy, "0"), 0);
  assert.equal(retryAfter(policy, "0.5"), 500);
  assert.equal(retryAfter(policy, "60"), 1_000, "capped");
  assert.equal(retryAfter(policy, ["1", "9"]), 1_000);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(retryAfter(policy, "Thu, 01 Jan 2026 00:00:00 GMT", now), 0);
  assert.equal(retryAfter({ ...policy, maxMs: 10_000 }, "Thu, 01 Jan 2026 00:00:02 GMT", now), 2_000);
  assert.equal(retryAfter(policy, "Wed, 31 Dec 2025 00:00:00 GMT", now), 0, "a past date: at once");
  assert.equal(retryAfter(policy, "soon"), undefined);
  assert.equal(retryAfter(policy, undefined), undefined);
});

test("transient statuses are 429 and 5xx; the policy's defaults fill what is not given", () => {
  assert.deepEqual([200, 401, 404, 429, 500, 503].map(isTransientStatus), [
    false,
    false,
    false,
    true,
    true,
    true,
  ]);
  assert.deepEqual(retryPolicy(), DEFAULT_RETRY_POLICY);
  assert.deepEqual(retryPolicy({ attempts: 2 }), { attempts: 2, baseMs: 200, maxMs: 10_000 });
});
