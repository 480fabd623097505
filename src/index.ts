/**
 * The OVMS library: everything `ovm` and `ovmd` do, as typed functions and classes.
 * Layers (imports point down): daemon/client → runtime → artifact → sign → registry → store → spec.
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
export { defaultSocketPath, resolveSocketPath, isPathLike } from "./client/paths.js";
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
  InstanceList,
  RemoveResponse,
  ErrorBody,
} from "./client/types.js";
export { serve, type ServeOptions, type Daemon } from "./daemon/server.js";
export { Controller, pullFromRegistry, type ControllerOptions, type PullFn } from "./daemon/controller.js";
export { Contract, CONTRACT_URL } from "./daemon/contract.js";
export { toApiError } from "./daemon/errors.js";
export { VERSION } from "./version.js";
