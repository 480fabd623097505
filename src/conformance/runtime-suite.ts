import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OvmsError } from "../core/errors.js";
import type { Store } from "../store/store.js";
import { runChecks, type Check, type Level, type Result, type RunHooks } from "./check.js";
import { GUEST_CMDLINE, type GuestAssets } from "./guest.js";
import { OpenApiContract } from "./openapi.js";
import { makeReport, type Report } from "./report.js";
import { RuntimeApi, type RuntimeTarget } from "./runtime-api.js";
import { BASIC_END, BASIC_START, BASIC_TIMING } from "./runtime-basic.js";
import { RuntimeContext } from "./runtime-context.js";
import { ERRORS, ERROR_MODEL, REFUSALS } from "./runtime-errors.js";
import { buildFixtures, type FixtureName } from "./runtime-fixtures.js";
import { SECURE_CHECKS } from "./runtime-secure.js";
import { BASIC_SNAPSHOT, CLONES, SNAPSHOT_CHECKS } from "./runtime-snapshot.js";
import { FORCE_CHECKS, STOP_CHECKS } from "./runtime-stop.js";

/** RuntimeSuiteOptions say which runtime to check, at which levels, with which guest. */
export interface RuntimeSuiteOptions {
  /** target is how the suite drives the runtime: its UNIX socket, or a TCP URL and token. */
  target: RuntimeTarget;
  /** tcp is a TCP listener of the same runtime whose token rule the secure level checks. */
  tcp?: RuntimeTarget;
  /** levels to check; Runtime-Basic is always checked (the others build on it). */
  levels: Level[];
  assets: GuestAssets;
  /** cmdline replaces the guest's base kernel command line (GUEST_CMDLINE). */
  cmdline?: string;
  /** registry (HOST/REPO) and push: fixtures go there and are started by reference. */
  registry?: string;
  push?: (store: Store, tag: string, name: FixtureName) => Promise<string>;
  /** runtimeStore is the runtime's OCI layout store, read to check the snapshot artifact. */
  runtimeStore?: string;
  accel?: "auto" | "kvm" | "tcg";
  /** work is where fixtures are built (default: a temporary folder, removed afterwards). */
  work?: string;
  bootTimeoutMs?: number;
  hooks?: RunHooks;
  onStep?: (line: string) => void;
}

/**
 * runRuntimeSuite checks a runtime black-box over its HTTP contract: it builds its artifacts,
 * hands them over (paths on the UNIX socket, or references to a registry), runs the checks of
 * the chosen levels in an order that shares as few guest boots as possible — the error model
 * while the two shared guests boot, the snapshot and secure checks while they run, the stops
 * last — removes what it started, and returns the report.
 */
export async function runRuntimeSuite(opts: RuntimeSuiteOptions): Promise<Report> {
  const started = new Date();
  const levels: Level[] = ["runtime-basic", ...opts.levels.filter((l) => l !== "runtime-basic")];
  const contract = new OpenApiContract();
  const api = new RuntimeApi(opts.target, contract);
  const probe = await api.get("/version").catch((e: Error) => {
    throw new OvmsError("DAEMON_UNAVAILABLE", `no runtime answers at ${api.where}: ${e.message}`);
  });
  if (probe.status === 401) throw new OvmsError("UNAUTHORIZED", `${api.where} refused the token (401)`);
  const work = opts.work ?? (await mkdtemp(join(tmpdir(), "ovms-conformance-")));
  let ctx: RuntimeContext | undefined;
  try {
    const fixtures = await buildFixtures({
      work,
      assets: opts.assets,
      cmdline: opts.cmdline ?? GUEST_CMDLINE,
      ...(opts.push ? { push: opts.push } : {}),
      ...(opts.onStep ? { onStep: opts.onStep } : {}),
    });
    ctx = new RuntimeContext(api, fixtures, {
      levels,
      bootTimeoutMs: opts.bootTimeoutMs ?? 180_000,
      ...(opts.accel ? { accel: opts.accel } : {}),
      ...(opts.runtimeStore ? { runtimeStore: opts.runtimeStore } : {}),
      ...(opts.registry ? { registry: opts.registry } : {}),
      ...(opts.tcp ? { tcp: new RuntimeApi(opts.tcp, contract) } : {}),
    });
    const c = ctx;
    const pick = (checks: Check<RuntimeContext>[]) => checks.filter((k) => levels.includes(k.level));
    const run = (checks: Check<RuntimeContext>[]) => runChecks(pick(checks), c, opts.hooks);
    const results: Result[] = [];
    results.push(
      ...(await run([
        ...BASIC_START.slice(0, 2),
        ...ERRORS,
        ...REFUSALS,
        ...FORCE_CHECKS,
        ...BASIC_START.slice(2),
        ...BASIC_TIMING,
      ])),
    );
    results.push(...(await run([...BASIC_SNAPSHOT, ...SNAPSHOT_CHECKS])));
    // The clones have served; under TCG every running guest slows the rest down.
    for (const role of CLONES) {
      const g = await c.peek<{ id: string }>(`the restored ${role}`)?.catch(() => undefined);
      if (g) await api.delete(`/instances/${encodeURIComponent(g.id)}?force=1`).catch(() => undefined);
    }
    results.push(...(await run(SECURE_CHECKS)));
    results.push(...(await run([...STOP_CHECKS, ...BASIC_END, ...ERROR_MODEL])));
    const v = c.version;
    const about: Record<string, unknown> = {
      runtime: v ? `${v.name} ${v.version}, VMM ${v.runtime?.name} ${v.runtime?.version}` : "unknown",
      artifacts: opts.registry
        ? `pushed to ${opts.registry}, started by reference`
        : `OCI layout folders under ${join(work, "layouts")}, started by path`,
    };
    const snap = await c
      .peek<{ answer: { status: number; body: { reference?: string } } }>("the snapshot of the counter guest")
      ?.catch(() => undefined);
    if (snap?.answer.status === 200)
      about.snapshot = `${snap.answer.body.reference} (left in the runtime's store)`;
    return makeReport("runtime", api.where, levels, results, started, about);
  } finally {
    await ctx?.cleanup();
    if (!opts.work) await rm(work, { recursive: true, force: true });
  }
}
