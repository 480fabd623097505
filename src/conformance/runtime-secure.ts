import { stat } from "node:fs/promises";
import { dirname } from "node:path";
import { Manual, Skip, expect, type Check } from "./check.js";
import type { RuntimeContext } from "./runtime-context.js";
import { counterCounting } from "./runtime-guests.js";
import { ownNamespaces, readProcess, type VmmProcess } from "./vmm-process.js";

/**
 * Runtime-Secure (rfc §9, §6.1, §8.4): what can be seen from outside — the socket's mode, the
 * bearer-token rule of a TCP listener, and, for a runtime on this machine, the VMM process of a
 * running guest as /proc shows it (seccomp, its user, its namespaces). Signature policy needs
 * a policy configured in the runtime and is left to a person (Manual).
 */

type C = Check<RuntimeContext>;
const secure = { level: "runtime-secure" as const, requirement: "MUST" as const };

/** vmm is the counter guest's VMM process, or a skip when it cannot be seen from here. */
async function vmm(ctx: RuntimeContext): Promise<VmmProcess> {
  const g = await ctx.need("the counter guest counting", () => counterCounting(ctx));
  const s = await ctx.status(g.id);
  if (!s?.pid) throw new Skip("status reports no pid for the running guest");
  const p = readProcess(s.pid);
  if (!p) throw new Skip(`pid ${s.pid} is not visible here (another host or PID namespace)`);
  return p;
}

/** runtimeIsRoot tells whether the runtime runs as root, judged by who owns its socket; undefined over TCP. */
async function runtimeIsRoot(ctx: RuntimeContext): Promise<boolean | undefined> {
  const sock = ctx.api.target.socketPath;
  if (!sock) return undefined;
  return (await stat(sock)).uid === 0;
}

/** SECURE_CHECKS are the Runtime-Secure level. */
export const SECURE_CHECKS: C[] = [
  {
    ...secure,
    id: "runtime.secure.socket",
    section: "§6.1",
    title: "the socket is mode 0600 (or 0660 for a group) in a folder others cannot write",
    async run(ctx) {
      const sock = ctx.api.target.socketPath;
      if (!sock) throw new Skip("the runtime is driven over TCP; no socket to look at");
      const s = await stat(sock);
      const mode = s.mode & 0o777;
      expect(mode === 0o600 || mode === 0o660, `the socket's mode is ${mode.toString(8)}`);
      const d = (await stat(dirname(sock))).mode & 0o777;
      expect((d & 0o002) === 0, `its folder ${dirname(sock)} is writable by others (mode ${d.toString(8)})`);
      return { message: `mode ${mode.toString(8)}, folder ${d.toString(8)}` };
    },
  },
  {
    ...secure,
    id: "runtime.secure.tcp-token",
    section: "§6.1",
    title: "a TCP listener answers 401 UNAUTHORIZED without the bearer token, or with a wrong one",
    async run(ctx) {
      const tcp = ctx.settings.tcp;
      if (!tcp) throw new Skip("no TCP listener given (--url with --token, beside --socket)");
      const none = await tcp.get("/version", { token: null });
      const wrong = await tcp.get("/version", { token: `${tcp.target.token ?? ""}x` });
      const right = await tcp.get("/version");
      expect(
        none.status === 401 && none.body?.error?.code === "UNAUTHORIZED",
        `without a token: ${none.status} ${none.text.slice(0, 120)}`,
      );
      expect(
        wrong.status === 401 && wrong.body?.error?.code === "UNAUTHORIZED",
        `with a wrong token: ${wrong.status} ${wrong.text.slice(0, 120)}`,
      );
      expect(right.status === 200, `with the token: ${right.status}`);
    },
  },
  {
    ...secure,
    id: "runtime.secure.seccomp",
    section: "§8.4",
    title: "the VMM runs under a seccomp filter",
    async run(ctx) {
      const p = await vmm(ctx);
      expect(
        p.seccomp === 2,
        `/proc/${p.pid}/status says Seccomp: ${p.seccomp ?? "unknown"} (2 is a filter)`,
      );
    },
  },
  {
    ...secure,
    id: "runtime.secure.vmm-user",
    section: "§8.4",
    title: "a runtime running as root runs its VMMs as an unprivileged user",
    async run(ctx) {
      const root = await runtimeIsRoot(ctx);
      if (root === undefined) throw new Skip("the runtime's user is not known over TCP");
      const p = await vmm(ctx);
      if (!root) return { message: `the runtime is not root; the VMM runs as uid ${p.euid}` };
      expect(p.euid !== 0, `the VMM (pid ${p.pid}) runs as root`);
      return { message: `VMM uid ${p.euid}` };
    },
  },
  {
    ...secure,
    id: "runtime.secure.vmm-namespaces",
    section: "§8.4",
    title: "a runtime running as root runs each VMM in mount and PID namespaces of its own",
    async run(ctx) {
      const root = await runtimeIsRoot(ctx);
      if (root === undefined) throw new Skip("the runtime's user is not known over TCP");
      if (!root) throw new Skip("the runtime is not root: §8.4 asks for namespaces only then");
      const p = await vmm(ctx);
      const own = ownNamespaces();
      const shared = (["mnt", "pid"] as const).filter((n) => p.ns[n] && p.ns[n] === own[n]);
      expect(!shared.length, `the VMM (pid ${p.pid}) shares the host's ${shared.join(" and ")} namespace`);
    },
  },
  {
    ...secure,
    id: "runtime.secure.policy",
    section: "§8.2–§8.3",
    title:
      "with a policy in force, unsigned RAM snapshots and unsigned artifacts of signed scopes are refused (403)",
    async run() {
      throw new Manual(
        "needs a policy configured in the runtime: with one in force, start the snapshot the suite took (unsigned) and expect 403 POLICY_DENIED; sign it (ovm sign) with a trusted key and expect 202",
      );
    },
  },
];
