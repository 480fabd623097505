import { open } from "node:fs/promises";
import { RuntimeError } from "../runtime-error.js";
import type { Injection } from "../types.js";

/**
 * injectTarget picks the ivshmem region an injection writes into (the named device, else the
 * first) and checks the bytes fit it, refusing with INVALID_ARGUMENT (a bad request) otherwise.
 */
export function injectTarget(
  rec: { instance_id: string; devices: { name: string; size: number; path: string }[] },
  req: Injection,
): { path: string; offset: number } {
  const dev = req.device ? rec.devices.find((d) => d.name === req.device) : rec.devices[0];
  if (!dev) {
    throw new RuntimeError(
      "INVALID_ARGUMENT",
      req.device
        ? `instance ${rec.instance_id} has no device "${req.device}" (has: ${rec.devices.map((d) => d.name).join(", ") || "none"})`
        : `instance ${rec.instance_id} has no ivshmem device`,
    );
  }
  const offset = req.offset ?? 0;
  if (offset < 0 || offset + req.data.length > dev.size) {
    throw new RuntimeError(
      "INVALID_ARGUMENT",
      `inject of ${req.data.length} bytes at offset ${offset} does not fit device ${dev.name} (${dev.size} bytes)`,
    );
  }
  return { path: dev.path, offset };
}

/** writeRegion writes `data` at `offset` of a shared-memory region file, which the guest sees at once. */
export async function writeRegion(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, "r+");
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** injectInto writes an injection into a running or paused instance's region (CONFLICT otherwise). */
export async function injectInto(
  rec: { instance_id: string; state: string; devices: { name: string; size: number; path: string }[] },
  req: Injection,
): Promise<number> {
  if (rec.state !== "running" && rec.state !== "paused")
    throw new RuntimeError("CONFLICT", `instance ${rec.instance_id} is ${rec.state}, not running`);
  const { path, offset } = injectTarget(rec, req);
  await writeRegion(path, offset, req.data);
  return req.data.length;
}
