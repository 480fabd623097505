import { credentials, loadPackageDefinition, type Client } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { join } from "node:path";
import { ROOT } from "../helpers.js";

/**
 * CriClient speaks the Kubernetes CRI v1 RuntimeService (test/shim/cri-api.proto, the part a
 * kubelet uses to run a pod) to containerd's CRI plugin over its gRPC socket: what the tests
 * and bench/shim.ts use to be a kubelet. Each method is the RPC of the same name.
 */
export class CriClient {
  private readonly client: Client & Record<string, any>;

  constructor(address: string) {
    const def = loadSync(join(ROOT, "test/shim/cri-api.proto"), {
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
    });
    const pkg = loadPackageDefinition(def) as any;
    this.client = new pkg.runtime.v1.RuntimeService(`unix://${address}`, credentials.createInsecure());
  }

  /** call makes one unary RPC, with a deadline. */
  call<T = any>(method: string, req: Record<string, unknown>, timeoutMs = 600_000): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client[method](req, { deadline: Date.now() + timeoutMs }, (err: Error | null, res: T) =>
        err ? reject(new Error(`CRI ${method}: ${err.message}`)) : resolve(res),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

/** podConfig is a pod's sandbox config as a kubelet writes it: host network (no CNI here), logs under `logDir`. */
export function podConfig(name: string, logDir: string, annotations: Record<string, string> = {}) {
  return {
    metadata: { name, uid: `uid-${name}`, namespace: "default", attempt: 0 },
    hostname: name,
    log_directory: logDir,
    labels: { app: name },
    annotations,
    linux: { security_context: { namespace_options: { network: "NODE", pid: "CONTAINER", ipc: "POD" } } },
  };
}
