/**
 * The shape of the conformance suite (rfc/ovms-v0.1.md §9): a check is a small object — an id,
 * the RFC section it holds an implementation to, the level it belongs to, whether the RFC says
 * MUST or SHOULD (or only asks for a number to be reported), and a function. Adding a check is
 * adding one object to a list; running a list gives one Result per check.
 */

/** Level is a conformance level of rfc §9 (registry: whether a registry carries OVMS artifacts). */
export type Level = "artifact" | "registry" | "runtime-basic" | "runtime-snapshot" | "runtime-secure";

/** LEVEL_NAMES are the levels as rfc §9 names them. */
export const LEVEL_NAMES: Readonly<Record<Level, string>> = {
  artifact: "Artifact",
  registry: "Registry compatibility",
  "runtime-basic": "Runtime-Basic",
  "runtime-snapshot": "Runtime-Snapshot",
  "runtime-secure": "Runtime-Secure",
};

/**
 * Requirement is how strongly the RFC asks: a failed MUST makes the run fail; a failed SHOULD
 * is reported and does not; INFO checks report what was measured (timing promises the RFC
 * only recommends) and never fail.
 */
export type Requirement = "MUST" | "SHOULD" | "INFO";

/**
 * Status is a check's outcome: pass, fail, skip (a prerequisite is missing: the reason says
 * which), manual (the requirement cannot be seen from outside; the message says how to check
 * it by hand), info (a measurement).
 */
export type Status = "pass" | "fail" | "skip" | "manual" | "info";

/** Check is one requirement made executable, run against a context `C` its suite provides. */
export interface Check<C> {
  /** id is stable and dotted (`runtime.stop.escalation`): what reports and tests name. */
  id: string;
  /** section is where the RFC states the requirement, e.g. `§6.5`. */
  section: string;
  level: Level;
  requirement: Requirement;
  /** title says in a few words what is required. */
  title: string;
  /**
   * run checks the requirement: it returns normally on success (optionally with a message and
   * measurements) and throws Violation (fail), Skip or Manual otherwise; any other error is a
   * failure too, with its message.
   */
  run(ctx: C): Promise<Outcome | void>;
}

/** Outcome is what a passing check may add: a note, measurements, or another status (info). */
export interface Outcome {
  status?: "pass" | "info";
  message?: string;
  measured?: Record<string, number | string | boolean>;
}

/** Result is one check's outcome in a report. */
export interface Result {
  id: string;
  section: string;
  level: Level;
  requirement: Requirement;
  title: string;
  status: Status;
  message?: string;
  measured?: Record<string, number | string | boolean>;
  ms: number;
}

/** Violation is thrown by a check whose requirement is not met: the message says what was seen. */
export class Violation extends Error {
  override readonly name = "Violation";
}

/** Skip is thrown by a check that cannot run here: the message says what it needs. */
export class Skip extends Error {
  override readonly name = "Skip";
}

/** Manual is thrown by a check of a requirement that is invisible from outside: the message says how to verify it. */
export class Manual extends Error {
  override readonly name = "Manual";
}

/** expect throws a Violation with `message` unless `ok`. */
export function expect(ok: unknown, message: string): asserts ok {
  if (!ok) throw new Violation(message);
}

/** RunHooks let a caller show progress while checks run. */
export interface RunHooks {
  /** onResult is told each result as soon as it is known. */
  onResult?(r: Result): void;
}

/**
 * runChecks runs `checks` one after the other, in order (later checks may reuse what earlier
 * ones set up in the context), and returns one Result each. No check can stop the run.
 */
export async function runChecks<C>(checks: Check<C>[], ctx: C, hooks: RunHooks = {}): Promise<Result[]> {
  const out: Result[] = [];
  for (const c of checks) {
    const r = await runOne(c, ctx);
    out.push(r);
    hooks.onResult?.(r);
  }
  return out;
}

async function runOne<C>(c: Check<C>, ctx: C): Promise<Result> {
  const base = { id: c.id, section: c.section, level: c.level, requirement: c.requirement, title: c.title };
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  try {
    const o = (await c.run(ctx)) ?? {};
    const status: Status = o.status ?? (c.requirement === "INFO" ? "info" : "pass");
    return {
      ...base,
      status,
      ...(o.message ? { message: o.message } : {}),
      ...(o.measured ? { measured: o.measured } : {}),
      ms: ms(),
    };
  } catch (e) {
    const status: Status = e instanceof Skip ? "skip" : e instanceof Manual ? "manual" : "fail";
    const message = e instanceof Error ? e.message : String(e);
    return { ...base, status, message, ms: ms() };
  }
}

/** failsMust tells whether a result breaks a MUST (what makes a run, and `ovm conformance`, fail). */
export function failsMust(r: Result): boolean {
  return r.status === "fail" && r.requirement === "MUST";
}
