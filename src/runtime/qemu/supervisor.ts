import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { constants } from "node:os";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { RuntimeError } from "../runtime-error.js";
import type { StopOptions } from "../types.js";
import { QmpClient } from "./qmp-client.js";

/** Live is what the daemon holds for an instance whose QEMU runs, besides its record. */
export interface Live {
  qmp?: QmpClient;
  /** The launched child (QEMU, or the sandbox around it), when this daemon started it (not after a re-attach). */
  child?: ChildProcess;
  /** Resolves once QEMU has ended and its exit was recorded. */
  exited: Promise<void>;
  /** A stop was asked for: the exit that follows is `exited`, not `failed`. */
  stopping?: boolean;
  snapshotting?: boolean;
  /** Timers and watchers to cancel when QEMU ends or the daemon detaches. */
  watchers: Set<() => void>;
}

/** OnExit is told how a QEMU ended: its exit status (null when unknown) or the signal that killed it. */
export type OnExit = (code: number | null, signal: NodeJS.Signals | null) => void;

type Tracked = Live & { markExited: () => void };

/**
 * Supervisor watches the QEMU processes: it spawns them detached (so they outlive the daemon),
 * hears their exit (as their parent, or by polling the pid of one re-attached after a daemon
 * restart), stops them (ACPI, then QMP quit, then SIGKILL) and lets go of them on shutdown.
 */
export class Supervisor {
  private readonly live = new Map<string, Tracked>();

  get(id: string): Live | undefined {
    return this.live.get(id);
  }

  /**
   * spawn starts QEMU for instance `id` (the command `launch`: QEMU itself, or the sandbox that
   * runs it), detached with its output in `logFile`. Its exit is heard from the moment it is
   * spawned, so even a QEMU that fails at once is recorded. `vmmPid` resolves with QEMU's own
   * pid: the child's, or the one a sandbox reports on fd 3 (undefined if it ended first).
   */
  spawn(
    id: string,
    launch: { file: string; args: string[]; sandboxed: boolean },
    logFile: string,
    onExit: OnExit,
  ): { pid?: number; live: Live; vmmPid: Promise<number | undefined> } {
    const logFd = openSync(logFile, "a");
    let child: ChildProcess;
    try {
      // Detached: QEMU is not killed with the daemon; a restarted daemon re-attaches to it.
      child = spawn(launch.file, launch.args, {
        detached: true,
        stdio: ["ignore", logFd, logFd, ...(launch.sandboxed ? (["pipe"] as const) : [])],
      });
    } finally {
      closeSync(logFd);
    }
    child.unref();
    const live = this.track(id, child);
    child.on("exit", (code, signal) => {
      // bwrap exits with QEMU's status in the shell's encoding: 128 + n for a signal n.
      if (launch.sandboxed && code !== null && code > 128) {
        const sig = signalName(code - 128);
        if (sig) return onExit(null, sig);
      }
      onExit(code, signal);
    });
    const vmmPid = launch.sandboxed ? sandboxChildPid(child) : Promise.resolve(child.pid);
    return { pid: child.pid, live, vmmPid };
  }

  /** attach watches a re-attached QEMU (not our child, so no exit event) by its pid until it is gone. */
  attach(id: string, pid: number, onExit: OnExit): Live {
    const live = this.track(id);
    const t = setInterval(() => {
      if (isAlive(pid)) return;
      clearInterval(t);
      onExit(live.stopping ? 0 : null, null);
    }, 200);
    live.watchers.add(() => clearInterval(t));
    return live;
  }

  /** ended lets go of an instance whose exit has been recorded, and wakes whoever waits for it. */
  ended(id: string): void {
    const live = this.live.get(id);
    if (!live) return;
    for (const w of live.watchers) w();
    this.live.delete(id);
    live.markExited();
  }

  /** detachAll lets go of every QEMU without stopping it (daemon shutdown). */
  detachAll(): void {
    for (const l of this.live.values()) {
      l.qmp?.close();
      for (const w of l.watchers) w();
      // The next daemon records this QEMU's end, not this one.
      l.child?.removeAllListeners("exit");
      (l.child?.stdio[3] as Readable | undefined)?.destroy();
    }
    this.live.clear();
  }

