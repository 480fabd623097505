import { ERRORS, type ErrorCode } from "./error-codes.js";

export type { ErrorCode };

/**
 * OvmsError is the one base error of the project: a stable SCREAMING_SNAKE `code` that code
 * decides on, a message that leads with context, and an optional `cause`. Each layer adds a
 * subclass; the CLI and the daemon map `code` to an exit status or an HTTP status at the edge.
 */
export class OvmsError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    if (opts.details) this.details = opts.details;
  }
}

/** ValidationError lists every problem found in a document, each with its JSON path. */
export class ValidationError extends OvmsError {
  readonly problems: ValidationProblem[];

  constructor(subject: string, problems: ValidationProblem[]) {
    const lines = problems.map((p) => `  ${p.path || "(root)"}: ${p.message}`);
    super("MANIFEST_INVALID", `${subject}: ${problems.length} problem(s)\n${lines.join("\n")}`, {
      details: { problems },
    });
    this.problems = problems;
  }
}

/** ValidationProblem is one reason a document was refused: where (JSON path) and why. */
export interface ValidationProblem {
  path: string;
  message: string;
}

/** isOvmsError tells whether `e` carries one of our stable codes (optionally one of `codes`). */
export function isOvmsError(e: unknown, ...codes: ErrorCode[]): e is OvmsError {
  return e instanceof OvmsError && (codes.length === 0 || codes.includes(e.code));
}

/** isRetryable tells whether an error may go away if the same thing is tried again later. */
export function isRetryable(e: unknown): boolean {
  return e instanceof OvmsError && ERRORS[e.code].retryable;
}

/** exitStatus is the exit status of `ovm` for an error: 2 for a mistake in what was typed, else 1. */
export function exitStatus(e: unknown): 1 | 2 {
  return e instanceof OvmsError ? ERRORS[e.code].exit : 1;
}
