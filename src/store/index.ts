export * from "./store.js";
export * from "./store-error.js";
export * from "./paths.js";
