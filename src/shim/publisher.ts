import { spawn } from "node:child_process";
import { encode } from "./protos.js";

/**
 * Publisher sends task events back to containerd through the binary it named with
 * `-publish-binary` (containerd itself): `containerd --address ADDR publish --topic TOPIC
 * --namespace NS`, with the event as a protobuf `google.protobuf.Any` on its stdin
 * (containerd 1.6 cmd/containerd/command/publish.go). Events are sent one after another, in
 * the order they happened; a failed publish is retried a few times and then logged, never
 * fatal to the task (containerd also learns a task's end through Wait).
 */
export class Publisher {
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly binary: string,
    private readonly address: string,
    private readonly namespace: string,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * publish queues the event `type` (a containerd.events message name) under `topic` and
   * returns at once: an RPC never waits for the publishing process (tens of ms to start).
   */
  publish(topic: string, type: string, event: Record<string, unknown>): void {
    const any = encode("google.protobuf.Any", { type_url: type, value: encode(type, event) });
    this.chain = this.chain.then(() => this.send(topic, any));
  }

  /** flush resolves once every queued event was sent (or given up on). */
  flush(): Promise<void> {
    return this.chain;
  }

  private async send(topic: string, any: Buffer): Promise<void> {
    if (!this.address) return;
    for (let attempt = 1; ; attempt++) {
      const err = await this.once(topic, any);
      if (!err) return;
      if (attempt >= 4) {
        this.log(`publish ${topic}: ${err}`);
        return;
      }
      await new Promise((r) => setTimeout(r, 250 * attempt));
    }
  }

  private once(topic: string, any: Buffer): Promise<string | undefined> {
    return new Promise((resolve) => {
      const args = ["--address", this.address, "publish", "--topic", topic, "--namespace", this.namespace];
      const child = spawn(this.binary, args, { stdio: ["pipe", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
      child.on("error", (e) => resolve(`${this.binary}: ${e.message}`));
      child.on("close", (code) => resolve(code === 0 ? undefined : `exit ${code}: ${stderr.trim()}`));
      child.stdin.on("error", () => {});
      child.stdin.end(any);
    });
  }
}
