import { open, stat } from "node:fs/promises";
import { StringDecoder } from "node:string_decoder";
import { transition } from "../lifecycle.js";
import { RuntimeError } from "../runtime-error.js";
import { TERMINAL_STATES, type InstanceState } from "../types.js";
import { watchFirstOutput } from "./serial-log.js";

/**
 * BootPhase is where the boot watchdog (RFC §6.5) has an instance: `booting` until the guest's
 * userspace writes its first console line, then `booted` for good; `stalled` while the console
 * of a booting guest has been silent for the timeout; `unwatched` when nobody watches (the
 * watchdog is off, or the instance was restored: its kernel booted long ago).
 */
export type BootPhase = "booting" | "booted" | "stalled" | "unwatched";

/** DEFAULT_BOOT_TIMEOUT_MS is how long a booting guest's console may stay silent (ovmd --boot-timeout). */
export const DEFAULT_BOOT_TIMEOUT_MS = 60_000;

/** bootTimeout is the watchdog's timeout for one start: the one asked for (0: off), else the daemon's. */
export function bootTimeout(asked: number | undefined, daemonDefault: number): number {
  if (asked === undefined) return daemonDefault;
  if (!Number.isInteger(asked) || asked < 0)
    throw new RuntimeError("INVALID_ARGUMENT", `boot timeout ${asked} ms: want 0 (not watched) or more`);
  return asked;
}

/** TAIL_LINES is how many of the last console lines a stall report carries. */
export const TAIL_LINES = 10;

/**
 * KERNEL_LINE is a line the kernel printed: Linux prefixes its log lines on the console with
 * the seconds since boot (`[    0.535934] …`, CONFIG_PRINTK_TIME, on in Debian's kernels).
 * Userspace output has no such prefix, which is how the watchdog knows init has started.
 */
const KERNEL_LINE = /^\[\s*\d+\.\d+\]/;

/** CONTROL matches terminal escape sequences and control bytes. */
// eslint-disable-next-line no-control-regex
const CONTROL = /\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x1f]/g;

/** isUserspaceLine tells a console line of the guest's userspace from one of its kernel (or an empty one). */
export function isUserspaceLine(line: string): boolean {
  // Terminal control bytes (cursor moves, colours) may lead a line; they decide nothing.
  const text = line.replace(CONTROL, "").trim();
  return text.length > 0 && !KERNEL_LINE.test(text);
}

/** Stall is what a stall report says: for how long the console was silent, its last lines and a hint. */
export interface Stall {
  silentMs: number;
  /** Whether the guest had printed anything at all. */
  anyOutput: boolean;
  lines: string[];
  hint: string;
  /** One line for InstanceInfo.reason. */
  reason: string;
}

/**
 * BootWatch is the watchdog's logic, fed with console text and the time (pure: tested with a
 * fake clock). Boot is over at the first console line from the guest's userspace (a line
 * without the kernel's timestamp prefix). Until then, a console that stays silent for
 * `timeoutMs` from the start, or since its last output, is a stall; output after a stall
 * ends it (the guest was slow, not hung). Time the instance spends paused does not count.
 */
export class BootWatch {
  phase: BootPhase = "booting";
  private lastOutput: number;
  private anyOutput = false;
  private partial = "";
  private readonly tail: string[] = [];

  constructor(
    private readonly timeoutMs: number,
    start: number,
    private readonly context: { kernelArgsAdded?: string[] } = {},
  ) {
    this.lastOutput = start;
  }

  /**
   * feed takes console text that arrived at `now`; it returns the phase change it caused:
   * `booted` (userspace spoke), `resumed` (output after a stall) or nothing.
   */
  feed(text: string, now: number): "booted" | "resumed" | undefined {
    if (!text || this.phase === "booted" || this.phase === "unwatched") return undefined;
    this.lastOutput = now;
    this.anyOutput = true;
    const wasStalled = this.phase === "stalled";
    this.partial += text;
    const lines = this.partial.split(/\r?\n/);
    this.partial = lines.pop() ?? "";
    for (const l of lines) {
      this.remember(l);
      if (isUserspaceLine(l)) {
        this.phase = "booted";
        return "booted";
      }
    }
    if (wasStalled) {
      this.phase = "booting";
      return "resumed";
    }
    return undefined;
  }

  /**
   * tick checks the silence at `now`; `running` says whether the guest's CPUs run (a paused
   * guest is silent on purpose). It returns the stall once, when the console has just been
   * silent for the timeout.
   */
  tick(now: number, running: boolean): Stall | undefined {
    if (this.phase !== "booting") return undefined;
    if (!running) {
      this.lastOutput = now;
      return undefined;
    }
    const silentMs = now - this.lastOutput;
    if (silentMs < this.timeoutMs) return undefined;
    this.phase = "stalled";
    return this.report(silentMs);
  }

  private remember(line: string): void {
    if (!line.trim()) return;
    this.tail.push(line.trimEnd());
    if (this.tail.length > TAIL_LINES) this.tail.shift();
  }

