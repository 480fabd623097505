// dependency-cruiser: no import cycles in src/, counting `import type` too (ESLint's
// import-x/no-cycle skips type-only imports, and a cycle of types is still a knot in the design).
// The layer order itself is checked by ESLint (eslint.config.js, import-x/no-restricted-paths).
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "Modules of src/ must not import each other in a circle (type-only imports included).",
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
