import { exitStatus, isOvmsError } from "../core/errors.js";
import type { Printer } from "./context.js";

/** Failure is one argument a multi-argument command could not handle, as `--json` reports it. */
export interface Failure {
  target: string;
  code: string;
  message: string;
}

/**
 * eachArgument runs `fn` on every argument in order, whatever happened to the ones before (as
 * docker does with `stop a b`), and returns what succeeded and what failed. Each failure is
 * written on stderr at once as one line (with --json it goes into the result document
 * instead); when any failed, the exit status is that of the first failure.
 */
export async function eachArgument<T>(
  args: string[],
  out: Printer,
  fn: (arg: string) => Promise<T>,
): Promise<{ done: T[]; errors: Failure[] }> {
  const done: T[] = [];
  const errors: Failure[] = [];
  let first: unknown;
  for (const arg of args) {
    try {
      done.push(await fn(arg));
    } catch (e) {
      first ??= e;
      const message = (e as Error)?.message ?? String(e);
      errors.push({ target: arg, code: isOvmsError(e) ? e.code : "INTERNAL", message });
      if (!out.json) process.stderr.write(`ovm: ${message}\n`);
    }
  }
  if (first !== undefined) process.exitCode = exitStatus(first);
  return { done, errors };
}
