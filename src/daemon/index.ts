export * from "./server.js";
export * from "./controller.js";
export * from "./contract.js";
export * from "./routes.js";
export * from "./errors.js";
export * from "./log.js";
export * from "./options.js";
