import { test } from "node:test";
import assert from "node:assert/strict";
import { canTransition, transition } from "../../src/runtime/lifecycle.js";
import { TERMINAL_STATES, type InstanceState } from "../../src/runtime/types.js";

const STATES: InstanceState[] = [
  "created",
  "starting",
  "running",
  "stalled",
  "paused",
  "stopping",
  "exited",
  "failed",
];

// The lifecycle of RFC §6.5, written out pair by pair: everything not listed is refused.
const ALLOWED = new Set([
  "created→starting",
  "created→exited",
  "created→failed",
  "starting→running",
  "starting→paused",
  "starting→stopping",
  "starting→exited",
  "starting→failed",
  "running→stalled",
  "running→paused",
  "running→stopping",
  "running→exited",
  "running→failed",
  "stalled→running",
  "stalled→paused",
  "stalled→stopping",
  "stalled→exited",
  "stalled→failed",
  "paused→running",
  "paused→stopping",
  "paused→exited",
  "paused→failed",
  "stopping→exited",
  "stopping→failed",
]);

test("every from→to pair of the lifecycle is allowed or refused as the contract says", () => {
  let allowed = 0;
  for (const from of STATES) {
    for (const to of STATES) {
      const want = ALLOWED.has(`${from}→${to}`);
      assert.equal(canTransition(from, to), want, `${from}→${to}`);
      const rec = { state: from };
      if (want) {
        transition(rec, to);
        assert.equal(rec.state, to, `${from}→${to} is applied`);
        allowed++;
      } else {
        assert.throws(
          () => transition(rec, to),
          (e: any) => e.code === "INTERNAL" && e.message.includes(`from ${from} to ${to}`),
          `${from}→${to} is refused`,
        );
        assert.equal(rec.state, from, `a refused ${from}→${to} leaves the state as it was`);
      }
    }
  }
  assert.equal(allowed, ALLOWED.size);
});

test("terminal states never change, and staying in a state is not a transition", () => {
  for (const s of TERMINAL_STATES) for (const to of STATES) assert.equal(canTransition(s, to), false);
  for (const s of STATES) assert.equal(canTransition(s, s), false, s);
});

test("every live state may fail and exit", () => {
  for (const s of STATES.filter((x) => !TERMINAL_STATES.has(x))) {
    assert.ok(canTransition(s, "failed"), s);
    assert.ok(canTransition(s, "exited"), s);
  }
});
