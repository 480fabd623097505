import { chmod } from "node:fs/promises";
import { dirname } from "node:path";
import type { PreparedArtifact } from "../../artifact/prepare.js";
import { RuntimeError } from "../runtime-error.js";
import { QEMU_BINARY } from "./accel.js";
import { sandboxOption, type QemuConfig } from "./argv.js";
import type { ConfinementInfo } from "../types.js";
import { Cgroups, joinCommand, limitsFor } from "./cgroup.js";
import { unprivilegedUserfaultfd } from "./background.js";
import {
  chooseConfinement,
  findSandboxTools,
  keptCapabilities,
  kvmGroups,
  namespacesOf,
  sandboxArgv,
  sandboxPaths,
  type ConfineMode,
  type ConfineSetting,
  type SandboxTools,
} from "./confine.js";
import { publishesLowPorts } from "./network.js";
import { QemuUser } from "./qemu-user.js";
import type { Live, OnExit, Supervisor } from "./supervisor.js";

/** Launch is how to start one instance's QEMU: the program and arguments, and whether bwrap reports QEMU's pid. */
export interface Launch {
  file: string;
  args: string[];
  /** The command is the sandbox: bwrap writes QEMU's pid and exit status as JSON lines on fd 3. */
  sandboxed: boolean;
  confinement: ConfinementInfo;
}

/**
 * VmmLauncher decides how every QEMU of a daemon runs: confined in namespaces as the QEMU
 * user (root with bubblewrap), as the QEMU user through `-runas`, or as the daemon's user;
 * each in a cgroup with its instance's limits where the host allows. It hands the QEMU user
 * exactly the files it must write, and builds the command that launches one QEMU.
 */
export class VmmLauncher {
  private constructor(
    readonly mode: ConfineMode,
    readonly user: QemuUser,
    private readonly tools: SandboxTools | undefined,
    private readonly cgroups: Cgroups | undefined,
    /** How QEMUs get userfaultfd: from the host's sysctl, from CAP_SYS_PTRACE in their sandbox, or not at all. */
    private readonly uffd: "host" | "capability" | "none",
  ) {}

  /** userfaultfd tells whether this launcher's QEMUs may use userfaultfd (background snapshots). */
  get userfaultfd(): boolean {
    return this.uffd !== "none";
  }

  /**
   * create chooses the mode for `setting` (see chooseConfinement); as root QEMU runs as
   * `runAs` (default `nobody`; null: QEMU keeps the daemon's user, which rules namespaces out).
   * `limits: false` leaves cgroups alone. Unless `backgroundSnapshots` is false, QEMUs may use
   * userfaultfd: any process may where `vm.unprivileged_userfaultfd` is 1; elsewhere a QEMU
   * confined in namespaces keeps CAP_SYS_PTRACE for it (alone in its PID namespace, it can
   * trace no other process), and QEMUs in the other modes cannot.
   */
  static async create(opts: {
    confine?: ConfineSetting;
    runAs?: string | null;
    limits?: boolean;
    backgroundSnapshots?: boolean;
  }): Promise<VmmLauncher> {
    const root = process.getuid?.() === 0;
    const setting = opts.confine ?? "auto";
    const cgroups = root && opts.limits !== false ? new Cgroups() : undefined;
    const wanted = opts.backgroundSnapshots !== false;
    const host = wanted && (await unprivilegedUserfaultfd());
    if (opts.runAs === null) {
      if (setting === "on")
        throw new RuntimeError("RUNTIME_UNAVAILABLE", "confinement needs a QEMU user to drop to (runAs)");
      return new VmmLauncher("none", new QemuUser(undefined), undefined, cgroups, host ? "host" : "none");
    }
    const tools = root && setting !== "off" ? await findSandboxTools(QEMU_BINARY) : undefined;
    const mode = chooseConfinement(setting, root, !!tools);
    const runAs = mode === "none" ? undefined : (opts.runAs ?? "nobody");
    const uffd = host ? "host" : wanted && mode === "namespaces" ? "capability" : "none";
    return new VmmLauncher(mode, new QemuUser(runAs), tools, cgroups, uffd);
  }

  /** runAs is the user QEMU drops to itself (`-runas`): only in mode `user`. */
  get runAs(): string | undefined {
    return this.mode === "user" ? this.user.name : undefined;
  }

