import { randomBytes } from "node:crypto";
import type {
  InstanceInfo,
  InstanceState,
  LogRecord,
  StartOverrides,
  VersionInfo,
} from "../api/types.generated.js";
import { Skip, Violation, expect, type Level } from "./check.js";
import type { FixtureName, Fixtures } from "./runtime-fixtures.js";
import type { Answer, Followed, RuntimeApi } from "./runtime-api.js";

/** RuntimeSettings are what the runtime checks need to know beyond the API. */
export interface RuntimeSettings {
  levels: Level[];
  /** accel is passed as an override on every start when set. */
  accel?: "auto" | "kvm" | "tcg";
  /** runtimeStore is the runtime's OCI layout store, when the suite may read it (snapshot artifacts). */
  runtimeStore?: string;
  /** registry (HOST/REPO) is where fixtures were pushed; also used for a missing-artifact probe. */
  registry?: string;
  /** bootTimeoutMs bounds every wait for the guest (default 180 s: TCG on a busy host is slow). */
  bootTimeoutMs: number;
  /** tcp is a TCP listener of the runtime whose token rule the secure level checks. */
  tcp?: RuntimeApi;
}

/** Guest is an instance the suite started: its id and name, and the answer to its start. */
export interface Guest {
  id: string;
  name: string;
  fixture: FixtureName;
  start: Answer;
  /** sentAt is when the start request was sent (performance.now()). */
  sentAt: number;
}

/**
 * LIFECYCLE is the state machine of rfc §6.5 (and spec/runtimes §3) as direct moves; `exited`
 * is reachable from every live state because a runtime that restarts finds VMMs gone. Written
 * from the RFC on purpose, not imported from the reference runtime's `lifecycle.ts`: the suite
 * judges runtimes, that one included, and must not agree with it by construction.
 */
export const LIFECYCLE: Readonly<Record<InstanceState, InstanceState[]>> = {
  created: ["starting", "failed", "exited"],
  starting: ["running", "paused", "stopping", "failed", "exited"],
  running: ["stalled", "paused", "stopping", "exited", "failed"],
  stalled: ["running", "paused", "stopping", "exited", "failed"],
  paused: ["running", "stopping", "exited", "failed"],
  stopping: ["exited", "failed"],
  exited: [],
  failed: [],
};

/** reachable tells whether `to` can follow `from` (possibly through states a poll did not see). */
export function reachable(from: InstanceState, to: InstanceState): boolean {
  if (from === to) return true;
  const seen = new Set<InstanceState>([from]);
  const todo = [from];
  while (todo.length) {
    for (const n of LIFECYCLE[todo.pop()!] ?? []) {
      if (n === to) return true;
      if (!seen.has(n)) {
        seen.add(n);
        todo.push(n);
      }
    }
  }
  return false;
}

/**
 * RuntimeContext is what the runtime checks share: the API, the fixtures, the instances
 * started so far (each guest boot costs seconds under TCG, so checks reuse them through
 * `once`), and every state each instance was seen in, so the lifecycle can be judged on the
 * whole run.
 */
export class RuntimeContext {
  /** runId keeps this run's instance names and snapshot tags apart from anyone else's. */
  readonly runId = randomBytes(3).toString("hex");
  version?: VersionInfo;
  /** states holds, per instance id, the states seen by status and list, in order, with when. */
  readonly states = new Map<string, { state: InstanceState; at: number }[]>();
  /** created holds the ids of every instance the suite made (removed at the end). */
  readonly created = new Set<string>();
  /** follows are log streams opened by checks, closed at the end. */
  readonly follows: Followed[] = [];
  private readonly memos = new Map<string, Promise<unknown>>();

  constructor(
    readonly api: RuntimeApi,
    readonly fixtures: Fixtures,
    readonly settings: RuntimeSettings,
  ) {
    // Every instance a start made, whichever check asked (and even if it should have been
    // refused), is removed at the end.
    api.onAnswer = (method, path, a) => {
      if (
        method === "POST" &&
        path === "/start" &&
        a.status === 202 &&
        typeof a.body?.instance_id === "string"
      )
        this.created.add(a.body.instance_id);
    };
  }

  /** has tells whether a level was asked for. */
  has(level: Level): boolean {
    return this.settings.levels.includes(level);
  }

  /** name is the instance name of a role in this run (`conf-<run>-<role>`). */
  name(role: string): string {
    return `conf-${this.runId}-${role}`;
  }

  /** once runs `fn` the first time `key` is asked for and hands every caller the same promise. */
  once<T>(key: string, fn: () => Promise<T>): Promise<T> {
    let p = this.memos.get(key) as Promise<T> | undefined;
    if (!p) {
      p = fn();
      p.catch(() => undefined);
      this.memos.set(key, p);
    }
    return p;
  }

  /** peek hands back what `once` started under `key`, if anything did. */
  peek<T>(key: string): Promise<T> | undefined {
    return this.memos.get(key) as Promise<T> | undefined;
  }

