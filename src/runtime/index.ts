export * from "./types.js";
export * from "./runtime-error.js";
export * from "./lifecycle.js";
export * from "./instance-ref.js";
export * from "./qemu/qmp-client.js";
export * from "./qemu/argv.js";
export * from "./qemu/accel.js";
export * from "./qemu/qemu-runtime.js";
