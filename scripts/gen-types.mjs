#!/usr/bin/env node
// Derives TypeScript types from the documents that define them, so the types cannot drift:
//   schemas/manifest.v1.json                 → src/core/manifest.generated.ts (the OVMS manifest)
//   schemas/bootstrap.v1.json                → src/core/bootstrap.generated.ts (a containerMode bootstrap config)
//   spec/api/ovms-runtime.openapi.yaml       → src/api/types.generated.ts (the runtime API's wire shapes)
// `--check` exits 1 when a committed file is stale (the test suite runs it).
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { compile } from "json-schema-to-typescript";
import { parse as parseYaml } from "yaml";

const root = fileURLToPath(new URL("..", import.meta.url));
const style = { singleQuote: false, printWidth: 100 };

async function manifestTypes() {
  const schema = JSON.parse(await readFile(`${root}schemas/manifest.v1.json`, "utf8"));
  return compile(schema, "OvmsManifest", {
    bannerComment:
      "/* Generated from schemas/manifest.v1.json by scripts/gen-types.mjs. Do not edit. */",
    additionalProperties: false,
    unreachableDefinitions: false,
    style,
  });
}

async function bootstrapTypes() {
  const schema = JSON.parse(await readFile(`${root}schemas/bootstrap.v1.json`, "utf8"));
  return compile(schema, "BootstrapConfig", {
    bannerComment:
      "/* Generated from schemas/bootstrap.v1.json by scripts/gen-types.mjs. Do not edit. */",
    additionalProperties: false,
    unreachableDefinitions: false,
    style,
  });
}

/**
 * bareRefs drops the keywords beside a `$ref` (descriptions, mostly): the generator would
 * otherwise make a near-copy of the referenced type for each use (Digest1, Digest2, …).
 */
function bareRefs(node) {
  if (Array.isArray(node)) return node.map(bareRefs);
  if (node === null || typeof node !== "object") return node;
  if (typeof node.$ref === "string") return { $ref: node.$ref };
  return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, bareRefs(v)]));
}

/** RENAMED are schema names that would shadow a global of TypeScript. */
const RENAMED = { Error: "ErrorBody" };

async function apiTypes() {
  const doc = parseYaml(await readFile(`${root}spec/api/ovms-runtime.openapi.yaml`, "utf8"));
  let text = JSON.stringify(doc.components.schemas);
  for (const [from, to] of Object.entries(RENAMED))
    text = text.replaceAll(`"#/components/schemas/${from}"`, `"#/components/schemas/${to}"`);
  const defs = {};
  for (const [name, schema] of Object.entries(bareRefs(JSON.parse(text.replaceAll("#/components/schemas/", "#/$defs/"))))) {
    const title = RENAMED[name] ?? name;
    const { examples: _examples, ...rest } = schema;
    defs[title] = { ...rest, title };
  }
  const out = await compile({ $defs: defs, additionalProperties: false }, "RuntimeApi", {
    bannerComment:
      "/* Generated from spec/api/ovms-runtime.openapi.yaml (components.schemas) by scripts/gen-types.mjs. Do not edit. */",
    additionalProperties: false,
    unreachableDefinitions: true,
    style,
  });
  // The wrapper document has no members of its own; only its definitions are wanted.
  return out
    .replace(/\nexport interface RuntimeApi \{\}\n/, "\n")
    // The generator names every definition that is an `ApiErrorCode` alike; it is the API's ErrorCode.
    .replace(/^export type ErrorCode =/m, "export type ApiErrorCode =")
    .replace(/\bcode: ErrorCode;/g, "code: ApiErrorCode;")
    .replace(/\n \*\n \* This interface was referenced by `RuntimeApi`'s JSON-Schema\n \* via the `definition` "[A-Za-z]+"\./g, "")
    .replace(/\/\*\*\n \* This interface was referenced by `RuntimeApi`'s JSON-Schema\n \* via the `definition` "[A-Za-z]+"\.\n \*\/\n/g, "");
}

const outputs = [
  [`${root}src/core/manifest.generated.ts`, manifestTypes],
  [`${root}src/core/bootstrap.generated.ts`, bootstrapTypes],
  [`${root}src/api/types.generated.ts`, apiTypes],
];

let stale = false;
for (const [file, make] of outputs) {
  const text = await make();
  if (process.argv.includes("--check")) {
    const current = await readFile(file, "utf8").catch(() => "");
    if (current !== text) {
      console.error(`${file} is stale: run npm run gen:types`);
      stale = true;
    }
  } else {
    await writeFile(file, text);
    console.log(`wrote ${file}`);
  }
}
if (stale) process.exit(1);
