/**
 * The OVMS library: everything `ovm` and `ovmd` do, as typed functions and classes.
 * Layers (imports point down only): cli → daemon | client → runtime → artifact → registry →
 * store → api → core (eslint.config.js enforces it).
 */
export * from "./core/index.js";
export * from "./store/index.js";
export * from "./registry/index.js";
export * from "./artifact/index.js";
export * from "./runtime/index.js";
export {
  OvmdClient,
  DaemonError,
  isDaemonUnavailable,
  DAEMON_UNAVAILABLE,
  type ClientOptions,
} from "./client/client.js";
export { defaultSocketPath, resolveSocketPath, isPathLike } from "./api/paths.js";
export type {
  VersionInfo,
  StartOverrides,
  StartRequest,
  StartResponse,
  StopRequest,
  StopResponse,
  SnapshotRequest,
  SnapshotResponse,
  InjectRequest as ApiInjectRequest,
  InjectResponse,
  InstanceInfo,
  InstanceList,
  RemoveResponse,
  ErrorBody,
} from "./api/types.generated.js";
/** api is every wire shape of the runtime API, under its OpenAPI name. */
export * as api from "./api/types.generated.js";
export { serve, type ServeOptions, type Daemon } from "./daemon/server.js";
export { Controller, pullFromRegistry, type ControllerOptions, type PullFn } from "./daemon/controller.js";
export { Contract, CONTRACT_URL } from "./daemon/contract.js";
export { toApiError } from "./daemon/errors.js";
export { VERSION } from "./version.js";
