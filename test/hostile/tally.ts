import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { OvmsError } from "../../src/core/errors.js";

/**
 * Tally counts what a hostile-input property did with its inputs: accepted as valid, refused
 * with an OvmsError (a stable code and a message), or crashed (anything else thrown: a
 * TypeError, a RangeError, an error of a library let through). Crashes keep their first
 * examples so a failing run says what broke.
 */
export class Tally {
  tried = 0;
  refused = 0;
  accepted = 0;
  crashed = 0;
  readonly codes: Record<string, number> = {};
  readonly crashes: string[] = [];

  constructor(readonly name: string) {}

  /** run feeds one input to `fn` and counts the outcome. */
  async run(input: unknown, fn: () => unknown): Promise<void> {
    this.tried++;
    try {
      await fn();
      this.accepted++;
    } catch (e) {
      if (e instanceof OvmsError && e.message.length > 0) {
        this.refused++;
        this.codes[e.code] = (this.codes[e.code] ?? 0) + 1;
      } else {
        this.crashed++;
        if (this.crashes.length < 5)
          this.crashes.push(
            `${(e as Error)?.stack?.split("\n").slice(0, 3).join(" | ")} ← ${JSON.stringify(input)?.slice(0, 300)}`,
          );
      }
    }
  }

  /** report writes the counts as JSON into `dir` and logs them (the closing note quotes them). */
  async report(dir: string): Promise<void> {
    const body = {
      suite: this.name,
      tried: this.tried,
      refused: this.refused,
      accepted: this.accepted,
      crashed: this.crashed,
      codes: this.codes,
      crashes: this.crashes,
    };
    await writeFile(join(dir, `${this.name}.tally.json`), JSON.stringify(body, null, 2));
    console.log(`hostile-input tally ${JSON.stringify(body)}`);
  }
}
