import { test } from "node:test";
import assert from "node:assert/strict";
import { resolveInstanceRef } from "../../src/runtime/instance-ref.js";

const a = { id: "3f2a9c1e-0b4d-4e8f-9a7b-1c2d3e4f5a6b", name: "web" };
const b = { id: "3f2a9c77-1111-4222-8333-444455556666", name: "db" };
const c = { id: "abcdef01-2345-4678-9abc-def012345678", name: "3f2a9c" };
const all = [a, b, c];

const notFound = (re: RegExp) => (e: any) => e.code === "NOT_FOUND" && re.test(e.message);

test("an instance is found by id, by name, and by an id prefix with or without dashes", () => {
  assert.equal(resolveInstanceRef(a.id, all), a);
  assert.equal(resolveInstanceRef("db", all), b);
  assert.equal(resolveInstanceRef("3f2a9c1e", all), a);
  assert.equal(resolveInstanceRef("3f2a9c1e-0b4d", all), a, "with the dashes `ovm status` users copy");
  assert.equal(resolveInstanceRef("3f2a9c1e0b4d", all), a, "without them, as `ovm ps` shows ids");
  assert.equal(resolveInstanceRef(b.id.replace(/-/g, ""), all), b, "a whole id without dashes");
});

test("an exact name wins over an id prefix it also is", () => {
  assert.equal(resolveInstanceRef("3f2a9c", all), c);
});

test("an ambiguous prefix is refused with NOT_FOUND saying so", () => {
  assert.throws(() => resolveInstanceRef("3f2a9c", [a, b]), notFound(/start of 2 instance ids; give more/));
  assert.throws(() => resolveInstanceRef("3f2a-9c", [a, b]), notFound(/start of 2 instance ids/));
});

test("short prefixes, non-hex references and unknown ones are NOT_FOUND naming the reference", () => {
  assert.throws(() => resolveInstanceRef("3f2a9", all), notFound(/no instance "3f2a9"/));
  assert.throws(() => resolveInstanceRef("web-9", all), notFound(/no instance "web-9"/));
  assert.throws(() => resolveInstanceRef("ffffff", all), notFound(/no instance "ffffff"/));
  assert.throws(() => resolveInstanceRef("3F2A9C1E", all), notFound(/no instance/), "ids are lower case");
  assert.throws(() => resolveInstanceRef("anything", []), notFound(/no instance "anything"/));
});
