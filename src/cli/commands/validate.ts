import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { checkManifest } from "../../core/validate.js";
import type { ValidationProblem } from "../../core/errors.js";
import { Printer, globals } from "../context.js";

/** register adds `ovm validate FILE...`: exit 0 when every file is a valid OVMS manifest. */
export function register(program: Command): void {
  program
    .command("validate")
    .description("check OVMS manifest files against the schema; every problem is named by its JSON path")
    .argument("<file...>", "manifest JSON files")
    .addHelpText(
      "after",
      `
Examples:
  ovm validate examples/*.json
  ovm validate manifest.json --json | jq '.files[].problems'`,
    )
    .action(async (files: string[], _opts, cmd: Command) => {
      const out = new Printer(globals(cmd));
      const results: { file: string; valid: boolean; problems: ValidationProblem[] }[] = [];
      for (const file of files) {
        let problems: ValidationProblem[];
        try {
          problems = checkManifest(JSON.parse(await readFile(file, "utf8")));
        } catch (e) {
          problems = [{ path: "", message: unreadable(e) }];
        }
        results.push({ file, valid: problems.length === 0, problems });
      }
      out.result({ valid: results.every((r) => r.valid), files: results }, () =>
        results
          .map((r) =>
            r.valid
              ? `${r.file}: valid`
              : r.problems.length === 1 && r.problems[0].path === ""
                ? `${r.file}: ${r.problems[0].message}`
                : `${r.file}: ${r.problems.length} problem(s)\n${r.problems.map((p) => `  ${p.path || "(root)"}: ${p.message}`).join("\n")}`,
          )
          .join("\n"),
      );
      if (!results.every((r) => r.valid)) process.exitCode = 1;
    });
}

/** unreadable words why a file could not be read as JSON, for what the user typed. */
function unreadable(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EISDIR") return "is a folder, not a manifest file";
  if (code === "EACCES") return "permission denied";
  if (e instanceof SyntaxError) return `not valid JSON: ${e.message}`;
  return (e as Error).message;
}
