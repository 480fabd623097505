import { test } from "node:test";
import assert from "node:assert/strict";
import { defaultMethod } from "../../../src/runtime/qemu/snapshot-take.js";

test("snapshots of a running guest are live by default, but copied under TCG before QEMU 9.0 (rfc §5.8)", () => {
  assert.equal(defaultMethod("kvm", "7.2.22"), "live", "KVM tracks dirty pages without TCG's TLB");
  assert.equal(defaultMethod("tcg", "7.2.22"), "copy", "QEMU 7.2 under TCG loses writes during precopy");
  assert.equal(defaultMethod("tcg", "8.2.2"), "copy");
  assert.equal(defaultMethod("tcg", "9.0.0"), "live", "fixed in 9.0 (03bfc2188f061)");
  assert.equal(defaultMethod("tcg", "10.1.0"), "live");
  assert.equal(defaultMethod("tcg", "unknown"), "copy", "a version it cannot read is taken as old");
});
