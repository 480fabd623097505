import { readFile, writeFile } from "node:fs/promises";
import { appendToInitrd, newcArchive } from "../../artifact/convert/newc.js";

/**
 * The runtime's half of the OVMS-Init profile (rfc §6.7): hand the launch file to the guest,
 * and read back the program's exit status.
 */

/**
 * writeLaunchInitrd writes an instance's own initrd: the artifact's OVMS-Init initrd with a
 * newc archive appended that holds `/ovms/launch` (the kernel unpacks both into one initramfs).
 */
export async function writeLaunchInitrd(baseInitrd: string, out: string, launch: string): Promise<void> {
  const extra = newcArchive([
    { path: "ovms", mode: 0o040755 },
    { path: "ovms/launch", mode: 0o100644, data: Buffer.from(launch) },
  ]);
  await writeFile(out, appendToInitrd(await readFile(baseInitrd), extra), { mode: 0o644 });
}

/** EXIT_LINE is OVMS-Init's report on the control port: `OVMS-EXIT: <status>` (a kernel line may share its line). */
const EXIT_LINE = /OVMS-EXIT: (\d{1,3})\b/;

/**
 * readProgramExit reads the control port's log: the program's exit status when OVMS-Init
 * reported one, and the log's last lines (the guest kernel's console) to explain a guest that
 * ended without a report.
 */
export async function readProgramExit(controlLog: string): Promise<{ status?: number; tail: string }> {
  const text = await readFile(controlLog, "utf8").catch(() => "");
  const m = text
    .split(/\r?\n/)
    .map((l) => EXIT_LINE.exec(l))
    .filter((x) => x !== null)
    .pop();
  const tail = text
    .split(/\r?\n/)
    .filter((l) => l.trim() && !EXIT_LINE.test(l) && !l.includes("OVMS-READY"))
    .slice(-3)
    .join(" | ");
  const status = m ? Number(m[1]) : undefined;
  return status !== undefined && status <= 255 ? { status, tail } : { tail };
}
