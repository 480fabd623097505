import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decode, encode } from "../../src/shim/protos.js";
import { Code, TtrpcServer } from "../../src/shim/ttrpc-server.js";

// The ttrpc framing of the shim's server, from a client written here from the protocol
// (https://github.com/containerd/ttrpc/blob/v1.1.0/PROTOCOL.md): replies on the request's
// stream, concurrent calls on one connection, errors as google.rpc.Status. (containerd itself
// speaks to the server in test/shim/containerd.test.ts.)

function frame(stream: number, payload: Buffer, type = 1): Buffer {
  const h = Buffer.alloc(10);
  h.writeUInt32BE(payload.length, 0);
  h.writeUInt32BE(stream, 4);
  h.writeUInt8(type, 8);
  return Buffer.concat([h, payload]);
}

/** replies collects the response frames arriving on a socket, by stream id. */
function replies(sock: Socket): { next(stream: number): Promise<any>; order: number[] } {
  let buf = Buffer.alloc(0);
  const got = new Map<number, any>();
  const order: number[] = [];
  const waiters = new Map<number, (v: any) => void>();
  sock.on("data", (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 10 && buf.length >= 10 + buf.readUInt32BE(0)) {
      const len = buf.readUInt32BE(0);
      const stream = buf.readUInt32BE(4);
      assert.equal(buf.readUInt8(8), 2, "a response frame");
      const r = decode("ttrpc.Response", buf.subarray(10, 10 + len));
      buf = buf.subarray(10 + len);
      order.push(stream);
      const w = waiters.get(stream);
      if (w) w(r);
      else got.set(stream, r);
    }
  });
  return {
    order,
    next: (stream) =>
      got.has(stream) ? Promise.resolve(got.get(stream)) : new Promise((r) => waiters.set(stream, r)),
  };
}

function request(service: string, method: string, payload: Buffer): Buffer {
  return encode("ttrpc.Request", { service, method, payload });
}

test("ttrpc: replies go back on the request's stream, a slow call does not hold up a quick one, an unknown method is UNIMPLEMENTED", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "ovms-ttrpc-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  let release!: () => void;
  const slow = new Promise<void>((r) => (release = r));
  const server = new TtrpcServer({
    "containerd.task.v2.Task": {
      Wait: {
        request: "containerd.task.v2.WaitRequest",
        response: "containerd.task.v2.WaitResponse",
        handle: async () => {
          await slow;
          return { exit_status: 7 };
        },
      },
      State: {
        request: "containerd.task.v2.StateRequest",
        response: "containerd.task.v2.StateResponse",
        handle: async (req) => ({ id: req.id, status: 2, pid: 42 }),
      },
    },
  });
  const path = join(dir, "s.sock");
  await server.listen(path);
  t.after(() => server.close());
  const sock = connect(path);
  await new Promise((r) => sock.once("connect", r));
  t.after(() => sock.destroy());
  const r = replies(sock);
  sock.write(
    frame(
      1,
      request("containerd.task.v2.Task", "Wait", encode("containerd.task.v2.WaitRequest", { id: "a" })),
    ),
  );
  sock.write(
    frame(
      3,
      request("containerd.task.v2.Task", "State", encode("containerd.task.v2.StateRequest", { id: "a" })),
    ),
  );
  sock.write(frame(5, request("containerd.task.v2.Task", "Exec", Buffer.alloc(0))));
  const state = await r.next(3);
  const st = decode<{ id: string; status: number; pid: number }>(
    "containerd.task.v2.StateResponse",
    state.payload,
  );
  assert.deepEqual([st.id, st.status, st.pid], ["a", 2, 42]);
  const unknown = await r.next(5);
  assert.equal(unknown.status.code, Code.UNIMPLEMENTED);
  assert.match(unknown.status.message, /containerd\.task\.v2\.Task\/Exec is not implemented/);
  assert.deepEqual([...r.order].sort(), [3, 5], "Wait has not answered yet");
  release();
  const wait = await r.next(1);
  assert.equal(
    decode<{ exit_status: number }>("containerd.task.v2.WaitResponse", wait.payload).exit_status,
    7,
  );
});
