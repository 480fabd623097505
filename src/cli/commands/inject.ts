import { readFile, stat } from "node:fs/promises";
import type { Command } from "commander";
import { OvmsError } from "../../core/errors.js";
import { Printer, globals } from "../context.js";
import { addSocketOption, daemonClient, inFlagWords } from "./daemon-client.js";

/** MAX_INJECT bounds what one inject sends (base64 of it must fit the daemon's body limit). */
const MAX_INJECT = 8 << 20;

/** register adds `ovm inject ID --file F`: write a file's bytes into an instance's ivshmem region. */
export function register(program: Command): void {
  const cmd = program
    .command("inject")
    .description("write a file's bytes into an instance's shared-memory (ivshmem) device")
    .argument("<id>", "instance id or name")
    .requiredOption("--file <path>", "the bytes to write")
    .option("--offset <n>", "byte offset in the region (default: 0)", (v) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0)
        throw new OvmsError("USAGE", `--offset ${v}: expected a whole number ≥ 0`);
      return n;
    })
    .option("--device <name>", "ivshmem device name (default: the first)")
    .addHelpText(
      "after",
      `
The guest sees the bytes in the device's PCI BAR at once; no guest cooperation is needed.

Examples:
  ovm inject web --file job.bin
  ovm inject web --file job.bin --device shm0 --offset 4096`,
    );
  addSocketOption(cmd).action(
    async (id: string, opts: { file: string; offset?: number; device?: string }, c: Command) => {
      const out = new Printer(globals(c));
      const st = await stat(opts.file).catch(() => undefined);
      if (!st?.isFile()) throw new OvmsError("USAGE", `--file ${opts.file}: no such file`);
      if (st.size > MAX_INJECT)
        throw new OvmsError(
          "USAGE",
          `--file ${opts.file}: ${st.size} bytes, at most ${MAX_INJECT} per inject`,
        );
      const data = await readFile(opts.file);
      const r = await (
        await daemonClient(c)
      )
        .inject({
          instance_id: id,
          content: {
            mmio: {
              data: data.toString("base64"),
              encoding: "base64",
              ...(opts.offset !== undefined ? { offset: opts.offset } : {}),
              ...(opts.device !== undefined ? { device: opts.device } : {}),
            },
          },
        })
        .catch((e: unknown) => {
          throw inFlagWords(e, {
            "/content/mmio/device": ["--device", opts.device],
            "/content/mmio/offset": ["--offset", opts.offset],
          });
        });
      out.result(r, () => `injected ${r.bytes} bytes into ${id}`);
    },
  );
}
