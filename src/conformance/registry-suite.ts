import { randomBytes } from "node:crypto";
import { parseReference } from "../core/reference.js";
import type { RegistryClient } from "../registry/client.js";
import { runChecks, type RunHooks } from "./check.js";
import { REGISTRY_CHECKS, type RegistryContext } from "./registry-checks.js";
import { makeReport, type Report } from "./report.js";

/** RegistrySuiteOptions say which repository to check and how hard. */
export interface RegistrySuiteOptions {
  /** repository is `HOST[:PORT]/NAME`: the suite pushes under it (tags conformance-*, sha256-*). */
  repository: string;
  client: RegistryClient;
  largeMiB?: number;
  chunkMiB?: number;
  hooks?: RunHooks;
}

/** runRegistrySuite checks a repository and cleans up after itself where the registry allows deletes. */
export async function runRegistrySuite(opts: RegistrySuiteOptions): Promise<Report> {
  const started = new Date();
  const ref = parseReference(opts.repository);
  const ctx: RegistryContext = {
    client: opts.client,
    repo: opts.client.repository(ref, { push: true }),
    runId: randomBytes(4).toString("hex"),
    largeBytes: (opts.largeMiB ?? 128) << 20,
    chunkBytes: (opts.chunkMiB ?? 8) << 20,
    found: {},
  };
  const results = await runChecks(REGISTRY_CHECKS, ctx, opts.hooks);
  for (const d of [ctx.referrer?.desc, ctx.ovms?.desc]) {
    if (d) await ctx.repo.deleteManifest(d).catch(() => undefined);
  }
  return makeReport("registry", `${ctx.repo.registry}/${ctx.repo.name}`, ["registry"], results, started, {
    "OVMS will use": ctx.found,
  });
}
