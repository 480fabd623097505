import type { Accel, Machine } from "../types.js";
import { netdevArgv, type QemuNetwork } from "./network.js";

/** QemuConfig is everything that decides a QEMU command line for one instance. */
export interface QemuConfig {
  id: string;
  machine: Machine;
  accel: Accel;
  memoryBytes: number;
  vcpus: number;
  kernel: string;
  initrd?: string;
  cmdline: string;
  /** The per-instance overlay (qcow2) on top of the artifact's disk chain. */
  disk?: string;
  serialLog: string;
  /**
   * serialSocket gives the serial console an input: QEMU listens on this UNIX socket and
   * writes everything the guest prints to `serialLog` too (the chardev's `logfile`), whether
   * or not anyone is connected (serial-console.ts). Without it the console is output only.
   */
  serialSocket?: string;
  /** containerMode: a second serial port (COM2) into this file, OVMS-Init's control channel. */
  controlLog?: string;
  /**
   * controlSocket gives the control channel an input, as `serialSocket` does the console: QEMU
   * listens on it and logs the guest's side into `controlLog`. The runtime writes commands
   * (`signal N`, control-channel.ts) that OVMS-Init's control reader carries out.
   */
  controlSocket?: string;
  /**
   * containerMode: a virtio-serial port named `ovms.stderr` into this file, where OVMS-Init
   * sends the program's stderr (the first serial port keeps its stdout).
   */
  stderrLog?: string;
  qmpSocket: string;
  /** File backing guest RAM (on tmpfs), so a snapshot can keep memory out of the migration stream. */
  ramFile: string;
  devices: { type: "ivshmem"; name: string; size: number; path: string }[];
  /** The NIC (network.ts), or none. */
  network?: QemuNetwork;
  /** Drop to this user after start-up (`-runas`), used when the daemon runs as root. */
  runAs?: string;
  /**
   * Restore: map `ramFile` privately (share=off: a copy-on-write clone of a preloaded
   * snapshot) and wait paused for the device state (`-incoming defer -S`).
   */
  restore?: boolean;
  /** CPU model; default `host` under KVM, `max` under TCG. */
  cpuModel?: string;
  /** A VM generation ID (q35 only): a new one tells a restored guest it is a clone. */
  vmgenid?: string;
  /** Lock guest memory in RAM (mlock_required). */
  memLock?: boolean;
}

/** STDERR_PORT is the name of the virtio-serial port that carries a container's stderr (rfc §6.7). */
export const STDERR_PORT = "ovms.stderr";

/** defaultCpuModel is the CPU model an accelerator gets unless told otherwise. */
export function defaultCpuModel(accel: Accel): string {
  return accel === "kvm" ? "host" : "max";
}

/**
 * sandboxOption is QEMU's seccomp filter, as strict as the features allow: obsolete calls,
 * spawning and resource control are always denied; set*id is denied unless QEMU itself must
 * drop root with -runas (which needs setuid once, right after start-up).
 */
export function sandboxOption(runAs?: string): string {
  return `on,obsolete=deny,elevateprivileges=${runAs ? "allow" : "deny"},spawn=deny,resourcecontrol=deny`;
}

/** qemuArgv builds the QEMU 7.2 command line for an instance (pure: tested without QEMU). */
export function qemuArgv(c: QemuConfig): string[] {
  const a: string[] = ["-name", `ovms-${c.id},debug-threads=on`];
  // microvm: no PCI, no firmware option ROMs, virtio-mmio devices; q35 when a device needs PCI.
  a.push(
    "-machine",
    c.machine === "microvm"
      ? "microvm,x-option-roms=off,rtc=on,memory-backend=ram0"
      : "q35,memory-backend=ram0",
  );
  a.push("-accel", c.accel, "-cpu", c.cpuModel ?? defaultCpuModel(c.accel));
  // In MiB where it is whole, else in KiB (RAM sized off the 256 KiB grid: precopy.ts).
  const mem =
    c.memoryBytes % (1 << 20) ? `${Math.floor(c.memoryBytes / 1024)}K` : `${c.memoryBytes / (1 << 20)}M`;
  a.push("-m", mem, "-smp", String(c.vcpus));
  a.push(
    "-object",
    `memory-backend-file,id=ram0,mem-path=${c.ramFile},size=${c.memoryBytes},share=${c.restore ? "off" : "on"}`,
  );
  if (c.memLock) a.push("-overcommit", "mem-lock=on");
  a.push("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot");
  a.push("-kernel", c.kernel);
  if (c.initrd) a.push("-initrd", c.initrd);
  a.push("-append", c.cmdline);
  a.push(
    "-chardev",
    c.serialSocket
      ? `socket,id=serial0,path=${c.serialSocket},server=on,wait=off,logfile=${c.serialLog}`
      : `file,id=serial0,path=${c.serialLog}`,
    "-serial",
    "chardev:serial0",
  );
  if (c.controlLog)
    a.push(
      "-chardev",
      c.controlSocket
        ? `socket,id=control0,path=${c.controlSocket},server=on,wait=off,logfile=${c.controlLog}`
        : `file,id=control0,path=${c.controlLog}`,
      "-device",
      "isa-serial,chardev=control0,index=1",
    );
  // SeaBIOS (q35) would otherwise print its own escape codes on the guest's serial console.
  if (c.machine === "q35") a.push("-fw_cfg", "name=etc/sercon-port,string=0");
  if (c.disk) {
    a.push("-drive", `file=${c.disk},format=qcow2,if=none,id=disk0,discard=unmap`);
    a.push(
      "-device",
      c.machine === "microvm" ? "virtio-blk-device,drive=disk0" : "virtio-blk-pci,drive=disk0",
    );
  }
  // After the disk, always: on microvm the order decides the virtio-mmio slots, which a restore must match.
  if (c.network) a.push(...netdevArgv(c.network, c.machine));
  for (const d of c.devices) {
    // master=on: this side owns the region, which QEMU needs to migrate it (RAM snapshots).
    a.push("-object", `memory-backend-file,id=shm-${d.name},mem-path=${d.path},size=${d.size},share=on`);
    a.push("-device", `ivshmem-plain,memdev=shm-${d.name},master=on`);
  }
  // After every other virtio device, so that adding it moves none of their microvm slots.
  if (c.stderrLog)
    a.push(
      "-chardev",
      `file,id=stderr0,path=${c.stderrLog}`,
      "-device",
      c.machine === "microvm" ? "virtio-serial-device,id=vser0" : "virtio-serial-pci,id=vser0",
      "-device",
      `virtserialport,bus=vser0.0,chardev=stderr0,name=${STDERR_PORT}`,
    );
  if (c.vmgenid && c.machine === "q35") a.push("-device", `vmgenid,guid=${c.vmgenid}`);
  a.push("-qmp", `unix:${c.qmpSocket},server=on,wait=off`);
  if (c.restore) a.push("-incoming", "defer", "-S");
  a.push("-sandbox", sandboxOption(c.runAs));
  if (c.runAs) a.push("-runas", c.runAs);
  return a;
}
