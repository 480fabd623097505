import { statSync } from "node:fs";

/**
 * fingerprint names a file's identity and last change of content (inode, size, mtime in ns), or
 * undefined when there is no such file. Caches of what was read from a file keep it and trust
 * what they read while it stays the same: OVMS replaces the files it writes by rename (a new
 * inode) and never edits content-addressed blobs. Not ctime: granting QEMU a file (chmod, ACLs)
 * changes it at every start without changing a byte. Synchronous on purpose: a stat is cheaper
 * than a trip through libuv's thread pool, and the hot paths that ask make a handful.
 */
export function fingerprint(path: string): string | undefined {
  const st = statSync(path, { bigint: true, throwIfNoEntry: false });
  return st && `${st.ino}:${st.size}:${st.mtimeNs}`;
}
