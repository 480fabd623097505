/** LogLevel orders how much the daemon says on stderr. */
export type LogLevel = "error" | "warn" | "info" | "debug";

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** LOG_LEVELS are the accepted `--log-level` values. */
export const LOG_LEVELS = Object.keys(RANK) as LogLevel[];

/** Logger writes one line per event: time, level, message, then key=value facts. */
export interface Logger {
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
}

/** createLogger logs at `level` and above to `out` (default stderr). */
export function createLogger(level: LogLevel = "info", out: NodeJS.WritableStream = process.stderr): Logger {
  const write = (l: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (RANK[l] > RANK[level]) return;
    const kv = Object.entries(fields ?? {})
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${typeof v === "string" && !/\s|"/.test(v) ? v : JSON.stringify(v)}`);
    out.write(
      `${new Date().toISOString()} ${l.toUpperCase().padEnd(5)} ${msg}${kv.length ? ` ${kv.join(" ")}` : ""}\n`,
    );
  };
  return {
    error: (m, f) => write("error", m, f),
    warn: (m, f) => write("warn", m, f),
    info: (m, f) => write("info", m, f),
    debug: (m, f) => write("debug", m, f),
  };
}
