import type { Command } from "commander";
import { OvmsError } from "../../core/errors.js";
import { openConsole } from "../../client/console.js";
import { positiveInt } from "./copy.js";
import { addSocketOption, daemonClient } from "./daemon-client.js";

/** DETACH is Ctrl-] (0x1d), the key that leaves the console on a terminal (as telnet and virsh console). */
const DETACH = 0x1d;

/**
 * register adds `ovm attach ID`: the instance's serial console on this terminal, both ways
 * (the WebSocket of `GET /console/{id}`). On a terminal, keys go to the guest raw (Ctrl-C
 * included) and Ctrl-] detaches; piped input is typed as it comes. It ends with status 0 when
 * the instance ends or on detach.
 */
export function register(program: Command): void {
  const cmd = program
    .command("attach")
    .description(
      "attach this terminal to an instance's serial console: type into the guest (Ctrl-] detaches)",
    )
    .argument("<id>", "instance id or name")
    .option("--tail <bytes>", "bytes of earlier output to show first (default: 65536)", (v) =>
      v === "0" ? 0 : positiveInt("--tail")(v),
    )
    .addHelpText(
      "after",
      `
Examples:
  ovm attach web                          # the console of instance web; Ctrl-] to leave
  printf 'uname -a\\r' | ovm attach web    # type a line, print the console until web ends`,
    );
  addSocketOption(cmd).action(async (id: string, opts: { tail?: number }, c: Command) => {
    // The socket daemonClient picks (the flag, $OVMD_SOCKET, else the default), as every command does.
    const socketPath = (await daemonClient(c)).socketPath!;
    const { ws, closed } = await openConsole({ socketPath }, id, {
      ...(opts.tail !== undefined ? { tail: opts.tail } : {}),
      onMessage: (data) => void process.stdout.write(data),
    });
    const stdin = process.stdin;
    const tty = stdin.isTTY === true;
    let detached = false;
    const detach = () => {
      detached = true;
      ws.close(1000, "detached");
    };
    const onInput = (data: Buffer) => {
      if (tty && data.includes(DETACH)) return detach();
      ws.send(data);
    };
    if (tty) {
      stdin.setRawMode(true);
      process.stderr.write(`ovm: attached to ${id}; Ctrl-] detaches\r\n`);
    }
    stdin.on("data", onInput);
    const { code, reason } = await closed;
    stdin.off("data", onInput);
    if (tty) stdin.setRawMode(false);
    stdin.pause();
    stdin.unref?.();
    if (detached || code === 1000) {
      if (tty)
        process.stderr.write(detached ? "\r\novm: detached\r\n" : "\r\novm: the instance has ended\r\n");
      return;
    }
    if (code === 4409)
      throw new OvmsError("CONFLICT", `${id}: ${reason || "the serial input refused the input"}`);
    throw new OvmsError(
      "DAEMON_PROTOCOL",
      `${id}: the console closed (${code}${reason ? `: ${reason}` : ""})`,
    );
  });
}