  /**
   * terminate stops a QEMU and resolves once it has ended: without a monitor SIGTERM, else
   * the guest is asked first (ACPI power button) unless `force`, then QEMU (`quit`), then the
   * kernel (SIGKILL). The caller has set `live.stopping`; `pid` is read when it is needed, as
   * the exit may have been recorded (and the pid forgotten) in the meantime.
   */
  async terminate(live: Live, pid: () => number | undefined, opts: StopOptions): Promise<void> {
    // The timer is cleared when QEMU ends first: a graceful stop with a long timeout_ms must not
    // hold the daemon's event loop (and its shutdown) for the rest of that timeout.
    const waitExit = (ms: number) => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        live.exited.then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms))),
      ]).finally(() => clearTimeout(timer));
    };
    const p = pid();
    if (!live.qmp && p) {
      // No monitor: QEMU shuts down cleanly on SIGTERM.
      process.kill(p, "SIGTERM");
      if (!(await waitExit(opts.timeoutMs ?? 5000))) kill(pid());
    } else if (!opts.force) {
      await live.qmp?.execute("system_powerdown").catch(() => undefined);
      if (!(await waitExit(opts.timeoutMs ?? 10_000))) {
        await live.qmp?.execute("quit").catch(() => undefined);
        if (!(await waitExit(2000))) kill(pid());
      }
    } else {
      await live.qmp?.execute("quit").catch(() => undefined);
      if (!(await waitExit(1000))) kill(pid());
    }
    await live.exited;
  }

  private track(id: string, child?: ChildProcess): Tracked {
    let markExited!: () => void;
    const exited = new Promise<void>((r) => (markExited = r));
    const live: Tracked = { child, exited, markExited, watchers: new Set() };
    this.live.set(id, live);
    return live;
  }
}

/**
 * connectQmp connects to a starting QEMU's monitor, retrying until it listens or `timeoutMs`
 * passes; it gives up with START_FAILED as soon as `gone` says QEMU has ended.
 */
export async function connectQmp(sock: string, timeoutMs: number, gone: () => boolean): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gone()) throw new RuntimeError("START_FAILED", "QEMU exited during start-up");
    try {
      return await QmpClient.connect(sock, Math.max(500, deadline - Date.now()));
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** exitReason says why a QEMU that was not asked to stop ended. */
export function exitReason(code: number | null, signal: NodeJS.Signals | null): string {
  return signal
    ? `QEMU was killed by ${signal}`
    : code === null
      ? "the QEMU process ended unexpectedly (re-attached: exit status unknown)"
      : `QEMU exited with status ${code}`;
}

/**
 * sandboxChildPid reads QEMU's pid from the JSON lines bwrap writes on the child's fd 3
 * (`{"child-pid": N}`); the pipe then stays open, unreferenced, so that bwrap can still report
 * the exit. Undefined when the sandbox ends before it started QEMU.
 */
function sandboxChildPid(child: ChildProcess): Promise<number | undefined> {
  const pipe = child.stdio[3] as Readable & { unref?: () => void };
  return new Promise((resolve) => {
    const lines = createInterface({ input: pipe });
    lines.on("line", (l) => {
      try {
        const pid = (JSON.parse(l) as { "child-pid"?: number })["child-pid"];
        if (typeof pid !== "number") return;
        // Held until now (someone waits for the pid); then it must not keep the daemon alive.
        pipe.unref?.();
        resolve(pid);
      } catch {
        // not a line for us
      }
    });
    lines.on("close", () => resolve(undefined));
    child.once("exit", () => resolve(undefined));
  });
}

/** signalName is the name of signal number `n`, if it is one. */
function signalName(n: number): NodeJS.Signals | undefined {
  return (Object.entries(constants.signals) as [NodeJS.Signals, number][]).find(([, v]) => v === n)?.[0];
}

/** kill sends SIGKILL to a QEMU that still runs. */
export function kill(pid: number | undefined): void {
  if (pid && isAlive(pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** isAlive tells whether `pid` runs (a zombie does not count). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}

/** isOurQemu checks that `pid` is still the QEMU of instance `id`, not a recycled pid. */
export function isOurQemu(pid: number, id: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(`ovms-${id}`);
  } catch {
    return false;
  }
}

/** procMetrics reads CPU time and RSS of a process from /proc. */
export async function procMetrics(pid: number): Promise<{ cpuTimeMs?: number; rssBytes?: number }> {
  const out: { cpuTimeMs?: number; rssBytes?: number } = {};
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields.length > 13)
    out.cpuTimeMs = Math.round(((Number(fields[11]) + Number(fields[12])) * 1000) / 100);
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const rss = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  if (rss) out.rssBytes = Number(rss) * 1024;
  return out;
}