  /**
   * grant lets the QEMU user write what it writes: its overlay, serial log and tmpfs folder
   * (plus `extra`: a container's control log and its own initrd)
   * and, for a restore, the preloaded memory (QEMU 7.2 opens it read-write even to map it
   * privately; in its own namespaces QEMU opens it as that user, hence the owner's write bit).
   * With `-runas` QEMU must also reach into the instance folder, so the folder is handed over
   * too; in namespaces it stays the daemon's alone (state.json is out of QEMU's reach).
   */
  async grant(a: PreparedArtifact, cfg: QemuConfig, dir: string, extra: string[] = []): Promise<void> {
    const mine = [cfg.serialLog, ...(cfg.disk ? [cfg.disk] : []), dirname(cfg.qmpSocket), ...extra];
    if (this.mode === "user") mine.push(dir);
    if (a.ramSnapshot) mine.push(a.ramSnapshot.memoryFile);
    await this.user.grant(mine);
    if (a.ramSnapshot && this.mode === "namespaces") await chmod(a.ramSnapshot.memoryFile, 0o600);
  }

  /** checkReachable refuses (mode `user` only) paths the QEMU user cannot reach after it dropped root. */
  async checkReachable(paths: string[]): Promise<void> {
    if (this.mode !== "user") return;
    for (const p of paths) await this.user.checkReachable(p);
  }

  /**
   * command is how to launch instance `id`'s QEMU with `argv`: in its cgroup (created here
   * with the instance's limits) and, in mode `namespaces`, in its sandbox.
   */
  async command(a: PreparedArtifact, cfg: QemuConfig, argv: string[]): Promise<Launch> {
    const deviceBytes = cfg.devices.reduce((n, d) => n + d.size, 0);
    const limits = limitsFor(cfg.memoryBytes, deviceBytes, cfg.vcpus, cfg.accel === "tcg");
    const cg = this.cgroups
      ? await this.cgroups.create(cfg.id, limits)
      : { procs: [], info: { enforced: false, note: "limits need a daemon running as root" } };
    const confinement: ConfinementInfo = {
      mode: this.mode,
      seccomp: sandboxOption(cfg.runAs),
      limits: cg.info,
    };
    if (this.user.name) confinement.user = this.user.name;
    if (this.mode !== "namespaces" || !this.tools) {
      return { ...joinCommand(cg.procs, QEMU_BINARY, argv), sandboxed: false, confinement };
    }
    const ids = await this.user.ids();
    const paths = sandboxPaths(a, cfg);
    const spec = {
      tools: this.tools,
      uid: ids.uid,
      gid: ids.gid,
      groups: paths.devices.length ? await kvmGroups() : [],
      ...paths,
      hostname: `ovms-${cfg.id.slice(0, 8)}`,
      bindLowPorts: publishesLowPorts(cfg.network),
      userfaultfd: this.uffd === "capability",
    };
    const args = sandboxArgv(spec, argv);
    confinement.namespaces = namespacesOf(argv);
    const caps = keptCapabilities(spec);
    if (caps.length) confinement.capabilities = caps;
    return { ...joinCommand(cg.procs, this.tools.bwrap, args), sandboxed: true, confinement };
  }

  /**
   * spawn launches instance `cfg.id`'s QEMU (see command) under `procs`, and resolves once
   * QEMU's own pid is known: in a sandbox the child is bwrap, and QEMU's pid is what stop,
   * status and re-attach need (bwrap's is kept as `launcher_pid`).
   */
  async spawn(
    procs: Supervisor,
    a: PreparedArtifact,
    cfg: QemuConfig,
    argv: string[],
    logFile: string,
    onExit: OnExit,
  ): Promise<{ live: Live; pid?: number; launcher_pid?: number; confinement: ConfinementInfo }> {
    const launch = await this.command(a, cfg, argv);
    const { pid, live, vmmPid } = procs.spawn(cfg.id, launch, logFile, onExit);
    const qemu = (await vmmPid) ?? pid;
    const out: { live: Live; pid?: number; launcher_pid?: number; confinement: ConfinementInfo } = {
      live,
      confinement: launch.confinement,
    };
    if (qemu !== undefined) out.pid = qemu;
    if (launch.sandboxed && pid !== qemu) out.launcher_pid = pid;
    return out;
  }

  /** release removes instance `id`'s cgroup once its QEMU has ended. */
  async release(id: string): Promise<void> {
    await this.cgroups?.remove(id);
  }
}
