import { execFile } from "node:child_process";
import { lstat, readlink, stat } from "node:fs/promises";
import { dirname } from "node:path";
import type { PreparedArtifact } from "../../artifact/prepare.js";
import { RuntimeError } from "../runtime-error.js";
import type { Namespace } from "../types.js";
import type { QemuConfig } from "./argv.js";

/**
 * ConfineSetting is what the daemon was asked for (`ovmd --confine`): `auto` confines QEMU in
 * namespaces where it can (root with bubblewrap), `on` refuses to run without that, `off`
 * never does (as root QEMU then only drops to the QEMU user with `-runas`).
 */
export type ConfineSetting = "auto" | "on" | "off";

/**
 * ConfineMode is how one QEMU runs (RFC §8.4): `namespaces` in its own mount, PID, IPC, UTS
 * and cgroup namespaces (and network, unless it has a NIC) as the unprivileged QEMU user,
 * seeing only its own files; `user`: as the QEMU user through QEMU's own `-runas`, seeing the
 * host; `none`: as the daemon's user (a daemon that is not root).
 */
export type ConfineMode = "namespaces" | "user" | "none";

/** SandboxTools are the host programs a namespaced QEMU is launched with, found on PATH. */
export interface SandboxTools {
  bwrap: string;
  setpriv: string;
  qemu: string;
  /** How the host's /bin, /lib, … reach /usr: symlinks (merged /usr) are recreated, folders bound. */
  system: { ro: string[]; symlinks: [target: string, path: string][] };
}

/** SYSTEM_DIRS are the host folders a sandbox gets read-only: QEMU, its libraries and firmware. */
const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"];

/** findSandboxTools looks for bwrap and setpriv and reads the host's system layout; undefined without bwrap. */
export async function findSandboxTools(qemuBinary: string): Promise<SandboxTools | undefined> {
  const [bwrap, setpriv, qemu] = await Promise.all(["bwrap", "setpriv", qemuBinary].map(which));
  if (!bwrap || !setpriv || !qemu) return undefined;
  const system: SandboxTools["system"] = { ro: [], symlinks: [] };
  for (const d of SYSTEM_DIRS) {
    const st = await lstat(d).catch(() => undefined);
    if (st?.isSymbolicLink()) system.symlinks.push([await readlink(d), d]);
    else if (st?.isDirectory()) system.ro.push(d);
  }
  return { bwrap, setpriv, qemu, system };
}

function which(cmd: string): Promise<string | undefined> {
  if (cmd.startsWith("/")) return Promise.resolve(cmd);
  return new Promise((resolve) =>
    execFile("sh", ["-c", 'command -v "$1"', "sh", cmd], (err, out) =>
      resolve(err ? undefined : out.trim() || undefined),
    ),
  );
}

/**
 * chooseConfinement decides how QEMUs run: in namespaces as root with bubblewrap (unless
 * `off`), else as the QEMU user through `-runas` (root), else as the daemon's user. `on`
 * without root or bubblewrap is refused: Runtime-Secure was asked for and cannot be had.
 */
export function chooseConfinement(setting: ConfineSetting, isRoot: boolean, hasTools: boolean): ConfineMode {
  if (setting === "on" && (!isRoot || !hasTools)) {
    throw new RuntimeError(
      "RUNTIME_UNAVAILABLE",
      !isRoot
        ? "--confine on needs ovmd to run as root (it starts each QEMU in namespaces as an unprivileged user)"
        : "--confine on needs bubblewrap (bwrap) and setpriv: apt-get install bubblewrap util-linux",
    );
  }
  if (!isRoot) return "none";
  return setting !== "off" && hasTools ? "namespaces" : "user";
}

/** SandboxSpec is one namespaced QEMU: who it runs as and which host paths it sees. */
export interface SandboxSpec {
  tools: SandboxTools;
  uid: number;
  gid: number;
  /** Supplementary groups (the owner group of /dev/kvm, when KVM is used). */
  groups: number[];
  /** Host paths visible read-only, each at its own path. */
  ro: string[];
  /** Host paths visible read-write, each at its own path. */
  rw: string[];
  /** Device nodes to pass through (/dev/kvm). */
  devices: string[];
  hostname: string;
  /**
   * bindLowPorts keeps CAP_NET_BIND_SERVICE (and only it) for QEMU: its command line publishes
   * a host port below ip_unprivileged_port_start, which QEMU binds itself as the QEMU user.
   */
  bindLowPorts?: boolean;
  /**
   * userfaultfd keeps CAP_SYS_PTRACE (and only it, with bindLowPorts' one) for QEMU: where
   * `vm.unprivileged_userfaultfd` is 0 the kernel lets only such a process use userfaultfd,
   * which background snapshots need (background.ts). QEMU is PID 1 of a PID namespace of its
   * own: there is no other process it could trace.
   */
  userfaultfd?: boolean;
}

/** sharesNetwork tells whether a QEMU command line has a NIC, which needs the host's network namespace. */
export function sharesNetwork(qemuArgv: string[]): boolean {
  return qemuArgv.some((a) => a === "-netdev" || a === "-nic" || a === "-net");
}

