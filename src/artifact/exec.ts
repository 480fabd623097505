import { execFile } from "node:child_process";
import { OvmsError } from "../core/errors.js";

/** ToolMissingError says which Debian package provides a missing host tool. */
const PACKAGE_OF: Record<string, string> = {
  "qemu-img": "qemu-utils",
  "qemu-system-x86_64": "qemu-system-x86",
  skopeo: "skopeo",
  lz4: "lz4",
};

/**
 * run executes a host tool and returns its stdout. A missing tool becomes TOOL_MISSING naming
 * the package to install; a failing one becomes TOOL_FAILED with its stderr; `signal` kills it
 * (CANCELLED).
 */
export function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        maxBuffer: 64 << 20,
        timeout: opts.timeoutMs ?? 120_000,
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        // Stopped on purpose (Ctrl-C): the tool was killed, which is not its failure.
        if (opts.signal?.aborted)
          return reject(new OvmsError("CANCELLED", `${cmd}: cancelled`, { cause: opts.signal.reason }));
        if ((err as NodeJS.ErrnoException).code === "ENOENT") {
          const pkg = PACKAGE_OF[cmd];
          return reject(
            new OvmsError(
              "TOOL_MISSING",
              `${cmd} is not installed${pkg ? ` (apt-get install ${pkg})` : ""}`,
              { cause: err },
            ),
          );
        }
        reject(
          new OvmsError("TOOL_FAILED", `${cmd} ${args.join(" ")}: ${String(stderr).trim() || err.message}`, {
            cause: err,
          }),
        );
      },
    );
  });
}
