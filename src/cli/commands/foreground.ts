import type { OvmdClient } from "../../client/client.js";
import { OvmsError, isOvmsError } from "../../core/errors.js";
import type { Printer } from "../context.js";

/** EXIT_ON is the exit status after a signal: 128 + its number, as shells report it. */
const EXIT_ON = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
type Sig = keyof typeof EXIT_ON;

/**
 * Foreground is `ovm run` without -d, from its first moment to the instance's end. The
 * instance is started attached (rfc §6.3): the daemon stops it when the client's connection
 * goes, whatever ends the client. Signals are handled from before the daemon is even asked:
 *
 * - before the start is answered, any signal drops the start request and exits (the daemon
 *   stops whatever it started for a client that went away);
 * - Ctrl-C (SIGINT) once the instance is known asks the guest to power off and keeps showing
 *   the console until it has; a second one forces it off;
 * - SIGTERM and SIGHUP (a closed terminal) exit at once: the attached stream closes and the
 *   daemon stops the instance; in the moment between the start's answer and the attach, the
 *   client asks for the stop itself first.
 */
export class Foreground {
  private readonly dropStart = new AbortController();
  private client?: OvmdClient;
  private instance?: { id: string; name: string };
  private attached = false;
  private stops = 0;
  private readonly handlers = new Map<Sig, () => void>();

  constructor(private readonly out: Printer) {
    for (const sig of Object.keys(EXIT_ON) as Sig[]) {
      const h = () => void this.onSignal(sig);
      this.handlers.set(sig, h);
      process.on(sig, h);
    }
    // A terminal that went away must not turn the console's last lines into a crash.
    process.stdout.on("error", () => undefined);
  }

  /** signal aborts the start request when a signal comes before its answer. */
  get signal(): AbortSignal {
    return this.dropStart.signal;
  }

  /** connected: the daemon answers; `started`: it answered the start with this instance. */
  connected(client: OvmdClient): void {
    this.client = client;
  }

  started(id: string, name: string): void {
    this.instance = { id, name };
  }

  /** holding: the followed log stream holds the instance now. */
  holding(): void {
    this.attached = true;
  }

  /** close removes the signal handlers. */
  close(): void {
    for (const [sig, h] of this.handlers) process.off(sig, h);
  }

  private async onSignal(sig: Sig): Promise<void> {
    const i = this.instance;
    if (!i || !this.client) {
      // Nothing started yet, or the start is in flight: dropping it is enough (rfc §6.3).
      this.dropStart.abort(new OvmsError("CANCELLED", sig));
      this.out.info(
        `ovm: ${sig}: run interrupted before the instance started; the daemon stops what it started`,
      );
      process.exit(EXIT_ON[sig]);
    }
    if (sig !== "SIGINT") {
      if (!this.attached) {
        // Between the start's answer and the attach: ask for the stop before going.
        await Promise.race([
          this.client.stop({ instance_id: i.id }).catch(() => undefined),
          new Promise((r) => setTimeout(r, 2000)),
        ]);
      }
      this.out.info(`ovm: ${sig}: leaving; the daemon stops ${i.name}`);
      process.exit(EXIT_ON[sig]);
    }
    this.stops++;
    this.out.info(
      this.stops === 1 ? `stopping ${i.name} (Ctrl-C again to force)…` : `forcing ${i.name} off…`,
    );
    await this.client
      .stop({ instance_id: i.id, ...(this.stops > 1 ? { force: true } : {}) })
      .catch((e: Error) => {
        if (!isOvmsError(e, "NOT_FOUND")) process.stderr.write(`ovm: stop ${i.name}: ${e.message}\n`);
      });
  }
}
