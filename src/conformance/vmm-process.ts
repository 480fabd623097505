import { readFileSync, readlinkSync } from "node:fs";

/**
 * VmmProcess is what the host says about a VMM process, for a runtime on this machine: status reports the
 * VMM's pid (rfc §6.4), and /proc tells whether that process is still there after a stop, runs
 * under seccomp, as which user and in which namespaces. Reading /proc is looking from outside:
 * nothing of the runtime is imported. Undefined when the process is not visible (another
 * host, another PID namespace, or it is gone).
 */
export interface VmmProcess {
  pid: number;
  /** startTime (field 22 of /proc/PID/stat) tells a process from a later one that got its pid. */
  startTime: string;
  /** euid is the effective user id. */
  euid: number;
  /** seccomp: 0 none, 1 strict, 2 filter (/proc/PID/status `Seccomp:`). */
  seccomp?: number;
  ns: { mnt?: string; pid?: string };
}

/** readProcess reads what /proc says about `pid`, or undefined when it cannot be seen. */
export function readProcess(pid: number): VmmProcess | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the last `)`.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const uid = /^Uid:\s+\d+\s+(\d+)/m.exec(status);
    const sec = /^Seccomp:\s+(\d+)/m.exec(status);
    const link = (n: string) => {
      try {
        return readlinkSync(`/proc/${pid}/ns/${n}`);
      } catch {
        return undefined;
      }
    };
    return {
      pid,
      startTime: fields[19],
      euid: uid ? Number(uid[1]) : -1,
      ...(sec ? { seccomp: Number(sec[1]) } : {}),
      ns: { mnt: link("mnt"), pid: link("pid") },
    };
  } catch {
    return undefined;
  }
}

/** sameProcess tells whether the process `p` described still runs (not a newer one with its pid). */
export function sameProcess(p: VmmProcess): boolean {
  const now = readProcess(p.pid);
  return !!now && now.startTime === p.startTime;
}

/** ownNamespaces are this process's mount and PID namespaces, to compare a VMM's with. */
export function ownNamespaces(): { mnt?: string; pid?: string } {
  return readProcess(process.pid)?.ns ?? {};
}
