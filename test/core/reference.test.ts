import { test } from "node:test";
import assert from "node:assert/strict";
import { parseReference, formatReference, familiarReference } from "../../src/core/reference.js";
import { OvmsError } from "../../src/core/errors.js";

const H = "a".repeat(64);

test("docker-style defaults", () => {
  assert.deepEqual(parseReference("ubuntu"), {
    registry: "docker.io",
    repository: "library/ubuntu",
    tag: "latest",
  });
  assert.deepEqual(parseReference("example/vm:1.0"), {
    registry: "docker.io",
    repository: "example/vm",
    tag: "1.0",
  });
  assert.equal(familiarReference(parseReference("ubuntu")), "ubuntu:latest");
});

test("registries with ports, localhost, IPs and digests", () => {
  assert.deepEqual(parseReference("127.0.0.1:5000/demo/vm:1.0"), {
    registry: "127.0.0.1:5000",
    repository: "demo/vm",
    tag: "1.0",
  });
  assert.deepEqual(parseReference("localhost/vm"), {
    registry: "localhost",
    repository: "vm",
    tag: "latest",
  });
  const r = parseReference(`reg.example.com:443/a/b@sha256:${H}`);
  assert.equal(r.digest, `sha256:${H}`);
  assert.equal(r.tag, undefined);
  assert.equal(formatReference(r), `reg.example.com:443/a/b@sha256:${H}`);
  assert.equal(formatReference(parseReference(`x/y:t@sha256:${H}`)), `docker.io/x/y:t@sha256:${H}`);
});

test("bad references get a clear INVALID_REFERENCE error", () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    ["Foo/bar", /lowercase/],
    ["a/b:-bad", /tag "-bad"/],
    ["a//b", /path component ""/],
    ["a/b@sha256:123", /not a sha256 digest/],
    ["a b", /whitespace/],
    ["reg.io:5000/", /missing repository/],
  ];
  for (const [input, why] of cases) {
    assert.throws(
      () => parseReference(input),
      (e: unknown) => {
        assert.ok(e instanceof OvmsError && e.code === "INVALID_REFERENCE", `${input}: ${String(e)}`);
        assert.match(e.message, why);
        return true;
      },
    );
  }
});
