import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { ESLint } from "eslint";
import { cruise } from "dependency-cruiser";

// The structure rules of `npm run lint` must be able to fail: a lower layer importing a higher
// one, and two modules importing each other (type-only imports included).
const root = fileURLToPath(new URL("../../", import.meta.url));

test("lint refuses an import that points up the layers, and accepts one that points down", async () => {
  const eslint = new ESLint({ cwd: root });
  const [up] = await eslint.lintText(
    'import { Store } from "../store/store.js";\nexport const s = Store;\n',
    {
      filePath: `${root}src/core/probe.ts`,
    },
  );
  assert.ok(
    up.messages.some(
      (m) => m.ruleId === "import-x/no-restricted-paths" && /src\/core may only import/.test(m.message),
    ),
    JSON.stringify(up.messages),
  );
  const [down] = await eslint.lintText(
    'import { Store } from "../store/store.js";\nexport const s = Store;\n',
    {
      filePath: `${root}src/artifact/probe.ts`,
    },
  );
  assert.deepEqual(
    down.messages.filter((m) => m.ruleId?.startsWith("import-x/")),
    [],
  );
  const [peer] = await eslint.lintText(
    'import { serve } from "../daemon/server.js";\nexport const s = serve;\n',
    {
      filePath: `${root}src/client/probe.ts`,
    },
  );
  assert.ok(
    peer.messages.some((m) => m.ruleId === "import-x/no-restricted-paths"),
    "client never imports daemon",
  );
});

test("lint refuses a source file over 400 lines of code, and does not count comments", async () => {
  const eslint = new ESLint({ cwd: root });
  const code = (n: number) =>
    Array.from({ length: n }, (_, i) => `export const v${i} = ${i};`).join("\n") + "\n";
  const [long] = await eslint.lintText(code(401), { filePath: `${root}src/core/probe.ts` });
  assert.ok(
    long.messages.some((m) => m.ruleId === "max-lines"),
    JSON.stringify(long.messages.slice(0, 3)),
  );
  const [commented] = await eslint.lintText(`${"// why\n".repeat(200)}${code(400)}`, {
    filePath: `${root}src/core/probe.ts`,
  });
  assert.deepEqual(
    commented.messages.filter((m) => m.ruleId === "max-lines"),
    [],
  );
});

test("dependency-cruiser finds a cycle made of a value import and a type-only import", async () => {
  const config = createRequire(import.meta.url)(`${root}.dependency-cruiser.cjs`);
  const res = await cruise(["test/fixtures/cycle"], {
    ...config.options,
    ruleSet: { forbidden: config.forbidden },
    validate: true,
    baseDir: root,
  });
  const output = res.output as {
    summary: {
      error: number;
      violations: { rule: { name: string }; cycle: { name: string; dependencyTypes: string[] }[] }[];
    };
  };
  const [v, ...more] = output.summary.violations;
  assert.equal(more.length, 0, JSON.stringify(output.summary.violations));
  assert.equal(v.rule.name, "no-circular");
  assert.deepEqual(v.cycle.map((c) => c.name).sort(), [
    "test/fixtures/cycle/a.ts",
    "test/fixtures/cycle/b.ts",
  ]);
  assert.ok(
    v.cycle.some((c) => c.dependencyTypes.includes("type-only")),
    "the type-only edge counts",
  );
});