  /**
   * need runs what a check only uses (a guest another check starts, which memoizes itself
   * with `once`): when that failed, this check is skipped, saying why, instead of failing a
   * second time for the same cause.
   */
  async need<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new Skip(`needs ${what}, which failed: ${(e as Error).message.split("\n")[0]}`);
    }
  }

  /** overrides adds the suite's accelerator choice to a start's overrides. */
  overrides(o: StartOverrides = {}): StartOverrides {
    return this.settings.accel ? { accel: this.settings.accel, ...o } : o;
  }

  /**
   * start sends `POST /start` for a fixture (or another `manifest`) under the role's name and
   * insists on `202` with the contract's answer; the instance is remembered for clean-up.
   */
  async start(fixture: FixtureName, role: string, o: StartOverrides = {}, manifest?: string): Promise<Guest> {
    const name = this.name(role);
    const sentAt = performance.now();
    const start = await this.api.post("/start", {
      manifest: manifest ?? this.fixtures[fixture].manifest,
      overrides: this.overrides({ ...o, name }),
    });
    const id = start.body?.instance_id;
    expect(
      start.status === 202,
      `POST /start of ${manifest ?? fixture} answered ${start.status} (want 202): ${start.text.slice(0, 300)}`,
    );
    expect(typeof id === "string", `POST /start answered 202 without an instance_id: ${start.text}`);
    return { id, name, fixture, start, sentAt };
  }

  /** status reads an instance's InstanceInfo (undefined on 404) and records its state. */
  async status(ref: string): Promise<InstanceInfo | undefined> {
    const r = await this.api.get<InstanceInfo>(`/status/${encodeURIComponent(ref)}`);
    if (r.status === 404) return undefined;
    if (r.status !== 200)
      throw new Violation(`GET /status/${ref} answered ${r.status}: ${r.text.slice(0, 200)}`);
    this.record(r.body);
    return r.body;
  }

  /** record notes the state an InstanceInfo reports. */
  record(info: InstanceInfo | undefined): void {
    if (!info?.instance_id || !info.state) return;
    const list = this.states.get(info.instance_id) ?? [];
    if (list[list.length - 1]?.state !== info.state) list.push({ state: info.state, at: performance.now() });
    this.states.set(info.instance_id, list);
  }

  /**
   * waitFor polls status (every 100 ms) until `ok` accepts it; a terminal state `ok` does not
   * accept ends the wait at once, with the instance's reason.
   */
  async waitFor(
    g: Pick<Guest, "id" | "name">,
    what: string,
    ok: (i: InstanceInfo) => boolean,
    timeoutMs = this.settings.bootTimeoutMs,
  ): Promise<InstanceInfo> {
    const deadline = Date.now() + timeoutMs;
    let last: InstanceInfo | undefined;
    for (;;) {
      last = await this.status(g.id);
      if (last && ok(last)) return last;
      if (last && (last.state === "exited" || last.state === "failed"))
        throw new Violation(`${g.name} ended (${last.state}: ${last.reason ?? "no reason"}) before ${what}`);
      if (Date.now() > deadline)
        throw new Violation(
          `${g.name} was not ${what} after ${timeoutMs} ms (state ${last?.state ?? "unknown"})`,
        );
      await sleep(100);
    }
  }

  /** logs reads an instance's whole log (plain, not followed). */
  async logs(ref: string, query = ""): Promise<LogRecord[]> {
    const r = await this.api.get<LogRecord[]>(`/logs/${encodeURIComponent(ref)}${query}`);
    if (r.status !== 200)
      throw new Violation(`GET /logs/${ref}${query} answered ${r.status}: ${r.text.slice(0, 200)}`);
    return Array.isArray(r.body) ? r.body : [];
  }

  /** line waits until the instance's log has a line `re` matches (polling plain logs) and returns it. */
  async line(
    g: Pick<Guest, "id" | "name">,
    re: RegExp,
    timeoutMs = this.settings.bootTimeoutMs,
  ): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = (await this.logs(g.id)).find((x) => re.test(x.line));
      if (hit) return hit.line;
      const s = await this.status(g.id);
      if (!s || s.state === "exited" || s.state === "failed")
        throw new Violation(
          `${g.name} ${s?.state ?? "vanished"} (${s?.reason ?? "no reason"}) before printing ${re}`,
        );
      if (Date.now() > deadline) {
        const tail = (await this.logs(g.id, "?tail=3")).map((x) => x.line).join(" | ");
        throw new Violation(`${g.name} printed no line matching ${re} in ${timeoutMs} ms (last: ${tail})`);
      }
      await sleep(200);
    }
  }

  /** cleanup force-removes every instance the suite made and closes open log streams. */
  async cleanup(): Promise<void> {
    for (const f of this.follows) f.close();
    for (const id of this.created) {
      await this.api.delete(`/instances/${encodeURIComponent(id)}?force=1`).catch(() => undefined);
    }
  }
}

/** sleep waits `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** counterOf reads N from an `OVMS-COUNTER: N` line (NaN otherwise). */
export function counterOf(line: string): number {
  const m = /^OVMS-COUNTER: (\d+)$/.exec(line);
  return m ? Number(m[1]) : NaN;
}
