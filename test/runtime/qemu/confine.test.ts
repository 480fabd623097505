import { test } from "node:test";
import assert from "node:assert/strict";
import {
  keptCapabilities,
  chooseConfinement,
  namespacesOf,
  sandboxArgv,
  sandboxPaths,
  type SandboxSpec,
} from "../../../src/runtime/qemu/confine.js";
import type { PreparedArtifact } from "../../../src/artifact/prepare.js";
import type { QemuConfig } from "../../../src/runtime/qemu/argv.js";

const tools: SandboxSpec["tools"] = {
  bwrap: "/usr/bin/bwrap",
  setpriv: "/usr/bin/setpriv",
  qemu: "/usr/bin/qemu-system-x86_64",
  system: { ro: ["/usr"], symlinks: [["usr/lib", "/lib"]] },
};

const spec = (over: Partial<SandboxSpec> = {}): SandboxSpec => ({
  tools,
  uid: 65534,
  gid: 65534,
  groups: [],
  ro: ["/store/blobs/sha256/k", "/store/.ovms/layers/sha256/a/disk.qcow2"],
  rw: ["/var/lib/ovms/daemons/x/instances/i/overlay.qcow2", "/dev/shm/ovms/i"],
  devices: [],
  hostname: "ovms-i",
  ...over,
});

/** pairs lists `flag value` pairs of an argv, in order, for the flags given. */
function pairs(argv: string[], flags: string[]): string[] {
  const out: string[] = [];
  argv.forEach(
    (a, i) =>
      flags.includes(a) && out.push(`${a} ${argv[i + 1]}${a.endsWith("bind") ? ` ${argv[i + 2]}` : ""}`),
  );
  return out;
}

test("the sandbox: own namespaces, QEMU as pid 1 and the QEMU user, only the instance's paths at their own place", () => {
  const argv = sandboxArgv(spec(), ["-name", "ovms-i"]);
  const sep = argv.indexOf("--");
  const bw = argv.slice(0, sep);
  for (const f of [
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-net",
    "--as-pid-1",
    "--new-session",
  ])
    assert.ok(bw.includes(f), f);
  assert.ok(!bw.includes("--die-with-parent"), "QEMU must outlive the daemon");
  assert.deepEqual(pairs(bw, ["--ro-bind", "--bind"]), [
    "--ro-bind /usr /usr",
    "--ro-bind /store/blobs/sha256/k /store/blobs/sha256/k",
    "--ro-bind /store/.ovms/layers/sha256/a/disk.qcow2 /store/.ovms/layers/sha256/a/disk.qcow2",
    "--bind /var/lib/ovms/daemons/x/instances/i/overlay.qcow2 /var/lib/ovms/daemons/x/instances/i/overlay.qcow2",
    "--bind /dev/shm/ovms/i /dev/shm/ovms/i",
  ]);
  // Parents are made 0755 before anything is bound into them, outermost first, and /dev/shm comes from --dev.
  const dirs = pairs(bw, ["--dir"]).map((p) => p.split(" ")[1]);
  assert.deepEqual(dirs.slice(0, 3), ["/store", "/store/blobs", "/store/blobs/sha256"]);
  assert.ok(dirs.includes("/dev/shm/ovms") && !dirs.includes("/dev/shm"));
  assert.ok(bw.indexOf("--dev") < bw.indexOf("--dir"));
  const inner = argv.slice(sep + 1);
  assert.deepEqual(inner.slice(0, 6), [
    "/usr/bin/setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
  ]);
  assert.ok(inner.includes("--no-new-privs") && inner.includes("--bounding-set=-all"));
  assert.deepEqual(inner.slice(-3), ["/usr/bin/qemu-system-x86_64", "-name", "ovms-i"]);
});

test("a QEMU with a NIC keeps the host's network; KVM gets /dev/kvm and its group", () => {
  const withNic = sandboxArgv(spec(), ["-netdev", "user,id=n0"]);
  assert.ok(!withNic.includes("--unshare-net"));
  assert.deepEqual(namespacesOf(["-netdev", "user,id=n0"]), ["mnt", "pid", "ipc", "uts", "cgroup"]);
  assert.ok(namespacesOf([]).includes("net"));
  const kvm = sandboxArgv(spec({ devices: ["/dev/kvm"], groups: [108] }), []);
  assert.deepEqual(pairs(kvm, ["--dev-bind"]), ["--dev-bind /dev/kvm /dev/kvm"]);
  assert.ok(kvm.join(" ").includes("--groups 108"));
});

