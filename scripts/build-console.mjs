#!/usr/bin/env node
// Builds the web console into dist/web/ (served by `ovmd --http`): type-checks web/ (tsc, its
// own tsconfig with the DOM), bundles web/src/main.ts with xterm.js and Chart.js (esbuild, one
// ES module, no CDN: the console works offline), and copies the page, its style sheet and
// xterm's.
import { cpSync, mkdirSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = `${root}dist/web`;
const require = createRequire(import.meta.url);

const tsc = spawnSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", `${root}web/tsconfig.json`], {
  stdio: "inherit",
});
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

mkdirSync(out, { recursive: true });
await build({
  entryPoints: [`${root}web/src/main.ts`],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outfile: `${out}/app.js`,
  logLevel: "warning",
});
cpSync(`${root}web/index.html`, `${out}/index.html`);
cpSync(`${root}web/style.css`, `${out}/style.css`);
cpSync(require.resolve("@xterm/xterm/css/xterm.css"), `${out}/xterm.css`);
