import { createHash } from "node:crypto";
import { realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

/**
 * defaultSocketPath is where the daemon of the default store listens unless told otherwise:
 * `$XDG_RUNTIME_DIR/ovms/ovmd.sock` when XDG_RUNTIME_DIR is set (so two sessions with their own
 * runtime dirs never see each other's daemon, root included), else `/run/ovms/ovmd.sock` as
 * root and `/tmp/ovms-<uid>/ovmd.sock` otherwise (the daemon creates that folder 0700).
 */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const uid = process.getuid?.();
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, "ovms", "ovmd.sock");
  if (uid === 0) return "/run/ovms/ovmd.sock";
  return join("/tmp", `ovms-${uid ?? "user"}`, "ovmd.sock");
}

/**
 * SOCKET_DEFAULTS says, in the order resolveSocketPath tries them, where the daemon's socket
 * is when `--socket` is not given (the end of every `--socket` help, so it cannot drift from
 * the code).
 */
export const SOCKET_DEFAULTS =
  "(default: $OVMD_SOCKET, else the socket of the store's own daemon in $XDG_RUNTIME_DIR/ovms/, " +
  "else in /run/ovms/ as root, else in /tmp/ovms-UID/: ovmd.sock for the default store, ovmd-HASH.sock for another)";

/** canonicalStore is a store folder as daemons report and compare it: the real path when it exists, else the absolute one. */
export function canonicalStore(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    return resolve(dir);
  }
}

/**
 * storeSocketPath is where the daemon of one store listens when nobody names a socket: one
 * daemon per store, so a command never reaches a daemon serving another store by accident. The
 * default store's daemon has the default socket; any other store's is `ovmd-<hash>.sock`
 * beside it, named after the first 16 hex digits of the SHA-256 of its canonical path.
 */
export function storeSocketPath(
  store: { dir: string; defaultDir: string },
  env: NodeJS.ProcessEnv = process.env,
): string {
  const sock = defaultSocketPath(env);
  const dir = canonicalStore(store.dir);
  if (dir === canonicalStore(store.defaultDir)) return sock;
  const hash = createHash("sha256").update(dir).digest("hex").slice(0, 16);
  return join(dirname(sock), `ovmd-${hash}.sock`);
}

/**
 * resolveSocketPath picks the socket: the flag, else `OVMD_SOCKET`, else the socket of the
 * store's own daemon (storeSocketPath) when the store is given, else the default socket.
 */
export function resolveSocketPath(
  flag?: string,
  env: NodeJS.ProcessEnv = process.env,
  store?: { dir: string; defaultDir: string },
): string {
  return flag || env.OVMD_SOCKET || (store ? storeSocketPath(store, env) : defaultSocketPath(env));
}

/**
 * isPathLike tells a path from a reference in `POST /start`'s `manifest`: absolute, or
 * starting with `./` or `../` (relative to the daemon's working folder, so clients send
 * absolute paths).
 */
export function isPathLike(s: string): boolean {
  return s.startsWith("/") || s.startsWith("./") || s.startsWith("../") || s === "." || s === "..";
}
