import { LEVEL_NAMES, type Result } from "./check.js";
import type { Report } from "./report.js";

/**
 * junitXml writes a report as JUnit XML for CI: one <testsuite> per level, one <testcase> per
 * check (named `§section id: title`). A failed MUST is a <failure>; a failed SHOULD, a skipped
 * check and a check that needs a person are <skipped> with the reason, so a CI run is red
 * exactly when `ovm conformance` exits non-zero. Measurements go to <system-out>.
 */
export function junitXml(r: Report): string {
  const suites = r.levels.map((level) => {
    const rows = r.results.filter((x) => x.level === level);
    const failures = rows.filter((x) => x.status === "fail" && x.requirement === "MUST").length;
    const skipped = rows.filter(
      (x) =>
        x.status === "skip" || x.status === "manual" || (x.status === "fail" && x.requirement !== "MUST"),
    ).length;
    const time = rows.reduce((n, x) => n + x.ms, 0) / 1000;
    return [
      `  <testsuite name="${attr(LEVEL_NAMES[level])}" tests="${rows.length}" failures="${failures}" errors="0" skipped="${skipped}" time="${time.toFixed(3)}" timestamp="${attr(r.startedAt.replace(/\.\d+Z$/, ""))}">`,
      ...rows.map(testcase),
      `  </testsuite>`,
    ].join("\n");
  });
  const tests = r.results.length;
  const failures = r.results.filter((x) => x.status === "fail" && x.requirement === "MUST").length;
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuites name="${attr(`ovms-conformance ${r.suite} ${r.target}`)}" tests="${tests}" failures="${failures}" time="${(r.durationMs / 1000).toFixed(3)}">`,
    ...suites,
    `</testsuites>`,
    "",
  ].join("\n");
}

function testcase(x: Result): string {
  const open = `    <testcase classname="ovms.${attr(x.level)}" name="${attr(`${x.section} ${x.id}: ${x.title}`)}" time="${(x.ms / 1000).toFixed(3)}"`;
  const body: string[] = [];
  if (x.status === "fail" && x.requirement === "MUST") {
    body.push(
      `      <failure message="${attr(firstLine(x.message))}" type="MUST">${text(x.message ?? "")}</failure>`,
    );
  } else if (x.status === "fail") {
    body.push(`      <skipped message="${attr(`${x.requirement} not met: ${firstLine(x.message)}`)}"/>`);
  } else if (x.status === "skip" || x.status === "manual") {
    body.push(`      <skipped message="${attr(`${x.status}: ${firstLine(x.message)}`)}"/>`);
  }
  const out = [
    x.message && x.status !== "fail" ? x.message : "",
    x.measured ? JSON.stringify(x.measured) : "",
  ]
    .filter(Boolean)
    .join("\n");
  if (out) body.push(`      <system-out>${text(out)}</system-out>`);
  return body.length ? `${open}>\n${body.join("\n")}\n    </testcase>` : `${open}/>`;
}

function firstLine(s: string | undefined): string {
  return (s ?? "").split("\n")[0];
}

/** text escapes character data; characters XML 1.0 cannot hold at all are dropped. */
function text(s: string): string {
  return s
    .replace(/[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;");
}

function attr(s: string): string {
  return text(s).replace(/"/g, "&quot;").replace(/\n/g, "&#10;");
}
