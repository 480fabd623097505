/**
 * The OVMS library: everything `ovm` and `ovmd` do, as typed functions and classes.
 * Layers (imports point down): daemon/client → runtime → artifact → sign → registry → store → spec.
 */
export * from "./spec/index.js";
export * from "./store/index.js";
export * from "./registry/index.js";
export * from "./artifact/index.js";
export { VERSION } from "./version.js";
