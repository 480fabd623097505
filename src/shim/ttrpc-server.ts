import { createServer, type Server, type Socket } from "node:net";
import { decode, encode } from "./protos.js";

/**
 * A ttrpc server: the RPC protocol containerd speaks to its shims
 * (https://github.com/containerd/ttrpc/blob/v1.1.0/PROTOCOL.md). Each message is a 10-byte
 * header (payload length and stream id as big-endian uint32, message type, flags) and a
 * protobuf payload of at most 4 MiB; a request (type 1) is a `ttrpc.Request` naming service
 * and method, answered on the same stream by a `ttrpc.Response` (type 2) with the method's
 * reply or a google.rpc.Status. Requests are served concurrently: `Wait` blocks for as long
 * as the task runs while `State` and `Kill` keep being answered.
 */

const HEADER = 10;
const MAX_MESSAGE = 4 << 20;
const TYPE_REQUEST = 1;
const TYPE_RESPONSE = 2;

/** Code holds the gRPC status codes the shim answers with (containerd's errdefs maps them). */
export const Code = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** RpcError is a failed call: its gRPC `code` and message go back to the caller as a Status. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = "RpcError";
  }
}

/** Method is one RPC: the request and response message names and the handler. */
export interface Method {
  request: string;
  response: string;
  handle(req: any): Promise<Record<string, unknown>>;
}

/** TtrpcServer serves methods, by `service` and method name, on a UNIX socket. */
export class TtrpcServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly services: Record<string, Record<string, Method>>,
    private readonly log: (line: string) => void = () => {},
  ) {
    this.server = createServer((s) => this.connection(s));
  }

  /** listen binds `path` (a UNIX socket, mode 0600 by the umask the caller set). */
  listen(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(path, () => resolve());
    });
  }

  /** close stops accepting and ends every connection. */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private connection(sock: Socket): void {
    this.sockets.add(sock);
    sock.on("close", () => this.sockets.delete(sock));
    sock.on("error", () => {});
    let buf: Buffer = Buffer.alloc(0);
    sock.on("data", (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= HEADER) {
        const length = buf.readUInt32BE(0);
        const stream = buf.readUInt32BE(4);
        const type = buf.readUInt8(8);
        if (length > MAX_MESSAGE) {
          this.log(`ttrpc: a message of ${length} bytes is over the 4 MiB limit; closing the connection`);
          sock.destroy();
          return;
        }
        if (buf.length < HEADER + length) break;
        const payload = buf.subarray(HEADER, HEADER + length);
        buf = buf.subarray(HEADER + length);
        if (type === TYPE_REQUEST) void this.call(sock, stream, payload);
      }
    });
  }

  private async call(sock: Socket, stream: number, payload: Buffer): Promise<void> {
    let reply: Buffer;
    try {
      const req = decode<{ service: string; method: string; payload: Uint8Array }>("ttrpc.Request", payload);
      const m = this.services[req.service]?.[req.method];
      if (!m) throw new RpcError(Code.UNIMPLEMENTED, `${req.service}/${req.method} is not implemented`);
      const out = await m.handle(decode(m.request, req.payload));
      reply = encode("ttrpc.Response", { payload: encode(m.response, out) });
    } catch (e) {
      const code = e instanceof RpcError ? e.code : Code.INTERNAL;
      if (code !== Code.UNIMPLEMENTED) this.log(`ttrpc: ${(e as Error).message}`);
      reply = encode("ttrpc.Response", { status: { code, message: (e as Error).message } });
    }
    const head = Buffer.alloc(HEADER);
    head.writeUInt32BE(reply.length, 0);
    head.writeUInt32BE(stream, 4);
    head.writeUInt8(TYPE_RESPONSE, 8);
    if (!sock.destroyed) sock.write(Buffer.concat([head, reply]));
  }
}