  private report(silentMs: number): Stall {
    const lines = [...this.tail, ...(this.partial.trim() ? [this.partial.trimEnd()] : [])];
    const s = Math.round(silentMs / 1000);
    const hint = stallHint(this.anyOutput, lines, this.context.kernelArgsAdded ?? []);
    const what = this.anyOutput
      ? `the console stopped during boot: nothing for ${s} s after "${lines[lines.length - 1] ?? ""}"`
      : `the guest printed nothing on its console for ${s} s after the start`;
    return { silentMs, anyOutput: this.anyOutput, lines, hint, reason: `boot stalled: ${what}; ${hint}` };
  }
}

/**
 * stallHint says what most likely holds a guest's boot, from what its console showed: the
 * TSC calibration of a kernel without a reference clock (microvm under TCG) first, as the
 * commonest cause, then the console setup.
 */
export function stallHint(anyOutput: boolean, lines: string[], added: string[]): string {
  const text = lines.join("\n");
  const clock = added.length
    ? `the runtime added ${added.join(" ")} for that`
    : "add tsc_early_khz=<host TSC kHz> to kernel.args (the runtime adds it itself on microvm under TCG when it knows the host's rate)";
  if (/tsc|calibrat|PIT|clocksource|timer/i.test(text)) {
    return `the kernel's last words are about its clock: under TCG a kernel without a reference clock (microvm has no HPET or ACPI PM timer) can hang calibrating the TSC; ${clock}`;
  }
  if (!anyOutput) {
    return `the kernel printed nothing: check that kernel.args has console=ttyS0 (without it nothing reaches the serial console); a quiet kernel can also hang silently calibrating its TSC under TCG (${clock}); a guest that is silent on purpose while it boots needs boot_timeout_ms 0`;
  }
  return `the guest stopped before its userspace printed a line: look at the last lines above (a missing root device or driver, a panic without panic=-1, an init that waits); under TCG on a busy host a kernel can also stall on its clock (${clock})`;
}

/**
 * watchConsole follows a guest's serial log file for the boot watchdog: it reads what was
 * added every `everyMs`, feeds `watch` and reports phase changes. It ends by itself once boot
 * is over, or when `alive` says the instance has ended; the returned function ends it too.
 */
export function watchConsole(
  path: string,
  watch: BootWatch,
  on: {
    alive(): boolean;
    running(): boolean;
    stalled(s: Stall): void;
    resumed(): void;
    booted(): void;
  },
  everyMs = 250,
): () => void {
  let offset = 0;
  let busy = false;
  // A character may be split between two reads.
  const utf8 = new StringDecoder("utf8");
  const t = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      if (!on.alive()) return stop();
      const bytes = await readFrom(path, offset);
      offset += bytes.length;
      const now = Date.now();
      const change = watch.feed(utf8.write(bytes), now);
      if (change === "booted") {
        stop();
        return on.booted();
      }
      if (change === "resumed") on.resumed();
      const stall = watch.tick(now, on.running());
      if (stall) on.stalled(stall);
    } finally {
      busy = false;
    }
  }, everyMs);
  t.unref?.();
  const stop = () => clearInterval(t);
  return stop;
}

async function readFrom(path: string, offset: number): Promise<Buffer> {
  const st = await stat(path).catch(() => undefined);
  if (!st || st.size <= offset) return Buffer.alloc(0);
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(Math.min(st.size - offset, 1 << 20));
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Booting is the part of an instance's record the boot tracking reads and writes. */
export interface Booting {
  state: InstanceState;
  reason?: string;
  boot_ms?: number;
  kernel_args_added?: string[];
  boot?: { phase: BootPhase; timeout_ms: number; console_tail?: string[] };
}

/**
 * trackBoot follows a cold-booting instance's console (`serialLog`): it records `boot_ms` (start
 * request at `t0` to the first output) and runs the boot watchdog, which moves the instance
 * to `stalled` with the last console lines and a hint when the console stays silent too long,
 * and back to `running` when the guest speaks again. `save` persists the record;
 * `onFirstOutput` hears of the first output too. Returns the function that stops both.
 */
export function trackBoot(
  rec: Booting,
  serialLog: string,
  t0: number,
  save: () => Promise<void>,
  onFirstOutput?: () => void,
): () => void {
  const live = () => !TERMINAL_STATES.has(rec.state);
  const stopFirst = watchFirstOutput(serialLog, live, () => {
    rec.boot_ms = Math.round(performance.now() - t0);
    onFirstOutput?.();
    void save();
  });
  if (rec.boot?.phase !== "booting" && rec.boot?.phase !== "stalled") return stopFirst;
  const boot = rec.boot;
  const watch = new BootWatch(boot.timeout_ms, Date.now(), { kernelArgsAdded: rec.kernel_args_added ?? [] });
  const unstall = (phase: BootPhase) => {
    boot.phase = phase;
    delete boot.console_tail;
    if (rec.state === "stalled") {
      transition(rec, "running");
      delete rec.reason;
    }
    void save();
  };
  const stopWatch = watchConsole(serialLog, watch, {
    alive: live,
    // Starting (no monitor yet) or paused: the silence is not the guest's.
    running: () => rec.state === "running" || rec.state === "stalled",
    stalled: (s) => {
      if (rec.state !== "running") return;
      transition(rec, "stalled");
      rec.reason = s.reason;
      boot.phase = "stalled";
      boot.console_tail = s.lines;
      void save();
    },
    resumed: () => unstall("booting"),
    booted: () => unstall("booted"),
  });
  return () => {
    stopFirst();
    stopWatch();
  };
}
