import type { Injection, Runtime } from "../runtime/types.js";
import type { InjectRequest, InjectResponse } from "../api/types.generated.js";
import { badRequest } from "./contract.js";
import { decodeInjection } from "./requests.js";
import type { Logger } from "./log.js";

/**
 * injectInstance serves POST /inject: it decodes the data and has the runtime write it into an
 * ivshmem region. Bad base64 is refused here; the runtime refuses an unknown device or bytes
 * that do not fit (INVALID_ARGUMENT, a 400 like any bad request).
 */
export async function injectInstance(
  runtime: Runtime,
  log: Logger,
  req: InjectRequest,
): Promise<InjectResponse> {
  const mmio = req.content.mmio;
  const data = decodeInjection(mmio);
  if (mmio.device !== undefined) {
    // Named in the words of the instance, with the devices it has, before the runtime is asked.
    const info = await runtime.status(req.instance_id);
    if (!info.devices.some((d) => d.name === mmio.device)) {
      const has = info.devices.map((d) => d.name).join(", ");
      throw badRequest("POST /inject", [
        {
          path: "/content/mmio/device",
          message: `instance ${info.name} has no such device (${has ? `it has: ${has}` : "it has none"})`,
        },
      ]);
    }
  }
  const injection: Injection = { data };
  if (mmio.device !== undefined) injection.device = mmio.device;
  if (mmio.offset !== undefined) injection.offset = mmio.offset;
  const bytes = await runtime.inject(req.instance_id, injection);
  log.debug("injected", { instance: req.instance_id, device: mmio.device, offset: mmio.offset ?? 0, bytes });
  return { status: "ok", bytes };
}
