import { execFileSync } from "node:child_process";
import { chown, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { RuntimeError } from "../runtime-error.js";

/**
 * QemuUser is the unprivileged user QEMU runs as when the daemon runs as root, or none: it is
 * handed an instance's own files and nothing else.
 */
export class QemuUser {
  private looked?: { uid: number; gid: number };

  constructor(readonly name?: string) {}

  /** ids are the user's uid and gid, looked up once: every launch (and warm-pool refill) needs them. */
  async ids(): Promise<{ uid: number; gid: number }> {
    this.looked ??= {
      uid: Number(execFileSync("id", ["-u", this.name ?? ""], { encoding: "utf8" }).trim()),
      gid: Number(execFileSync("id", ["-g", this.name ?? ""], { encoding: "utf8" }).trim()),
    };
    return this.looked;
  }

  /** grant lets the QEMU user write `paths` (a no-op when QEMU keeps the daemon's user). */
  async grant(paths: string[]): Promise<void> {
    if (!this.name) return;
    const { uid, gid } = await this.ids();
    for (const p of paths) await chown(p, uid, gid);
  }

  /**
   * checkReachable makes sure the QEMU user can reach `path` after QEMU dropped root with
   * `-runas`: QEMU reopens its overlay by path when a migration hands it back (`cont`), so every
   * folder above the instance folders must let others pass (o+x).
   */
  async checkReachable(path: string): Promise<void> {
    if (!this.name) return;
    const st = await stat(path);
    for (let d = st.isDirectory() ? resolve(path) : dirname(resolve(path)); ; d = dirname(d)) {
      const ds = await stat(d);
      if ((ds.mode & 0o001) === 0) {
        throw new RuntimeError(
          "RUNTIME_UNAVAILABLE",
          `${d} (mode ${(ds.mode & 0o777).toString(8)}) is not reachable by the QEMU user ${this.name}, which needs ${path}: confine QEMU in namespaces (install bubblewrap; ovmd --confine auto) or make the folder traversable (chmod o+x)`,
        );
      }
      if (d === dirname(d)) return;
    }
  }
}
