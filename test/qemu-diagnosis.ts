import { readFile, readdir } from "node:fs/promises";

/**
 * qemuDiagnosis says what a QEMU process is doing, for a test that waited in vain for its
 * guest: the process's and each thread's scheduler state (R running, S sleeping, T stopped),
 * and how much CPU it used over half a second (a spinning guest and an idle or frozen one
 * look alike from the console). Best effort: a process that is gone says so.
 */
export async function qemuDiagnosis(pid: number | undefined): Promise<string> {
  if (!pid) return "no QEMU pid";
  const stat = async (path: string) => {
    const s = await readFile(path, "utf8").catch(() => undefined);
    if (!s) return undefined;
    const comm = s.slice(s.indexOf("(") + 1, s.lastIndexOf(")"));
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return { comm, state: f[0], cpuTicks: Number(f[11]) + Number(f[12]) };
  };
  const before = await stat(`/proc/${pid}/stat`);
  if (!before) return `QEMU pid ${pid} is gone`;
  await new Promise((r) => setTimeout(r, 500));
  const after = await stat(`/proc/${pid}/stat`);
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const threads = (await Promise.all(tids.map((t) => stat(`/proc/${pid}/task/${t}/stat`))))
    .filter((t) => t !== undefined)
    .map((t) => `${t.comm}:${t.state}`);
  const busy = after ? after.cpuTicks - before.cpuTicks : 0;
  return `QEMU pid ${pid} state ${after?.state ?? "?"}, ${busy} CPU ticks in 0.5 s, threads ${threads.join(" ")}`;
}

/**
 * describeInstance is what a test that waited in vain for an instance reports: its state as
 * its owner has it, what its QEMU process does, and the last lines of its console.
 */
export async function describeInstance(
  id: string,
  st: { state?: string; reason?: string; pid?: number } | undefined,
  consoleLines: string[],
): Promise<string> {
  const tail = consoleLines.slice(-6).map((l) => `  | ${l}`);
  return [
    `instance ${id}: ${st?.state ?? "unknown"}${st?.reason ? ` (${st.reason})` : ""}`,
    await qemuDiagnosis(st?.pid),
    `console, last ${tail.length} lines:`,
    ...tail,
  ].join("\n");
}
