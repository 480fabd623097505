import { DEMO_CMDLINE, demoAssets } from "../helpers.js";

/**
 * vmConfig is a runtime-spec config.json for a VM-based runtime, written the way the spec's
 * own examples write each part (config.md, config-linux.md, config-vm.md), around the demo
 * VM's kernel, initrd and base disk.
 */
export function vmConfig(over: { image?: { path: string; format: string }; hypervisor?: string } = {}) {
  const a = demoAssets();
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: true,
      user: { uid: 1, gid: 1 },
      args: ["sh"],
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
      cwd: "/",
    },
    root: { path: "rootfs", readonly: true },
    hostname: "slartibartfast",
    mounts: [{ destination: "/proc", type: "proc", source: "proc" }],
    linux: {
      resources: {
        memory: { limit: 201326592, reservation: 100663296 },
        cpu: { shares: 1024, quota: 100000, period: 100000 },
        pids: { limit: 32771 },
      },
      namespaces: [{ type: "pid" }, { type: "network" }],
    },
    vm: {
      hypervisor: { path: over.hypervisor ?? "/path/to/vmm", parameters: ["opts1=foo", "opts2=bar"] },
      kernel: {
        path: a.kernel,
        parameters: [...DEMO_CMDLINE.split(" "), "ovms.mode=poweroff", "hello world"],
        initrd: a.initrd,
      },
      image: over.image ?? { path: a.base, format: "qcow2" },
    },
    annotations: { "com.example.key1": "value1" },
  };
}
