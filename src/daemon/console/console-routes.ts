import { OvmsError } from "../../core/errors.js";
import type { ConsoleInput } from "../../api/types.generated.js";
import type { Runtime } from "../../runtime/types.js";
import { badRequest } from "../contract.js";
import type { Route } from "../routes.js";
import type { ArtifactCatalog } from "./artifact-catalog.js";
import { CONSOLE_PROTOCOL } from "./serial-socket.js";

/**
 * consoleRoutes serves the operations the web console added to the contract (the `console`
 * and `store` tags): typed serial input, the store's artifacts, and the plain-HTTP side of the
 * console WebSocket (an upgrade is handled by serial-socket.ts before routing).
 */
export function consoleRoutes(runtime: Runtime, catalog: ArtifactCatalog): Record<string, Route> {
  return {
    attachConsole: async (r) => {
      await runtime.status(r.params.instance_id); // an unknown instance is a 404 here too
      throw new OvmsError(
        "BAD_REQUEST",
        `GET /console/${r.params.instance_id} is a WebSocket (Upgrade: websocket, subprotocol ${CONSOLE_PROTOCOL}); for the log as lines use GET /logs/{instance_id}`,
      );
    },
    typeConsole: async (r) => {
      if (!runtime.consoleInput)
        throw new OvmsError("NOT_IMPLEMENTED", `runtime ${runtime.name} has no serial input`);
      const body = r.body as ConsoleInput;
      let data: Buffer;
      if (body.encoding === "base64") {
        const s = body.data.replace(/\s+/g, "");
        if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s))
          throw badRequest("POST /console/{instance_id}", [
            { path: "/data", message: "is not valid base64" },
          ]);
        data = Buffer.from(s, "base64");
      } else {
        data = Buffer.from(body.data, "utf8");
      }
      return { status: 200, body: { bytes: await runtime.consoleInput(r.params.instance_id, data) } };
    },
    listArtifacts: async () => ({ status: 200, body: await catalog.list() }),
    getArtifact: async (r) => ({ status: 200, body: await catalog.get(r.params.reference) }),
  };
}
