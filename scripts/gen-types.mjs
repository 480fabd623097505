#!/usr/bin/env node
// Derives the TypeScript types of the OVMS manifest from schemas/manifest.v1.json, so the
// types cannot drift from the schema. `--check` exits 1 when the committed file is stale
// (the test suite runs it).
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { compile } from "json-schema-to-typescript";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = `${root}src/core/manifest.generated.ts`;

export async function generate() {
  const schema = JSON.parse(await readFile(`${root}schemas/manifest.v1.json`, "utf8"));
  return compile(schema, "OvmsManifest", {
    bannerComment:
      "/* Generated from schemas/manifest.v1.json by scripts/gen-types.mjs. Do not edit. */",
    additionalProperties: false,
    unreachableDefinitions: false,
    style: { singleQuote: false, printWidth: 100 },
  });
}

const text = await generate();
if (process.argv.includes("--check")) {
  const current = await readFile(out, "utf8").catch(() => "");
  if (current !== text) {
    console.error(`${out} is stale: run npm run gen:types`);
    process.exit(1);
  }
} else {
  await writeFile(out, text);
  console.log(`wrote ${out}`);
}
