import { existsSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { OvmsError } from "../core/errors.js";
import type { Store } from "../store/store.js";
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

/**
 * checkStoreDir says what a store path holds: `store` (an image layout), `missing` or `empty`
 * (a store can be made there). A path that cannot be a store is refused in words: a file, or a
 * folder that holds other things.
 */
export async function checkStoreDir(dir: string): Promise<"store" | "missing" | "empty"> {
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return "missing";
    if (code === "ENOTDIR")
      throw new OvmsError("USAGE", `store ${dir}: a part of this path is a file, not a folder`);
    throw new OvmsError("USAGE", `store ${dir}: ${(e as Error).message}`);
  }
  if (!st.isDirectory())
    throw new OvmsError(
      "USAGE",
      `store ${dir} is a file, not a folder: a store is a folder holding an OCI image layout`,
    );
  if (existsSync(join(dir, "oci-layout"))) return "store";
  const entries = (await readdir(dir)).filter((e) => e !== ".ovms");
  if (entries.length === 0) return "empty";
  throw new OvmsError(
    "USAGE",
    `store ${dir} is a folder that holds other things and no oci-layout: name a new or empty folder, or an existing store`,
  );
}

/**
 * openStore opens the store the flags and environment name. Commands that only read never
 * create one (`read`: a store that does not exist is NOT_FOUND); commands that write create it
 * and say so on stderr.
 */
export async function openStore(cmd: Command, mode: "read" | "write"): Promise<Store> {
  const dir = resolveStoreDir(globals(cmd).store);
  const state = await checkStoreDir(dir);
  // Imported here: commands that only talk to the daemon (`ovm ps`) do not load the store.
  const { Store } = await import("../store/store.js");
  if (mode === "read") return Store.openExisting(dir);
  if (state !== "store") new Printer(globals(cmd)).info(`creating the store ${resolve(dir)}`);
  return Store.open(dir);
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
