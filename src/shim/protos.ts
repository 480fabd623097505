import protobuf from "protobufjs";

/**
 * The protobuf messages the shim speaks, written from containerd 1.6's API definitions
 * (runtime/v2/task/shim.proto, api/types/task/task.proto, api/types/mount.proto,
 * api/events/task.proto, github.com/containerd/ttrpc request.proto) and google.protobuf's
 * well-known types. Field numbers are the wire contract and copied exactly; only the messages
 * this shim reads or writes are here.
 */
const GOOGLE = `
syntax = "proto3";
package google.protobuf;
message Any { string type_url = 1; bytes value = 2; }
message Empty {}
message Timestamp { int64 seconds = 1; int32 nanos = 2; }
`;

const RPC = `
syntax = "proto3";
package google.rpc;
message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
`;

const TTRPC = `
syntax = "proto3";
package ttrpc;
message KeyValue { string key = 1; string value = 2; }
message Request {
  string service = 1; string method = 2; bytes payload = 3; int64 timeout_nano = 4;
  repeated KeyValue metadata = 5;
}
message Response { google.rpc.Status status = 1; bytes payload = 2; }
`;

const TYPES = `
syntax = "proto3";
package containerd.types;
message Mount { string type = 1; string source = 2; string target = 3; repeated string options = 4; }
`;

const TASK_TYPES = `
syntax = "proto3";
package containerd.v1.types;
enum Status { UNKNOWN = 0; CREATED = 1; RUNNING = 2; STOPPED = 3; PAUSED = 4; PAUSING = 5; }
message ProcessInfo { uint32 pid = 1; google.protobuf.Any info = 2; }
`;

const SHIM = `
syntax = "proto3";
package containerd.task.v2;
message CreateTaskRequest {
  string id = 1; string bundle = 2; repeated containerd.types.Mount rootfs = 3; bool terminal = 4;
  string stdin = 5; string stdout = 6; string stderr = 7; string checkpoint = 8;
  string parent_checkpoint = 9; google.protobuf.Any options = 10;
}
message CreateTaskResponse { uint32 pid = 1; }
message DeleteRequest { string id = 1; string exec_id = 2; }
message DeleteResponse { uint32 pid = 1; uint32 exit_status = 2; google.protobuf.Timestamp exited_at = 3; }
message StateRequest { string id = 1; string exec_id = 2; }
message StateResponse {
  string id = 1; string bundle = 2; uint32 pid = 3; containerd.v1.types.Status status = 4;
  string stdin = 5; string stdout = 6; string stderr = 7; bool terminal = 8; uint32 exit_status = 9;
  google.protobuf.Timestamp exited_at = 10; string exec_id = 11;
}
message KillRequest { string id = 1; string exec_id = 2; uint32 signal = 3; bool all = 4; }
message CloseIORequest { string id = 1; string exec_id = 2; bool stdin = 3; }
message PidsRequest { string id = 1; }
message PidsResponse { repeated containerd.v1.types.ProcessInfo processes = 1; }
message StartRequest { string id = 1; string exec_id = 2; }
message StartResponse { uint32 pid = 1; }
message WaitRequest { string id = 1; string exec_id = 2; }
message WaitResponse { uint32 exit_status = 1; google.protobuf.Timestamp exited_at = 2; }
message ConnectRequest { string id = 1; }
message ConnectResponse { uint32 shim_pid = 1; uint32 task_pid = 2; string version = 3; }
message ShutdownRequest { string id = 1; bool now = 2; }
`;

const EVENTS = `
syntax = "proto3";
package containerd.events;
message TaskIO { string stdin = 1; string stdout = 2; string stderr = 3; bool terminal = 4; }
message TaskCreate {
  string container_id = 1; string bundle = 2; repeated containerd.types.Mount rootfs = 3;
  TaskIO io = 4; string checkpoint = 5; uint32 pid = 6;
}
message TaskStart { string container_id = 1; uint32 pid = 2; }
message TaskDelete {
  string container_id = 1; uint32 pid = 2; uint32 exit_status = 3;
  google.protobuf.Timestamp exited_at = 4; string id = 5;
}
message TaskExit {
  string container_id = 1; string id = 2; uint32 pid = 3; uint32 exit_status = 4;
  google.protobuf.Timestamp exited_at = 5;
}
`;

/** protoRoot holds every message above, by full name (`containerd.task.v2.CreateTaskRequest`). */
export const protoRoot: protobuf.Root = (() => {
  const root = new protobuf.Root();
  for (const src of [GOOGLE, RPC, TTRPC, TYPES, TASK_TYPES, SHIM, EVENTS])
    protobuf.parse(src, root, { keepCase: true });
  root.resolveAll();
  return root;
})();

/** messageType finds one message type by its full name. */
export function messageType(name: string): protobuf.Type {
  return protoRoot.lookupType(name);
}

/** encode writes a plain object as the named message (unset fields take proto3 defaults). */
export function encode(name: string, value: Record<string, unknown>): Buffer {
  const t = messageType(name);
  return Buffer.from(t.encode(t.fromObject(value)).finish());
}

/** decode reads the named message into a plain object: 64-bit integers as numbers, defaults filled in. */
export function decode<T = Record<string, unknown>>(name: string, bytes: Uint8Array): T {
  const t = messageType(name);
  return t.toObject(t.decode(bytes), { longs: Number, defaults: true, arrays: true }) as T;
}

/** TaskStatus is containerd.v1.types.Status: the state of a task as containerd sees it. */
export const TaskStatus = { UNKNOWN: 0, CREATED: 1, RUNNING: 2, STOPPED: 3 } as const;

/** timestamp writes a time as google.protobuf.Timestamp. */
export function timestamp(d: Date | undefined): { seconds: number; nanos: number } | undefined {
  if (!d) return undefined;
  const ms = d.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}
