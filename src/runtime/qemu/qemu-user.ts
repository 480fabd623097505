import { execFileSync } from "node:child_process";
import { chown, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { RuntimeError } from "../runtime-error.js";

/**
 * QemuUser is the unprivileged user QEMU drops to (`-runas`) when the daemon runs as root, or
 * none: it is handed an instance's own files and nothing else.
 */
export class QemuUser {
  private ids?: { uid: number; gid: number };

  constructor(readonly name?: string) {}

  /** grant lets the QEMU user write `paths` (a no-op when QEMU keeps the daemon's user). */
  async grant(paths: string[]): Promise<void> {
    if (!this.name) return;
    // Looked up once: every launch (and every warm-pool refill) grants a few files.
    this.ids ??= {
      uid: Number(execFileSync("id", ["-u", this.name], { encoding: "utf8" }).trim()),
      gid: Number(execFileSync("id", ["-g", this.name], { encoding: "utf8" }).trim()),
    };
    for (const p of paths) await chown(p, this.ids.uid, this.ids.gid);
  }

  /**
   * checkReachable makes sure the QEMU user can reach instance folders after it drops root:
   * QEMU reopens its disk images by path when a migration hands them back (`cont`).
   */
  async checkReachable(dir: string): Promise<void> {
    if (!this.name) return;
    for (let d = resolve(dir); ; d = dirname(d)) {
      const st = await stat(d);
      if ((st.mode & 0o001) === 0) {
        throw new RuntimeError(
          "RUNTIME_UNAVAILABLE",
          `${d} (mode ${(st.mode & 0o777).toString(8)}) is not reachable by the QEMU user ${this.name}: make it traversable (chmod o+x) or choose another state directory`,
        );
      }
      if (d === dirname(d)) return;
    }
  }
}
