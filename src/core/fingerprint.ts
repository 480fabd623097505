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

/**
 * FileBoundMemo keeps values by key together with the fingerprints of the files each was made
 * from, and gives a value back only while every one of those files is unchanged; a changed or
 * missing file forgets the entry.
 */
export class FileBoundMemo<K, V> {
  private readonly entries = new Map<K, { value: V; prints: [string, string][] }>();

  get(key: K): V | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (hit.prints.some(([path, print]) => fingerprint(path) !== print)) {
      this.entries.delete(key);
      return undefined;
    }
    return hit.value;
  }

  /**
   * set keeps `value` bound to `paths` as they are now (so for files that are not rewritten
   * while the value is made from them: blobs, unpacked layers); nothing is kept when one is missing.
   */
  set(key: K, value: V, paths: readonly string[]): void {
    const prints: [string, string][] = [];
    for (const path of paths) {
      const print = fingerprint(path);
      if (print === undefined) return;
      prints.push([path, print]);
    }
    this.entries.set(key, { value, prints });
  }
}
