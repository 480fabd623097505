import { JsonFile } from "./json-file.js";

/** ATTACH_GRACE_MS is how long an attached start's instance waits for its client's follow (rfc §6.3). */
export const ATTACH_GRACE_MS = 30_000;

/** LifelineOptions say how lifelines end instances and where they are remembered. */
export interface LifelineOptions {
  /** stop ends an instance whose client is gone; `why` goes to the log. */
  stop: (id: string, why: string) => Promise<void>;
  /** file keeps the ids of attached instances across a daemon crash (default: nowhere). */
  file?: string;
  graceMs?: number;
}

/**
 * Lifelines tie instances to the clients that started them attached (`POST /start` with
 * `attach`, then `GET /logs?follow=1&attach=1`): when the connection that holds an instance
 * closes while the instance lives, the instance is stopped, so a foreground `ovm run` that is
 * interrupted, killed or loses its terminal never leaves its VM running (when several
 * connections hold one instance, the last to go decides). The ids are kept in
 * a file, so that a daemon that crashed gives a recovered attached instance the grace period
 * again instead of forgetting it (its client is gone with the old daemon's connection).
 */
export class Lifelines {
  /** Instances started attached whose client has not taken hold yet, with their timers. */
  private readonly waiting = new Map<string, NodeJS.Timeout>();
  /** Instances held by a connection, with how many connections hold each. */
  private readonly held = new Map<string, number>();
  private closing = false;
  private readonly graceMs: number;
  private readonly file: JsonFile<string[]>;

  constructor(private readonly opts: LifelineOptions) {
    this.graceMs = opts.graceMs ?? ATTACH_GRACE_MS;
    this.file = new JsonFile(opts.file);
  }

  /** ids are the instances attached now (waiting for their client, or held). */
  get ids(): string[] {
    return [...new Set([...this.waiting.keys(), ...this.held.keys()])];
  }

  /** isAttached tells whether an instance has (or waits for) an attached client. */
  isAttached(id: string): boolean {
    return this.waiting.has(id) || this.held.has(id);
  }

  /**
   * expect starts the grace period of an attached instance: unless a connection takes hold
   * of it in time, it is stopped.
   */
  expect(id: string, why = `no client attached within ${this.graceMs / 1000} s of the start`): void {
    if (this.closing || this.waiting.has(id)) return;
    const t = setTimeout(() => {
      this.waiting.delete(id);
      if (!this.held.has(id)) this.end(id, why);
    }, this.graceMs);
    t.unref();
    this.waiting.set(id, t);
    this.save();
  }

  /**
   * hold makes a connection an instance's lifeline until `closed` settles: with `lost` (the
   * client went away before the instance ended, and `ended` says it still lives), the instance
   * is stopped; a stream that closed because the instance ended lets go of it.
   */
  hold(id: string, closed: Promise<{ lost: boolean }>, ended: () => Promise<boolean>): void {
    const t = this.waiting.get(id);
    if (t) clearTimeout(t);
    this.waiting.delete(id);
    this.held.set(id, (this.held.get(id) ?? 0) + 1);
    this.save();
    void closed.then(async ({ lost }) => {
      const n = (this.held.get(id) ?? 1) - 1;
      if (n > 0) this.held.set(id, n);
      else this.held.delete(id);
      if (this.closing) return;
      // The last connection holding it decides: one of two attached clients leaving stops nothing.
      if (lost && n <= 0 && !(await ended())) this.end(id, "its attached client went away");
      else this.save();
    });
  }

  /** lose stops an attached instance at once when its client went away before taking hold of it. */
  lose(id: string, why: string): void {
    if (this.closing || this.held.has(id)) return;
    this.end(id, why);
  }

  /** forget drops an instance that has ended or was removed. */
  forget(id: string): void {
    const t = this.waiting.get(id);
    if (t) clearTimeout(t);
    if (this.waiting.delete(id) || this.held.delete(id)) this.save();
  }

  /**
   * recover reads the ids a previous daemon kept and gives each one still alive the grace
   * period again: its client held it through the old daemon's connection, now closed.
   */
  async recover(live: (id: string) => boolean): Promise<string[]> {
    const ids = await this.file.read([]);
    const again = (Array.isArray(ids) ? ids : []).filter(
      (id): id is string => typeof id === "string" && live(id),
    );
    for (const id of again)
      this.expect(id, "its attached client did not come back after the daemon restarted");
    this.save();
    return again;
  }

  /**
   * close is the daemon shutting down: attached instances lose their lifeline, so they are
   * stopped (with `stop`, awaited); from then on a closing connection stops nothing.
   */
  async close(stop: (id: string) => Promise<void>): Promise<void> {
    const ids = this.ids;
    this.closing = true;
    for (const t of this.waiting.values()) clearTimeout(t);
    this.waiting.clear();
    this.held.clear();
    await Promise.allSettled(ids.map((id) => stop(id)));
    this.save();
    await this.file.flush();
  }

  private end(id: string, why: string): void {
    this.forget(id);
    void this.opts.stop(id, why).catch(() => undefined);
  }

  /** save writes the attached ids. */
  private save(): void {
    this.file.write(this.ids);
  }
}
