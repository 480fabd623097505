import { OvmsError } from "../core/errors.js";

/** SignError is an error of the sign layer: keys, signatures, policies. */
export class SignError extends OvmsError {}