/**
 * sandboxArgv is the bubblewrap command line that runs `qemuArgv` confined (pure: tested
 * without bwrap). bwrap (as root) builds a new root on an empty tmpfs: the host's /usr
 * read-only, a minimal /dev, a /proc of the new PID namespace, and each path of the spec bound
 * at its own path, so QEMU's command line needs no change and the store's folders and their
 * permissions do not matter. QEMU is PID 1 of its namespace (`--as-pid-1`: it spawns nothing
 * to reap), in a session of its own; setpriv drops to the QEMU user with no capabilities, an
 * empty bounding set and no_new_privs before QEMU runs, so QEMU needs no set*id call and its
 * seccomp filter keeps `elevateprivileges=deny`. bwrap writes `{"child-pid": N}` (QEMU's pid
 * as the host sees it) and later `{"exit-code": N}` on fd 3.
 */
export function sandboxArgv(s: SandboxSpec, qemuArgv: string[]): string[] {
  const a: string[] = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"];
  if (!sharesNetwork(qemuArgv)) a.push("--unshare-net");
  a.push("--hostname", s.hostname, "--new-session", "--as-pid-1", "--json-status-fd", "3");
  a.push("--clearenv", "--setenv", "PATH", "/usr/bin:/bin");
  // setpriv needs these to drop to the QEMU user; they go with the uid change (execve as non-root).
  a.push("--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP");
  const keep = keptCapabilities(s);
  for (const c of keep) a.push("--cap-add", `CAP_${c.toUpperCase()}`);
  for (const d of s.tools.system.ro) a.push("--ro-bind", d, d);
  for (const [target, path] of s.tools.system.symlinks) a.push("--symlink", target, path);
  a.push("--dev", "/dev", "--proc", "/proc");
  for (const d of s.devices) a.push("--dev-bind", d, d);
  // bwrap 0.8 makes missing parents 0700 (root): the QEMU user could not pass them.
  for (const d of parents([...s.ro, ...s.rw])) a.push("--perms", "0755", "--dir", d);
  for (const p of s.ro) a.push("--ro-bind", p, p);
  for (const p of s.rw) a.push("--bind", p, p);
  a.push("--chdir", "/", "--");
  a.push(s.tools.setpriv, "--reuid", String(s.uid), "--regid", String(s.gid));
  a.push(...(s.groups.length ? ["--groups", s.groups.join(",")] : ["--clear-groups"]));
  if (keep.length) {
    // An ambient capability survives the uid change and the exec of QEMU (no_new_privs allows it).
    const plus = keep.map((c) => `+${c}`).join(",");
    a.push(`--inh-caps=-all,${plus}`, `--ambient-caps=${plus}`);
    a.push(`--bounding-set=-all,${plus}`, "--no-new-privs", "--");
  } else a.push("--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--");
  a.push(s.tools.qemu, ...qemuArgv);
  return a;
}

/** keptCapabilities lists the capabilities a sandbox lets QEMU keep (lower case, without `cap_`). */
export function keptCapabilities(s: Pick<SandboxSpec, "bindLowPorts" | "userfaultfd">): string[] {
  return [...(s.bindLowPorts ? ["net_bind_service"] : []), ...(s.userfaultfd ? ["sys_ptrace"] : [])];
}

/** parents lists the folders above `paths` that a sandbox must create, outermost first. */
function parents(paths: string[]): string[] {
  const made = new Set<string>(["/", "/dev", "/proc", "/usr", "/dev/shm"]);
  const out: string[] = [];
  for (const p of paths) {
    const chain: string[] = [];
    for (let d = dirname(p); !made.has(d); d = dirname(d)) chain.unshift(d);
    for (const d of chain) {
      made.add(d);
      out.push(d);
    }
  }
  return out;
}

/**
 * sandboxPaths are the host paths one instance's QEMU may see (RFC §8.4): its kernel and
 * initrd and the layers of its disk chain read-only; its overlay, serial log (and a container's control and stderr logs) and tmpfs folder
 * (guest RAM, ivshmem regions, sockets) read-write; for a restore, the preloaded snapshot
 * memory it maps privately (QEMU 7.2 opens a memory-backend-file read-write even for
 * share=off). /dev/kvm when the instance runs on KVM.
 */
export function sandboxPaths(
  a: PreparedArtifact,
  cfg: QemuConfig,
): { ro: string[]; rw: string[]; devices: string[] } {
  // cfg.initrd, not the artifact's: a container's cold boot gets an initrd of its own (its launch file).
  const initrd = cfg.initrd ?? a.initrdPath;
  const ro = [a.kernelPath, ...(initrd ? [initrd] : []), ...a.disks.map((d) => d.path)];
  const rw = [
    cfg.serialLog,
    ...(cfg.controlLog ? [cfg.controlLog] : []),
    ...(cfg.stderrLog ? [cfg.stderrLog] : []),
    ...(cfg.disk ? [cfg.disk] : []),
    dirname(cfg.qmpSocket),
  ];
  if (cfg.restore) rw.push(cfg.ramFile);
  return { ro, rw, devices: cfg.accel === "kvm" ? ["/dev/kvm"] : [] };
}

/** kvmGroups is the owner group of /dev/kvm when it lets its group in: what a KVM guest's QEMU user needs. */
export async function kvmGroups(): Promise<number[]> {
  const st = await stat("/dev/kvm").catch(() => undefined);
  return st && st.mode & 0o060 ? [st.gid] : [];
}

/** namespacesOf lists the namespaces a namespaced QEMU gets, for status. */
export function namespacesOf(qemuArgv: string[]): Namespace[] {
  const all: Namespace[] = ["mnt", "pid", "ipc", "uts", "cgroup", "net"];
  return sharesNetwork(qemuArgv) ? all.filter((n) => n !== "net") : all;
}
