import { open, readFile, stat, statfs } from "node:fs/promises";

/**
 * Background snapshots (rfc §5.8): QEMU's `background-snapshot` migration capability saves the
 * device state while the guest is paused, resumes it, and then writes the guest's RAM as of
 * the pause while it runs, copying each page the guest is about to write first (userfaultfd
 * write-protection). The pause no longer grows with the guest's memory.
 *
 * What it needs of the host, checked here before a guest is paused:
 * - userfaultfd for QEMU: `vm.unprivileged_userfaultfd = 1`, or CAP_SYS_PTRACE in the QEMU
 *   process (the launcher grants it to a QEMU confined in namespaces: alone in its PID namespace
 *   it can trace nothing else; `ovmd --background-snapshots off` withholds it).
 * - guest memory the kernel can write-protect: QEMU maps it from tmpfs (shared for a cold boot,
 *   private for a restored clone); a file elsewhere (a preload cache on disk) cannot be.
 * - QEMU's page tables filled in before the pause: QEMU reads one byte of every guest page when
 *   the capture starts, which faults in every page the guest never touched (~60 ms for the
 *   192 MiB demo guest, the whole first pause). `populate` does it first, while the guest runs.
 */

/** unprivilegedUserfaultfd reads `vm.unprivileged_userfaultfd`: whether any process may use userfaultfd. */
export async function unprivilegedUserfaultfd(): Promise<boolean> {
  const v = await readFile("/proc/sys/vm/unprivileged_userfaultfd", "utf8").catch(() => "0");
  return v.trim() === "1";
}

/** TMPFS_MAGIC is statfs's type for tmpfs (and /dev/shm). */
const TMPFS_MAGIC = 0x01021994;

/**
 * backgroundRefusal says why guest memory in `files` cannot be captured in the background (a
 * file not on tmpfs), or undefined when it can.
 */
export async function backgroundRefusal(files: string[]): Promise<string | undefined> {
  for (const f of files) {
    const fs = await statfs(f).catch(() => undefined);
    if (!fs || fs.type !== TMPFS_MAGIC)
      return `the guest memory ${f} is not on tmpfs, which userfaultfd cannot write-protect`;
  }
  return undefined;
}

/** unallocated is how many bytes of `files` are holes: what populating them allocates on tmpfs. */
export async function unallocated(files: string[]): Promise<number> {
  let n = 0;
  for (const f of files) {
    const st = await stat(f);
    n += Math.max(0, st.size - st.blocks * 512);
  }
  return n;
}

/** Mapping is one range of a process's address space that maps a file. */
export interface Mapping {
  start: number;
  end: number;
  path: string;
}

/** mappingsOf parses /proc/PID/maps text for the ranges mapping one of `paths`. */
export function mappingsOf(maps: string, paths: string[]): Mapping[] {
  const want = new Set(paths);
  const out: Mapping[] = [];
  for (const line of maps.split("\n")) {
    // start-end perms offset dev inode path (the path may hold spaces; "(deleted)" is appended to removed files)
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s+(.*)$/.exec(line);
    if (!m || !want.has(m[3])) continue;
    out.push({ start: parseInt(m[1], 16), end: parseInt(m[2], 16), path: m[3] });
  }
  return out;
}

/** CHUNK is how much of QEMU's memory one read covers (one buffer, reused). */
const CHUNK = 1 << 20;

/**
 * populate faults in QEMU's (`pid`) mappings of `files` by reading them through /proc/PID/mem:
 * the kernel fills QEMU's page tables as it would on QEMU's own reads, while the guest runs and
 * without QEMU's lock. Returns the bytes read; 0 when no mapping was found (nothing to do: the
 * capture still works, with the longer pause).
 */
export async function populate(pid: number, files: string[]): Promise<number> {
  const maps = mappingsOf(await readFile(`/proc/${pid}/maps`, "utf8"), files);
  if (!maps.length) return 0;
  const fh = await open(`/proc/${pid}/mem`, "r");
  const buf = Buffer.allocUnsafe(CHUNK);
  let n = 0;
  try {
    for (const m of maps)
      for (let at = m.start; at < m.end; at += CHUNK) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, m.end - at), at);
        n += bytesRead;
        if (!bytesRead) break;
      }
  } finally {
    await fh.close();
  }
  return n;
}
