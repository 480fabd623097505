import { OvmsError } from "../core/errors.js";
import { TERMINAL_STATES, type Runtime } from "../runtime/types.js";
import type {
  KillRequest,
  KillResponse,
  StdinRequest,
  StdinResponse,
  StopRequest,
  StopResponse,
} from "../api/types.generated.js";
import { badRequest } from "./contract.js";
import type { Logger } from "./log.js";

/** stopInstance serves POST /stop: the runtime's stop sequence, graceful unless `force`. */
export async function stopInstance(runtime: Runtime, log: Logger, req: StopRequest): Promise<StopResponse> {
  const opts: { timeoutMs?: number; force?: boolean } = {};
  if (req.timeout_ms !== undefined) opts.timeoutMs = req.timeout_ms;
  if (req.force !== undefined) opts.force = req.force;
  const info = await runtime.stop(req.instance_id, opts);
  log.info("instance stopped", { id: info.id, state: info.state });
  return {
    status: TERMINAL_STATES.has(info.state) ? "exited" : "stopping",
    instance_id: info.id,
    name: info.name,
  };
}

/**
 * killInstance serves POST /kill: SIGKILL stops the VM at once, other signals reach a
 * container's program through OVMS-Init (rfc §6.7); a runtime without signals answers
 * NOT_IMPLEMENTED.
 */
export async function killInstance(runtime: Runtime, log: Logger, req: KillRequest): Promise<KillResponse> {
  if (!runtime.kill)
    throw new OvmsError("NOT_IMPLEMENTED", `kill: runtime ${runtime.name} does not send signals`);
  const { instance, action } = await runtime.kill(req.instance_id, req.signal);
  log.info("instance signalled", { id: instance.id, signal: req.signal, action });
  return { status: action, instance_id: instance.id, name: instance.name, signal: req.signal };
}

/**
 * writeStdin serves POST /stdin: the decoded bytes to a container's program, then end-of-file
 * with `close` (rfc §6.7). Bad base64 is a 400 naming the member.
 */
export async function writeStdin(runtime: Runtime, req: StdinRequest): Promise<StdinResponse> {
  const s = (req.data ?? "").replace(/\s+/g, "");
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s))
    throw badRequest("POST /stdin", [{ path: "/data", message: "is not valid base64" }]);
  if (!runtime.stdin)
    throw new OvmsError("NOT_IMPLEMENTED", `stdin: runtime ${runtime.name} feeds no program stdin`);
  return { bytes: await runtime.stdin(req.instance_id, Buffer.from(s, "base64"), req.close ?? false) };
}
