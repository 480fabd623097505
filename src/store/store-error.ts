import { OvmsError } from "../core/errors.js";

/** StoreError is an OvmsError raised by the local store (codes: NOT_FOUND, STORE_CORRUPT, …). */
export class StoreError extends OvmsError {}
