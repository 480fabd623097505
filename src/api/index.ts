/**
 * The runtime API as both sides of it see it: the wire shapes generated from
 * spec/api/ovms-runtime.openapi.yaml, and the facts of its transport (where the socket is,
 * what counts as a path). `daemon/` and `client/` both stand on this module and never on each
 * other.
 */
export * from "./types.generated.js";
export * from "./paths.js";

import type { ApiErrorCode } from "./types.generated.js";
import type { ApiErrorCode as TableApiErrorCode } from "../core/error-codes.js";

/** The error table of core/ and this document name the same API codes: a compile error otherwise. */
export const API_CODES_AGREE: [ApiErrorCode] extends [TableApiErrorCode]
  ? [TableApiErrorCode] extends [ApiErrorCode]
    ? true
    : never
  : never = true;
