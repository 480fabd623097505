import { RuntimeError } from "./runtime-error.js";
import type { InstanceState } from "./types.js";

/**
 * NEXT_STATES is the lifecycle of RFC §6.5 and spec/runtimes/README.md §3 as a table: where
 * each state may go. Every live state may fail, and may exit (the guest powers off, or the
 * VMM is found gone after a daemon restart). `starting → stopping` is there because a stop is
 * accepted for any instance whose VMM runs, one still starting included (the warm pool
 * discards its paused processes that way). `stalled` is the boot watchdog's verdict on a
 * running guest whose console stayed silent while it booted: output brings it back to
 * `running`; it can be paused, stopped, or end like any live instance. `exited` and `failed`
 * are terminal.
 */
export const NEXT_STATES: Readonly<Record<InstanceState, readonly InstanceState[]>> = {
  created: ["starting", "exited", "failed"],
  starting: ["running", "paused", "stopping", "exited", "failed"],
  running: ["stalled", "paused", "stopping", "exited", "failed"],
  stalled: ["running", "paused", "stopping", "exited", "failed"],
  paused: ["running", "stopping", "exited", "failed"],
  stopping: ["exited", "failed"],
  exited: [],
  failed: [],
};

/**
 * canTransition tells whether the lifecycle lets an instance go from `from` to `to`. Staying
 * in a state is not a transition: callers that may find the state already set check first.
 */
export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return NEXT_STATES[from]?.includes(to) ?? false;
}

/**
 * transition moves a record to state `to`, the one way any runtime code changes an
 * instance's state, so that no code path can break the lifecycle unnoticed. An illegal change
 * is a bug in the runtime, not a refusal of the caller: it throws INTERNAL.
 */
export function transition(record: { state: InstanceState }, to: InstanceState): void {
  if (!canTransition(record.state, to)) {
    throw new RuntimeError(
      "INTERNAL",
      `instance state cannot change from ${record.state} to ${to} (a bug in the runtime)`,
    );
  }
  record.state = to;
}
