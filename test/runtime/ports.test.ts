import { test } from "node:test";
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { createServer, type Server } from "node:net";
import { PortBook, bindProbe } from "../../src/runtime/ports.js";

/** hold listens on a free TCP port of 127.0.0.1 (a real other program's port) and returns it. */
async function hold(): Promise<{ port: number; close: () => Promise<void> }> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return {
    port: (s.address() as { port: number }).port,
    close: () => new Promise((r) => s.close(() => r())),
  };
}

const code = (c: string, re: RegExp) => (e: any) => e.code === c && re.test(e.message);

test("a port another program listens on is refused with CONFLICT, naming it", async (t) => {
  const h = await hold();
  t.after(h.close);
  await assert.rejects(
    new PortBook().claim([{ hostPort: h.port, guestPort: 80 }], []),
    code(
      "CONFLICT",
      new RegExp(`host port 127\\.0\\.0\\.1:${h.port}/tcp is already in use by another program`),
    ),
  );
});

test("a UDP port in use is refused; the same number in TCP is free", async (t) => {
  const u = createSocket("udp4");
  await new Promise<void>((r) => u.bind(0, "127.0.0.1", r));
  t.after(() => new Promise<void>((r) => u.close(() => r())));
  const port = u.address().port;
  await assert.rejects(
    new PortBook().claim([{ protocol: "udp", hostPort: port, guestPort: 53 }], []),
    code("CONFLICT", new RegExp(`${port}/udp is already in use`)),
  );
  const c = await new PortBook()
    .claim([{ protocol: "tcp", hostPort: port, guestPort: 53 }], [])
    .catch(() => undefined);
  // The TCP port of that number may be someone else's by chance; when it is free it is given.
  if (c) assert.equal(c.ports[0].hostPort, port);
  c?.release();
});

test("ports an instance publishes are refused, 0.0.0.0 overlapping every address", async () => {
  const holder = {
    id: "i-1",
    name: "web",
    ports: [{ protocol: "tcp" as const, hostIp: "0.0.0.0", hostPort: 18_080, guestPort: 80 }],
  };
  await assert.rejects(
    new PortBook().claim([{ hostPort: 18_080, guestPort: 8080 }], [holder]),
    code(
      "CONFLICT",
      /127\.0\.0\.1:18080\/tcp is already published by instance web \(i-1\) as 0\.0\.0\.0:18080->80\/tcp/,
    ),
  );
  await assert.rejects(
    new PortBook().claim(
      [
        { hostIp: "0.0.0.0", hostPort: 18_080, guestPort: 80 },
        { hostPort: 18_080, guestPort: 81 },
      ],
      [],
    ),
    code(
      "INVALID_ARGUMENT",
      /ports\[1\]: host port 127\.0\.0\.1:18080\/tcp is already asked for by ports\[0\]/,
    ),
  );
});

test("two starts in flight never get the same port: the first sets it aside before probing", async () => {
  let release!: () => void;
  const slow = new Promise<void>((r) => (release = r));
  const book = new PortBook(async (_p, _ip, port) => {
    await slow;
    return port;
  });
  const first = book.claim([{ hostPort: 18_081, guestPort: 80 }], []);
  await assert.rejects(
    book.claim([{ hostPort: 18_081, guestPort: 80 }], []),
    code("CONFLICT", /being published by another instance that is starting/),
  );
  release();
  const c = await first;
  c.release();
  // Released: the next start may have it.
  (await book.claim([{ hostPort: 18_081, guestPort: 80 }], [])).release();
});

test("without a host port the kernel picks a free one, and each request gets its own", async () => {
  const book = new PortBook();
  const c = await book.claim([{ guestPort: 80 }, { guestPort: 443 }], []);
  assert.ok(c.ports.every((p) => p.hostPort > 0 && p.hostIp === "127.0.0.1" && p.protocol === "tcp"));
  assert.notEqual(c.ports[0].hostPort, c.ports[1].hostPort);
  assert.deepEqual(
    c.ports.map((p) => p.guestPort),
    [80, 443],
  );
  // The port is really free: binding it works.
  assert.equal(await bindProbe("tcp", "127.0.0.1", c.ports[0].hostPort), c.ports[0].hostPort);
  c.release();
});

test("an address that is not the host's, or not IPv4, is a bad request", async () => {
  await assert.rejects(
    new PortBook().claim([{ hostIp: "192.0.2.1", hostPort: 18_082, guestPort: 80 }], []),
    code("INVALID_ARGUMENT", /192\.0\.2\.1 is not an address of this host/),
  );
  await assert.rejects(
    new PortBook().claim([{ hostIp: "::1", hostPort: 18_082, guestPort: 80 }], []),
    code("INVALID_ARGUMENT", /"::1" is not an IPv4 address/),
  );
});

test("a failed claim sets nothing aside", async (t) => {
  const h = await hold();
  t.after(h.close);
  const book = new PortBook();
  await assert.rejects(
    book.claim(
      [
        { hostPort: 18_083, guestPort: 80 },
        { hostPort: h.port, guestPort: 81 },
      ],
      [],
    ),
  );
  (await book.claim([{ hostPort: 18_083, guestPort: 80 }], [])).release();
});
