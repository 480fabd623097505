export * from "../api/index.js";
export * from "./client.js";
export * from "./console.js";
