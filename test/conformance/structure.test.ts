import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { ESLint } from "eslint";

// The suite is a black box over the runtime API: lint refuses an import of the reference
// daemon or runtime from src/conformance, though both sit below it in the layers.
const root = fileURLToPath(new URL("../../../", import.meta.url));

test("lint refuses src/conformance importing daemon/ or runtime/, and accepts client/ and api/", async () => {
  const eslint = new ESLint({ cwd: root });
  const lint = async (code: string) =>
    (await eslint.lintText(code, { filePath: `${root}src/conformance/probe.ts` }))[0].messages.filter(
      (m) => m.ruleId === "import-x/no-restricted-paths",
    );
  for (const from of ["../daemon/server.js", "../runtime/lifecycle.js"]) {
    const msgs = await lint(`import * as x from "${from}";\nexport const y = x;\n`);
    assert.ok(
      msgs.some((m) => /black box over the runtime API/.test(m.message)),
      `${from}: ${JSON.stringify(msgs)}`,
    );
  }
  for (const from of ["../client/client.js", "../api/paths.js", "../artifact/ramsnap.js"]) {
    assert.deepEqual(await lint(`import * as x from "${from}";\nexport const y = x;\n`), [], from);
  }
});