test("a QEMU that publishes a host port below 1024 keeps CAP_NET_BIND_SERVICE, and only it", () => {
  const plain = sandboxArgv(spec(), ["-netdev", "user,id=n0"]);
  assert.ok(!plain.includes("CAP_NET_BIND_SERVICE") && !plain.some((a) => a.startsWith("--ambient-caps")));
  const low = sandboxArgv(spec({ bindLowPorts: true }), [
    "-netdev",
    "user,id=n0,hostfwd=tcp:127.0.0.1:80-:80",
  ]);
  const sep = low.indexOf("--");
  assert.deepEqual(pairs(low.slice(0, sep), ["--cap-add"]).slice(-1), ["--cap-add CAP_NET_BIND_SERVICE"]);
  const inner = low.slice(sep + 1);
  for (const f of [
    "--inh-caps=-all,+net_bind_service",
    "--ambient-caps=+net_bind_service",
    "--bounding-set=-all,+net_bind_service",
    "--no-new-privs",
  ])
    assert.ok(inner.includes(f), f);
});

test("a QEMU that may use userfaultfd keeps CAP_SYS_PTRACE, and with low ports both; status lists them", () => {
  assert.deepEqual(keptCapabilities(spec()), []);
  assert.ok(!sandboxArgv(spec(), []).some((a) => a.startsWith("--ambient-caps")));
  const uffd = sandboxArgv(spec({ userfaultfd: true }), []);
  const sep = uffd.indexOf("--");
  assert.deepEqual(pairs(uffd.slice(0, sep), ["--cap-add"]).slice(-1), ["--cap-add CAP_SYS_PTRACE"]);
  for (const f of [
    "--inh-caps=-all,+sys_ptrace",
    "--ambient-caps=+sys_ptrace",
    "--bounding-set=-all,+sys_ptrace",
  ])
    assert.ok(uffd.slice(sep + 1).includes(f), f);
  assert.deepEqual(keptCapabilities(spec({ userfaultfd: true })), ["sys_ptrace"]);
  const both = sandboxArgv(spec({ userfaultfd: true, bindLowPorts: true }), ["-netdev", "user,id=n0"]);
  assert.ok(both.includes("--ambient-caps=+net_bind_service,+sys_ptrace"));
  assert.deepEqual(keptCapabilities(spec({ userfaultfd: true, bindLowPorts: true })), [
    "net_bind_service",
    "sys_ptrace",
  ]);
});

test("sandboxPaths: layers, kernel and initrd read-only; overlay, log, tmpfs folder and restored memory read-write", () => {
  const a = {
    kernelPath: "/s/k",
    initrdPath: "/s/i",
    disks: [{ path: "/s/l/a/disk.qcow2" }, { path: "/s/l/b/disk.qcow2" }],
  } as unknown as PreparedArtifact;
  const cfg = {
    serialLog: "/st/i/serial.log",
    disk: "/st/i/overlay.qcow2",
    qmpSocket: "/dev/shm/ovms/i/qmp.sock",
    ramFile: "/dev/shm/ovms-snapshots/x/h/memory",
    restore: true,
    accel: "tcg",
  } as QemuConfig;
  assert.deepEqual(sandboxPaths(a, cfg), {
    ro: ["/s/k", "/s/i", "/s/l/a/disk.qcow2", "/s/l/b/disk.qcow2"],
    rw: ["/st/i/serial.log", "/st/i/overlay.qcow2", "/dev/shm/ovms/i", "/dev/shm/ovms-snapshots/x/h/memory"],
    devices: [],
  });
});

test("chooseConfinement: namespaces as root with bubblewrap; -runas without it or when off; none for a user", () => {
  assert.equal(chooseConfinement("auto", true, true), "namespaces");
  assert.equal(chooseConfinement("auto", true, false), "user");
  assert.equal(chooseConfinement("off", true, true), "user");
  assert.equal(chooseConfinement("auto", false, true), "none");
  assert.throws(
    () => chooseConfinement("on", true, false),
    (e: any) => e.code === "RUNTIME_UNAVAILABLE" && /bubblewrap/.test(e.message),
  );
  assert.throws(
    () => chooseConfinement("on", false, true),
    (e: any) => e.code === "RUNTIME_UNAVAILABLE" && /root/.test(e.message),
  );
});
