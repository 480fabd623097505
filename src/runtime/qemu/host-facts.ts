import { readFile, statfs } from "node:fs/promises";
import { freemem } from "node:os";
import type { HostFacts } from "./plan.js";

/**
 * readHostFacts reads what the planner's resource checks need: available memory, free space on
 * the tmpfs folder `shm` and, only for an mlock_required restore (`memlock`), the memlock limit
 * and whether QEMU keeps CAP_IPC_LOCK (root that does not drop to `runAs`).
 */
export async function readHostFacts(shm: string, memlock: boolean, runAs?: string): Promise<HostFacts> {
  const [memAvailable, fs, limit] = await Promise.all([
    readMemAvailable(),
    statfs(shm).catch(() => undefined),
    memlock ? readMemlockLimit() : undefined,
  ]);
  const facts: HostFacts = { memAvailable };
  if (fs) facts.shm = { path: shm, freeBytes: fs.bavail * fs.bsize };
  if (memlock) {
    facts.memlockLimit = limit;
    facts.ipcLock = process.getuid?.() === 0 && !runAs;
  }
  return facts;
}

/** readMemAvailable is MemAvailable of /proc/meminfo, or free memory where there is none. */
async function readMemAvailable(): Promise<number> {
  const text = await readFile("/proc/meminfo", "utf8").catch(() => "");
  const kb = /MemAvailable:\s+(\d+) kB/.exec(text)?.[1];
  return kb ? Number(kb) * 1024 : freemem();
}

/** readMemlockLimit is RLIMIT_MEMLOCK of this process in bytes (Infinity: unlimited or unknown). */
async function readMemlockLimit(): Promise<number> {
  const limits = await readFile("/proc/self/limits", "utf8").catch(() => "");
  const m = /Max locked memory\s+(\S+)/.exec(limits);
  return !m || m[1] === "unlimited" ? Infinity : Number(m[1]);
}
