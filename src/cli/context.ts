import type { Command } from "commander";
import { Store } from "../store/store.js";
import { resolveStoreDir } from "../store/paths.js";

/** GlobalOptions are the flags every `ovm` command takes. */
export interface GlobalOptions {
  store?: string;
  json?: boolean;
  quiet?: boolean;
  debug?: boolean;
}

/** globals reads the global flags from the root program of `cmd`. */
export function globals(cmd: Command): GlobalOptions {
  let root = cmd;
  while (root.parent) root = root.parent;
  return { ...root.opts<GlobalOptions>(), ...cmd.optsWithGlobals<GlobalOptions>() };
}

/** openStore opens the store the flags and environment name. */
export function openStore(cmd: Command): Promise<Store> {
  return Store.open(resolveStoreDir(globals(cmd).store));
}

/** Printer writes a command's result: JSON with --json, text otherwise, nothing extra with -q. */
export class Printer {
  constructor(private readonly opts: GlobalOptions) {}

  get json(): boolean {
    return !!this.opts.json;
  }

  /** result prints the command's outcome: `value` as JSON, or `text()` for people. */
  result(value: unknown, text: () => string | undefined): void {
    if (this.opts.json) {
      process.stdout.write(JSON.stringify(value, null, 2) + "\n");
      return;
    }
    const t = text();
    if (t !== undefined && t !== "") process.stdout.write(t.endsWith("\n") ? t : t + "\n");
  }

  /** info is progress for people on stderr; silent with --json or -q. */
  info(line: string): void {
    if (!this.opts.quiet && !this.opts.json) process.stderr.write(line + "\n");
  }
}

/** table formats rows under headers with columns padded to fit. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : (c ?? "").padEnd(widths[i])))
      .join("   ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}
