import { OvmsError } from "../core/errors.js";

/**
 * RuntimeError is an OvmsError from the runtime layer. Codes: NOT_FOUND (instance), CONFLICT
 * (wrong state, name in use), INSUFFICIENT_RESOURCES, RUNTIME_UNAVAILABLE (QEMU missing),
 * NOT_IMPLEMENTED, START_FAILED.
 */
export class RuntimeError extends OvmsError {}
