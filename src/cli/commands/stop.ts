import type { Command } from "commander";
import { OvmsError } from "../../core/errors.js";
import { Printer, globals } from "../context.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";

/** register adds `ovm stop ID...`: ACPI power-off, then quit, then kill (or at once with --force). */
export function register(program: Command): void {
  const cmd = program
    .command("stop")
    .description("stop instances: ask the guest to power off, then force it after the timeout")
    .argument("<id...>", "instance ids or names")
    .option("-t, --timeout <seconds>", "how long the guest gets to power off (default 10)", seconds)
    .option("--force", "do not ask the guest: quit QEMU at once");
  addSocketOption(cmd).action(
    async (ids: string[], opts: { timeout?: number; force?: boolean }, c: Command) => {
      const out = new Printer(globals(c));
      const client = daemonClient(c);
      const stopped: { instance_id: string; status: string }[] = [];
      for (const id of ids) {
        const r = await client.stop({
          instance_id: id,
          ...(opts.timeout !== undefined ? { timeout_ms: opts.timeout } : {}),
          ...(opts.force ? { force: true } : {}),
        });
        stopped.push({ instance_id: id, status: r.status });
      }
      out.result({ stopped }, () => stopped.map((s) => s.instance_id).join("\n"));
    },
  );
}

function seconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new OvmsError("USAGE", `--timeout ${v}: expected seconds ≥ 0`);
  return Math.round(n * 1000);
}
