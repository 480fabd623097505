import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** BENCH_RESULTS is the package's own bench/results/ folder: five levels up from dist/src/daemon/console/. */
export const BENCH_RESULTS = fileURLToPath(new URL("../../../../bench/results/", import.meta.url));

/** BenchResults are the newest result of each benchmark kind, as the benchmarks wrote them. */
export interface BenchResults {
  /** dir is the folder they were read from. */
  dir: string;
  /** latest maps a kind (`boot`, `restore`, `pull`, `push`) to its newest result and file name. */
  latest: Record<string, { file: string; result: unknown }>;
}

/**
 * latestBenchResults reads `dir` (the benchmarks' `<kind>-<ISO time>.json` files) and keeps the
 * newest file of each kind, read-only: what the console's benchmark page draws. Files that are
 * not JSON are skipped; a missing folder gives no results.
 */
export async function latestBenchResults(dir = BENCH_RESULTS): Promise<BenchResults> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) =>
    /^[a-z0-9_-]+-\d{4}-.*\.json$/.test(n),
  );
  const newest = new Map<string, string>();
  for (const n of names.sort()) newest.set(n.slice(0, n.search(/-\d{4}-/)), n);
  const latest: BenchResults["latest"] = {};
  for (const [kind, file] of newest) {
    try {
      latest[kind] = { file, result: JSON.parse(await readFile(join(dir, file), "utf8")) };
    } catch {
      // a half-written or foreign file: not drawn
    }
  }
  return { dir, latest };
}
