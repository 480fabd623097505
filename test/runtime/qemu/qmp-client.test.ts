import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { QmpClient } from "../../../src/runtime/qemu/qmp-client.js";
import { tempDir } from "../../helpers.js";

/** scriptedPeer is a QMP peer on a UNIX socket that answers with `reply` (a fault QEMU won't make on demand). */
async function scriptedPeer(
  t: Parameters<typeof tempDir>[0],
  reply: (cmd: { execute: string; id?: string }, s: Socket) => void,
) {
  const path = join(await tempDir(t), "qmp.sock");
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.write(
      JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) +
        "\n",
    );
    let buf = "";
    s.on("data", (d) => {
      buf += d.toString();
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const cmd = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (cmd.execute === "qmp_capabilities") s.write(JSON.stringify({ return: {}, id: cmd.id }) + "\n");
        else reply(cmd, s);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return path;
}

test("greeting, commands matched by id (out of order), events", async (t) => {
  const held: { id?: string; s: Socket }[] = [];
  const path = await scriptedPeer(t, (cmd, s) => {
    if (cmd.execute === "slow") held.push({ id: cmd.id, s });
    else {
      s.write(JSON.stringify({ event: "STOP", timestamp: { seconds: 1, microseconds: 0 } }) + "\n");
      s.write(JSON.stringify({ return: { status: "paused" }, id: cmd.id }) + "\n");
      for (const h of held.splice(0)) h.s.write(JSON.stringify({ return: "late", id: h.id }) + "\n");
    }
  });
  const c = await QmpClient.connect(path);
  t.after(() => c.close());
  assert.equal(c.greeting?.version.qemu.major, 7);
  const ev = c.waitEvent("STOP", 2000);
  const slow = c.execute("slow");
  const fast = await c.execute<{ status: string }>("query-status");
  assert.equal(fast.status, "paused");
  assert.equal(await slow, "late");
  assert.equal((await ev).event, "STOP");
});

test("errors carry QEMU's class; timeouts and a closed socket fail pending commands", async (t) => {
  const path = await scriptedPeer(t, (cmd, s) => {
    if (cmd.execute === "bad")
      s.write(
        JSON.stringify({
          error: { class: "CommandNotFound", desc: "The command bad has not been found" },
          id: cmd.id,
        }) + "\n",
      );
    if (cmd.execute === "die") s.destroy();
  });
  const c = await QmpClient.connect(path);
  await assert.rejects(
    c.execute("bad"),
    (e: any) => e.code === "QMP_ERROR" && /CommandNotFound/.test(e.message),
  );
  await assert.rejects(
    c.execute("silent", undefined, 100),
    (e: any) => e.code === "QMP_TIMEOUT" && /no reply after 100 ms/.test(e.message),
  );
  await assert.rejects(c.execute("die"), (e: any) => e.code === "QMP_CLOSED");
  assert.ok(c.isClosed);
  await assert.rejects(
    QmpClient.connect(join(path, "..", "nobody-here.sock"), 200),
    (e: any) => e.code === "QMP_CONNECT",
  );
});
