import { OvmsError } from "../core/errors.js";
import { DaemonError } from "../client/client.js";
import type { Mount } from "./bundle.js";
import { OvmsTask, type TaskDeps } from "./task.js";
import { Code, RpcError, type Method } from "./ttrpc-server.js";

/** TASK_SERVICE is the ttrpc service name of containerd's runtime v2 Task API. */
export const TASK_SERVICE = "containerd.task.v2.Task";

/** ShimControl is what the service asks of the process around it. */
export interface ShimControl {
  /** shutdown ends the shim once the reply is sent. */
  shutdown(): void;
}

/**
 * taskService implements containerd's runtime v2 Task service (runtime/v2/task/shim.proto)
 * over OvmsTask: Create, Start, State, Wait, Kill, Delete, Pids, Connect, CloseIO and
 * Shutdown. Exec processes are not supported (a VM has no second process to join), nor are
 * Pause, Resume, Checkpoint, Update and Stats: they answer UNIMPLEMENTED.
 */
export function taskService(deps: TaskDeps, ctl: ShimControl): Record<string, Method> {
  const tasks = new Map<string, OvmsTask>();
  const get = (id: string, execId = ""): OvmsTask => {
    if (execId)
      throw new RpcError(
        Code.NOT_FOUND,
        `task ${id}: exec process ${execId} does not exist (exec is not supported)`,
      );
    const t = tasks.get(id);
    if (!t) throw new RpcError(Code.NOT_FOUND, `task ${id} does not exist in this shim`);
    return t;
  };
  const m = (
    request: string,
    response: string,
    handle: (req: any) => Promise<Record<string, unknown>>,
  ): Method => ({
    request: `containerd.task.v2.${request}`,
    response: response.includes(".") ? response : `containerd.task.v2.${response}`,
    handle: async (req) => {
      try {
        return await handle(req);
      } catch (e) {
        throw toRpc(e);
      }
    },
  });
  const EMPTY = "google.protobuf.Empty";
  return {
    Create: m("CreateTaskRequest", "CreateTaskResponse", async (r) => {
      if (tasks.has(r.id)) throw new RpcError(Code.ALREADY_EXISTS, `task ${r.id} already exists`);
      if (r.checkpoint)
        throw new RpcError(
          Code.UNIMPLEMENTED,
          "checkpoint restore is not supported; name a RAM-snapshot artifact with the ovms.artifact annotation",
        );
      const t = await OvmsTask.create(
        {
          id: r.id,
          bundle: r.bundle,
          rootfs: (r.rootfs ?? []) as Mount[],
          stdin: r.stdin,
          stdout: r.stdout,
          stderr: r.stderr,
          terminal: r.terminal,
        },
        deps,
      );
      tasks.set(r.id, t);
      deps.publisher.publish("/tasks/create", "containerd.events.TaskCreate", {
        container_id: r.id,
        bundle: r.bundle,
        rootfs: r.rootfs,
        io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
        pid: 0,
      });
      return { pid: 0 };
    }),
    Start: m("StartRequest", "StartResponse", async (r) => {
      const t = get(r.id, r.exec_id);
      const pid = await t.start();
      deps.publisher.publish("/tasks/start", "containerd.events.TaskStart", {
        container_id: r.id,
        pid,
      });
      return { pid };
    }),
    State: m("StateRequest", "StateResponse", async (r) => get(r.id, r.exec_id).state()),
    Wait: m("WaitRequest", "WaitResponse", async (r) => get(r.id, r.exec_id).wait()),
    Kill: m("KillRequest", EMPTY, async (r) => {
      await get(r.id, r.exec_id).kill(r.signal || 15);
      return {};
    }),
    Delete: m("DeleteRequest", "DeleteResponse", async (r) => {
      const out = await get(r.id, r.exec_id).delete();
      tasks.delete(r.id);
      return out;
    }),
    Pids: m("PidsRequest", "PidsResponse", async (r) => {
      const t = get(r.id);
      return { processes: t.pid && t.live ? [{ pid: t.pid }] : [] };
    }),
    Connect: m("ConnectRequest", "ConnectResponse", async (r) => {
      const t = tasks.get(r.id);
      return { shim_pid: process.pid, task_pid: t?.pid ?? 0, version: "2" };
    }),
    CloseIO: m("CloseIORequest", EMPTY, async (r) => {
      const t = get(r.id, r.exec_id);
      if (r.stdin) await t.closeStdin();
      return {};
    }),
    Shutdown: m("ShutdownRequest", EMPTY, async (r) => {
      // As runc's shim: stay while a task still runs, unless told `now`.
      if (r.now || ![...tasks.values()].some((t) => t.live)) ctl.shutdown();
      return {};
    }),
  };
}

/** toRpc maps an error onto a gRPC status code containerd's errdefs understands. */
function toRpc(e: unknown): RpcError {
  if (e instanceof RpcError) return e;
  if (e instanceof DaemonError) {
    const code =
      e.code === "NOT_FOUND" || e.code === "ARTIFACT_NOT_FOUND"
        ? Code.NOT_FOUND
        : e.code === "CONFLICT"
          ? Code.FAILED_PRECONDITION
          : e.code === "BAD_REQUEST" || e.code === "INVALID_REFERENCE" || e.code === "MANIFEST_INVALID"
            ? Code.INVALID_ARGUMENT
            : Code.INTERNAL;
    return new RpcError(code, `ovmd: ${e.message}`);
  }
  if (e instanceof OvmsError) {
    const code =
      e.code === "CONFIG_INVALID" || e.code === "INVALID_ARGUMENT" || e.code === "INVALID_REFERENCE"
        ? Code.INVALID_ARGUMENT
        : e.code === "FILE_NOT_FOUND"
          ? Code.NOT_FOUND
          : e.code === "DAEMON_UNAVAILABLE"
            ? Code.UNAVAILABLE
            : Code.INTERNAL;
    return new RpcError(code, `${e.code}: ${e.message}`);
  }
  return new RpcError(Code.INTERNAL, (e as Error)?.message ?? String(e));
}
