import { mkdir, readdir, readFile, rmdir, stat, writeFile } from "node:fs/promises";
import { totalmem } from "node:os";
import { join } from "node:path";

/** Limits are what one instance may use: memory in bytes and CPU time in cores. */
export interface Limits {
  memoryBytes: number;
  /** CPU quota in cores (1.5 = one and a half cores' worth of time per period). */
  cpus: number;
}

/** LimitsInfo is what status says about an instance's limits: applied, or why not. */
export interface LimitsInfo {
  enforced: boolean;
  /** `cgroup2` or `cgroup1`, when enforced. */
  via?: string;
  memoryMax?: number;
  cpuMax?: number;
  /** Why there are none, when not enforced. */
  note?: string;
}

/** MEMORY_OVERHEAD is what QEMU itself may use beside guest RAM and device regions (code, buffers, I/O). */
export const MEMORY_OVERHEAD = 256 << 20;

/**
 * tcgCodeCache is the most memory TCG's translation cache takes in QEMU 7.2: the default
 * tb-size, a 1 GiB mapping on 64-bit hosts, no more than an eighth of the host's memory. It
 * fills as the guest runs new code; a limit below it would let the OOM killer end a busy guest.
 */
export function tcgCodeCache(hostMemory = totalmem()): number {
  return Math.min(1 << 30, Math.floor(hostMemory / 8));
}

/** CPU_PERIOD_US is the CFS period quotas are given in. */
const CPU_PERIOD_US = 100_000;

/**
 * limitsFor is what an instance gets: guest memory plus its device regions plus QEMU's own
 * overhead (and TCG's translation cache under TCG), and one core per vCPU (QEMU's I/O thread
 * shares them).
 */
export function limitsFor(memoryBytes: number, deviceBytes: number, vcpus: number, tcg: boolean): Limits {
  const overhead = MEMORY_OVERHEAD + (tcg ? tcgCodeCache() : 0);
  return { memoryBytes: memoryBytes + deviceBytes + overhead, cpus: vcpus };
}

/** CgroupLayout is where this host's memory and CPU controllers are, read from /proc (pure input). */
export type CgroupLayout =
  | { kind: "v2"; base: string; enable: string[] }
  | { kind: "v1"; memory: string; cpu: string }
  | { kind: "none"; note: string };

/**
 * findCgroupLayout reads /proc/self/mountinfo and /proc/self/cgroup and decides where instance
 * cgroups go (pure). cgroup v2 with the memory and cpu controllers: under the daemon's own
 * cgroup when it is the root one, else a sibling tree is not ours to take, so under the
 * daemon's cgroup as a delegated subtree (`Delegate=yes` in systemd), which the caller prepares
 * (`prepareV2`). cgroup v1 (hybrid hosts): `ovms/` under the daemon's own memory and cpu
 * cgroups, which v1 allows. Neither: no limits, and the note says why.
 */
export function findCgroupLayout(mountinfo: string, selfCgroup: string): CgroupLayout {
  const mounts = mountinfo
    .split("\n")
    .map((l) => {
      const [pre, post] = l.split(" - ");
      if (!pre || !post) return undefined;
      const f = pre.split(" ");
      const [fstype, , opts] = post.split(" ");
      return { root: f[3], point: f[4], fstype, opts: (opts ?? "").split(",") };
    })
    .filter((m) => m !== undefined);
  const own = new Map<string, string>();
  for (const line of selfCgroup.split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line.trim());
    if (m) for (const c of m[1] ? m[1].split(",") : [""]) own.set(c, m[2]);
  }
  const v1 = (ctrl: string) => {
    const mnt = mounts.find((m) => m.fstype === "cgroup" && m.opts.includes(ctrl));
    const path = own.get(ctrl);
    return mnt && path !== undefined ? join(mnt.point, relative(mnt.root, path), "ovms") : undefined;
  };
  const v2 = mounts.find((m) => m.fstype === "cgroup2");
  if (v2 && !mounts.some((m) => m.fstype === "cgroup" && m.opts.includes("memory"))) {
    const path = own.get("") ?? "/";
    return { kind: "v2", base: join(v2.point, relative(v2.root, path)), enable: ["memory", "cpu"] };
  }
  const memory = v1("memory");
  const cpu = v1("cpu");
  if (memory && cpu) return { kind: "v1", memory, cpu };
  return {
    kind: "none",
    note: v2
      ? "the host's cgroup v2 has no memory and cpu controllers ovmd can use"
      : "the host has no cgroup memory and cpu controllers",
  };
}

