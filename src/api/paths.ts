import { join } from "node:path";

/**
 * defaultSocketPath is where ovmd listens unless told otherwise: `$XDG_RUNTIME_DIR/ovms/ovmd.sock`
 * when XDG_RUNTIME_DIR is set (so two sessions with their own runtime dirs never see each
 * other's daemon, root included), else `/run/ovms/ovmd.sock` as root and
 * `/tmp/ovms-<uid>/ovmd.sock` otherwise (the daemon creates that folder 0700).
 */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const uid = process.getuid?.();
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, "ovms", "ovmd.sock");
  if (uid === 0) return "/run/ovms/ovmd.sock";
  return join("/tmp", `ovms-${uid ?? "user"}`, "ovmd.sock");
}

/** resolveSocketPath picks the socket: the flag, else `OVMD_SOCKET`, else the default. */
export function resolveSocketPath(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env.OVMD_SOCKET || defaultSocketPath(env);
}

/**
 * isPathLike tells a path from a reference in `POST /start`'s `manifest`: absolute, or
 * starting with `./` or `../` (relative to the daemon's working folder, so clients send
 * absolute paths).
 */
export function isPathLike(s: string): boolean {
  return s.startsWith("/") || s.startsWith("./") || s.startsWith("../") || s === "." || s === "..";
}
