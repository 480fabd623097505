/**
 * The OVMS conformance suite (rfc/ovms-v0.1.md §9) as a library: the runtime levels driven
 * black-box over the runtime API, the Artifact level on a stored artifact, and a registry's
 * ability to carry OVMS artifacts; results as a Report, a table, JSON or JUnit XML.
 */
export * from "./check.js";
export * from "./report.js";
export * from "./junit.js";
export * from "./openapi.js";
export * from "./runtime-api.js";
export * from "./guest.js";
export * from "./runtime-suite.js";
export * from "./artifact-suite.js";
export * from "./registry-checks.js";
export * from "./registry-suite.js";