/** relative is `path` (a cgroup path) below a mount whose root is `root`. */
function relative(root: string, path: string): string {
  return root !== "/" && path.startsWith(root) ? path.slice(root.length) || "/" : path;
}

/**
 * Cgroups gives each instance a cgroup with its limits (RFC §8.4). Its QEMU is placed there
 * before it runs (`joinCommand`), so every page it touches is counted. Where the host has no
 * usable controllers, or preparing them fails, instances run without limits and their status
 * says why.
 */
export class Cgroups {
  private ready?: Promise<CgroupLayout>;

  /**
   * A Cgroups reads the host's layout with `layout`; instance cgroups of an earlier daemon
   * left without a process for `staleMs` are removed when it first prepares them.
   */
  constructor(
    private readonly layout: () => Promise<CgroupLayout> = readLayout,
    private readonly staleMs = 60_000,
  ) {}

  /**
   * create makes instance `id`'s cgroup with `limits`; it returns the `cgroup.procs` files a
   * process joins and what was applied, or no files and the reason there are no limits.
   */
  async create(id: string, limits: Limits): Promise<{ procs: string[]; info: LimitsInfo }> {
    const layout = await (this.ready ??= this.layout().then((l) => prepare(l, this.staleMs)));
    if (layout.kind === "none") return { procs: [], info: { enforced: false, note: layout.note } };
    const quota = Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US));
    try {
      if (layout.kind === "v2") {
        const dir = join(layout.base, id);
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, "memory.max"), String(limits.memoryBytes));
        await writeFile(join(dir, "memory.swap.max"), "0").catch(() => undefined);
        await writeFile(join(dir, "cpu.max"), `${quota} ${CPU_PERIOD_US}`);
        return { procs: [join(dir, "cgroup.procs")], info: applied("cgroup2", limits) };
      }
      const mem = join(layout.memory, id);
      const cpu = join(layout.cpu, id);
      await mkdir(mem, { recursive: true });
      await mkdir(cpu, { recursive: true });
      await writeFile(join(mem, "memory.limit_in_bytes"), String(limits.memoryBytes));
      await writeFile(join(cpu, "cpu.cfs_period_us"), String(CPU_PERIOD_US));
      await writeFile(join(cpu, "cpu.cfs_quota_us"), String(quota));
      return {
        procs: [join(mem, "cgroup.procs"), join(cpu, "cgroup.procs")],
        info: applied("cgroup1", limits),
      };
    } catch (e) {
      await this.remove(id);
      return {
        procs: [],
        info: { enforced: false, note: `creating its cgroup failed: ${(e as Error).message}` },
      };
    }
  }

  /** remove deletes instance `id`'s cgroup once its processes are gone (retrying briefly: the launcher exits just after QEMU). */
  async remove(id: string): Promise<void> {
    const layout = await (this.ready ?? Promise.resolve(undefined));
    if (!layout || layout.kind === "none") return;
    const dirs =
      layout.kind === "v2" ? [join(layout.base, id)] : [join(layout.memory, id), join(layout.cpu, id)];
    for (const d of dirs) {
      for (let i = 0; i < 20; i++) {
        const e = await rmdir(d).then(
          () => undefined,
          (err: NodeJS.ErrnoException) => err,
        );
        if (!e || e.code === "ENOENT") break;
        if (e.code !== "EBUSY") break;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
}

function applied(via: string, l: Limits): LimitsInfo {
  return { enforced: true, via, memoryMax: l.memoryBytes, cpuMax: l.cpus };
}

/**
 * joinCommand wraps a command so that it enters the cgroups first: a shell writes its own
 * pid into each `cgroup.procs` and then becomes the command (exec), so QEMU is counted from
 * its first page. Without cgroups the command is returned as it is.
 */
export function joinCommand(procs: string[], file: string, args: string[]): { file: string; args: string[] } {
  if (!procs.length) return { file, args };
  const script =
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"';
  return { file: "/bin/sh", args: ["-c", script, "sh", String(procs.length), ...procs, file, ...args] };
}

/**
 * sweep removes instance cgroups that outlived their QEMU (a daemon killed before it could
 * remove them): a cgroup with a process in it cannot be removed (EBUSY), and one younger than
 * `staleMs` may be about to get its QEMU (another daemon's start), so both stay.
 */
async function sweep(base: string, staleMs: number): Promise<void> {
  for (const name of await readdir(base).catch(() => [] as string[])) {
    if (!/^[0-9a-f]{8}-[0-9a-f-]{27}$/.test(name)) continue;
    const st = await stat(join(base, name)).catch(() => undefined);
    if (st?.isDirectory() && Date.now() - st.mtimeMs >= staleMs)
      await rmdir(join(base, name)).catch(() => undefined);
  }
}

async function readLayout(): Promise<CgroupLayout> {
  const [mountinfo, self] = await Promise.all([
    readFile("/proc/self/mountinfo", "utf8").catch(() => ""),
    readFile("/proc/self/cgroup", "utf8").catch(() => ""),
  ]);
  return findCgroupLayout(mountinfo, self);
}

/**
 * prepare readies the parent cgroups once. v1: the `ovms/` folders. v2: the controllers must
 * be enabled for children, which cgroup v2 allows only in a cgroup without processes of its
 * own (except the root): the daemon moves itself into a leaf `ovmd/` of its cgroup first, as
 * a systemd service with Delegate=yes does; instances go under `instances/`.
 */
async function prepare(layout: CgroupLayout, staleMs: number): Promise<CgroupLayout> {
  try {
    if (layout.kind === "v1") {
      await mkdir(layout.memory, { recursive: true });
      await mkdir(layout.cpu, { recursive: true });
      await sweep(layout.memory, staleMs);
      await sweep(layout.cpu, staleMs);
      return layout;
    }
    if (layout.kind !== "v2") return layout;
    const controllers = (await readFile(join(layout.base, "cgroup.controllers"), "utf8")).trim().split(/\s+/);
    const missing = layout.enable.filter((c) => !controllers.includes(c));
    if (missing.length)
      return {
        kind: "none",
        note: `the daemon's cgroup ${layout.base} lacks the ${missing.join(", ")} controller`,
      };
    const enable = layout.enable.map((c) => `+${c}`).join(" ");
    // The root cgroup has no cgroup.type, and may hold processes beside its children.
    const isRoot = !(await readFile(join(layout.base, "cgroup.type"), "utf8").catch(() => ""));
    if (!isRoot) {
      await mkdir(join(layout.base, "ovmd"), { recursive: true });
      await writeFile(join(layout.base, "ovmd", "cgroup.procs"), String(process.pid));
    }
    await writeFile(join(layout.base, "cgroup.subtree_control"), enable);
    const base = join(layout.base, isRoot ? "ovms" : "instances");
    await mkdir(base, { recursive: true });
    await writeFile(join(base, "cgroup.subtree_control"), enable);
    await sweep(base, staleMs);
    return { ...layout, base };
  } catch (e) {
    return {
      kind: "none",
      note: `the daemon cannot delegate cgroups (${(e as Error).message}); run it in a cgroup of its own (systemd: Delegate=yes)`,
    };
  }
}
