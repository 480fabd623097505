import { OvmsError } from "../core/errors.js";

/**
 * RuntimeError is an OvmsError from the runtime layer. Codes: NOT_FOUND (instance), CONFLICT
 * (wrong state, name in use), INVALID_ARGUMENT (what the runtime was asked cannot be done),
 * INSUFFICIENT_RESOURCES, RUNTIME_UNAVAILABLE (QEMU missing), NOT_IMPLEMENTED, START_FAILED,
 * RESTORE_FAILED, SNAPSHOT_FAILED.
 */
export class RuntimeError extends OvmsError {}
