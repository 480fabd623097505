import { LEVEL_NAMES, failsMust, type Level, type Result, type Status } from "./check.js";

/** SuiteKind is which suite produced a report. */
export type SuiteKind = "runtime" | "artifact" | "registry";

/** LevelSummary counts a level's results by status. */
export type LevelSummary = Record<Status, number> & { level: Level; name: string; ok: boolean };

/**
 * Report is the outcome of one conformance run: what was checked, every result in the order
 * the checks ran, a summary per level, and `ok` (no MUST failed). It is what `--json` prints.
 */
export interface Report {
  suite: SuiteKind;
  /** target names what was checked: a socket, a URL, a reference, a repository. */
  target: string;
  /** about holds facts learned on the way (the runtime's /version, the fallback a registry needs). */
  about: Record<string, unknown>;
  levels: Level[];
  startedAt: string;
  durationMs: number;
  ok: boolean;
  summary: LevelSummary[];
  results: Result[];
}

/** makeReport assembles a Report from results; `ok` is false when any MUST failed. */
export function makeReport(
  suite: SuiteKind,
  target: string,
  levels: Level[],
  results: Result[],
  started: Date,
  about: Record<string, unknown> = {},
): Report {
  const summary = levels.map((level) => {
    const s: LevelSummary = {
      level,
      name: LEVEL_NAMES[level],
      ok: true,
      pass: 0,
      fail: 0,
      skip: 0,
      manual: 0,
      info: 0,
    };
    for (const r of results.filter((x) => x.level === level)) {
      s[r.status]++;
      if (failsMust(r)) s.ok = false;
    }
    return s;
  });
  return {
    suite,
    target,
    about,
    levels,
    startedAt: started.toISOString(),
    durationMs: Date.now() - started.getTime(),
    ok: !results.some(failsMust),
    summary,
    results,
  };
}

/** STATUS_WORDS are the statuses as the table shows them: failures stand out. */
const STATUS_WORDS: Record<Status, string> = {
  pass: "pass",
  fail: "FAIL",
  skip: "skip",
  manual: "manual",
  info: "info",
};

/**
 * formatReport writes a report for people: one table per level (result, MUST/SHOULD, RFC
 * section, check id and title, and what was seen), then one summary line per level.
 */
export function formatReport(r: Report): string {
  const out: string[] = [`OVMS conformance (${r.suite}): ${r.target}`];
  for (const [k, v] of Object.entries(r.about)) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      out.push(`  ${k}:`);
      for (const [k2, v2] of Object.entries(v))
        out.push(`    ${k2}: ${typeof v2 === "string" ? v2 : JSON.stringify(v2)}`);
    } else out.push(`  ${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`);
  }
  for (const level of r.levels) {
    const rows = r.results.filter((x) => x.level === level);
    if (!rows.length) continue;
    out.push("", LEVEL_NAMES[level]);
    const cells = rows.map((x) => [
      STATUS_WORDS[x.status],
      x.requirement,
      x.section,
      `${x.id}: ${x.title}${x.message ? ` — ${x.message}` : ""}${measuredText(x)}`,
    ]);
    const widths = [0, 1, 2].map((i) =>
      Math.max(...cells.map((c) => c[i].length), ["RESULT", "REQ", "RFC"][i].length),
    );
    const line = (c: string[]) =>
      `  ${c[0].padEnd(widths[0])}  ${c[1].padEnd(widths[1])}  ${c[2].padEnd(widths[2])}  ${indent(c[3], 8 + widths[0] + widths[1] + widths[2])}`;
    out.push(line(["RESULT", "REQ", "RFC", "CHECK"]));
    for (const c of cells) out.push(line(c));
  }
  out.push("");
  for (const s of r.summary) {
    const rows = r.results.filter((x) => x.level === s.level && x.status === "fail");
    const must = rows.filter(failsMust).length;
    const counts: [number, string][] = [
      [s.pass, "passed"],
      [must, "failed"],
      [rows.length - must, "SHOULD not met"],
      [s.skip, "skipped"],
      [s.manual, "manual"],
      [s.info, "info"],
    ];
    const parts = counts.filter(([n]) => n > 0).map(([n, w]) => `${n} ${w}`);
    out.push(
      `${s.name}: ${s.ok ? "conforms" : "DOES NOT CONFORM"} (${parts.join(", ") || "nothing checked"})`,
    );
  }
  return out.join("\n");
}

function measuredText(r: Result): string {
  if (!r.measured || r.message) return "";
  return ` — ${Object.entries(r.measured)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ")}`;
}

/** indent continues a multi-line message under its column. */
function indent(text: string, by: number): string {
  return text.replace(/\n/g, `\n${" ".repeat(by)}`);
}
