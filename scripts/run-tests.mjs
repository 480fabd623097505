#!/usr/bin/env node
// Runs the test suite: the compiled tests under dist/test with Node's test runner.
// `node scripts/run-tests.mjs [filter]` runs only test files whose path contains `filter`.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

const root = new URL("..", import.meta.url).pathname;
const filter = process.argv[2] ?? "";

function walk(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith(".test.js") && p.includes(filter) ? [p] : [];
  });
}

const check = spawnSync(process.execPath, [join(root, "scripts/gen-types.mjs"), "--check"], { stdio: "inherit" });
if (check.status !== 0) process.exit(check.status ?? 1);

const files = walk(join(root, "dist/test")).sort();
if (files.length === 0) {
  console.error("no test files found under dist/test");
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--test", "--test-reporter=spec", ...files], { stdio: "inherit", cwd: root });
process.exit(r.status ?? 1);
