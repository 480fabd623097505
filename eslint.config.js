// ESLint flat config: typescript-eslint's recommended rules over src/, test/ and bench/, plus
// the structure rules of the project: imports point down the layers, and no import cycles.
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import importX from "eslint-plugin-import-x";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";

/**
 * LAYERS, lowest first. A folder of src/ may import from folders before it in this list (and
 * from itself), never from one after it; the folders of one entry are peers that never import
 * each other (daemon/ and client/ both stand on api/). src/version.ts is a leaf anyone may use;
 * src/index.ts is the library's front door and sits above everything.
 */
const LAYERS = [
  ["core"],
  ["api"],
  ["store"],
  ["registry"],
  ["sign"],
  ["artifact"],
  ["runtime"],
  ["daemon", "client"],
  ["conformance", "shim"],
  ["cli"],
];

const zones = LAYERS.flatMap((group, i) =>
  group.map((dir) => ({
    target: `./src/${dir}`,
    from: [
      ...LAYERS.slice(i + 1)
        .flat()
        .map((d) => `./src/${d}`),
      ...group.filter((d) => d !== dir).map((d) => `./src/${d}`),
      "./src/index.ts",
    ],
    message: `src/${dir} may only import from the layers below it (${LAYERS.slice(0, i).flat().join(", ") || "none"}): imports point down (see eslint.config.js).`,
  })),
);

/**
 * BLACK_BOX: the conformance suite checks any runtime over the HTTP contract alone, so it never
 * imports the reference runtime or its daemon, although they sit below it in LAYERS.
 */
const BLACK_BOX = {
  target: "./src/conformance",
  from: ["./src/daemon", "./src/runtime"],
  message:
    "src/conformance is a black box over the runtime API: it may use client/ and api/, never daemon/ or runtime/ (see eslint.config.js).",
};

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".cache/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    files: ["src/**/*.ts"],
    plugins: { "import-x": importX },
    settings: {
      "import-x/resolver-next": [createTypeScriptImportResolver({ project: "./tsconfig.json" })],
    },
    rules: {
      "import-x/no-restricted-paths": ["error", { zones: [...zones, BLACK_BOX] }],
      "import-x/no-cycle": ["error", { ignoreExternal: true }],
      // One job per file: a module that outgrows 400 lines of code (comments and blank lines
      // not counted) has taken on a second job; split it along its seams.
      "max-lines": ["error", { max: 400, skipBlankLines: true, skipComments: true }],
    },
  },
  {
    // Generated from the schemas and the OpenAPI document: as long as the documents are.
    files: ["src/**/*.generated.ts"],
    rules: { "max-lines": "off" },
  },
);
