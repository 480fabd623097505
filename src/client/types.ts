import type { InstanceInfo, LogRecord } from "../runtime/types.js";

export type { InstanceInfo, LogRecord };

/**
 * Wire shapes of the runtime API, one per schema of spec/api/ovms-runtime.openapi.yaml
 * (components.schemas). Names follow the document.
 */

/** VersionInfo answers `GET /version`. */
export interface VersionInfo {
  name: string;
  version: string;
  api: "v0.1";
  runtime: { name: string; version: string };
}

/** StartOverrides replace what the manifest says, for one instance. */
export interface StartOverrides {
  memory?: number;
  cpus?: number;
  cmdline?: string;
  accel?: "auto" | "kvm" | "tcg";
  name?: string;
  machine?: "microvm" | "q35";
}

/** StartRequest is the body of `POST /start`. */
export interface StartRequest {
  manifest: string;
  overrides?: StartOverrides;
}

/** StartResponse answers `POST /start` (202). */
export interface StartResponse {
  instance_id: string;
  status: "starting";
  name: string;
}

/** StopRequest is the body of `POST /stop`. */
export interface StopRequest {
  instance_id: string;
  timeout_ms?: number;
  force?: boolean;
}

/** StopResponse answers `POST /stop`. */
export interface StopResponse {
  status: "stopping" | "exited";
}

/** SnapshotRequest is the body of `POST /snapshot`. */
export interface SnapshotRequest {
  instance_id: string;
  tag: string;
  stop?: boolean;
}

/** SnapshotResponse answers `POST /snapshot`. */
export interface SnapshotResponse {
  snapshot_ref: string;
  reference: string;
  size: number;
}

/** InjectRequest is the body of `POST /inject`. */
export interface InjectRequest {
  instance_id: string;
  content: { mmio: { device?: string; offset?: number; data: string; encoding?: "base64" | "utf8" } };
}

/** InjectResponse answers `POST /inject`. */
export interface InjectResponse {
  status: "ok";
  bytes: number;
}

/** InstanceList answers `GET /instances`. */
export interface InstanceList {
  instances: InstanceInfo[];
}

/** RemoveResponse answers `DELETE /instances/{id}`. */
export interface RemoveResponse {
  status: "removed";
}

/** ErrorBody is the one error shape of the API. */
export interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}
