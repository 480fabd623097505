export * from "./artifact.js";
export * from "./build.js";
export * from "./build-file.js";
export * from "./disk-layer.js";
export * from "./qemu-img.js";
export * from "./prepare.js";
export * from "./snapshot.js";
export * from "./ramsnap.js";
