import type { InstanceState, Runtime } from "../runtime/types.js";

/**
 * waitStarted polls an instance until it leaves `starting` (POST /start `wait`, rfc §6.3), or
 * `timeoutMs` passes, and returns the state it reached.
 */
export async function waitStarted(
  runtime: Pick<Runtime, "status">,
  id: string,
  state: InstanceState,
  timeoutMs: number,
): Promise<InstanceState> {
  const deadline = Date.now() + timeoutMs;
  while (state === "starting" && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    state = (await runtime.status(id)).state;
  }
  return state;
}
