import type { Store } from "../../store/store.js";
import { convertImage } from "./convert-image.js";
import { openImageStore, parseSource } from "./image-source.js";
import type { ConvertOptions, ConvertResult } from "./options.js";
import { convertVmConfig } from "./vm-config.js";

export * from "./bootstrap.js";
export * from "./convert-image.js";
export * from "./convert-rootfs.js";
export * from "./ext4.js";
export * from "./guest.js";
export * from "./image.js";
export * from "./image-source.js";
export * from "./launch.js";
export * from "./layer-cache.js";
export * from "./newc.js";
export * from "./options.js";
export * from "./rootfs.js";
export * from "./vm-config.js";

/**
 * convert turns SOURCE into an OVMS artifact in `store` (`ovm convert`): a container image
 * (a registry reference, `docker://REF`, or `oci:DIR[:TAG]`) becomes a containerMode artifact
 * (convertImage); a runtime-spec config.json with a `vm` section becomes the VM it describes
 * (convertVmConfig).
 */
export async function convert(store: Store, source: string, opts: ConvertOptions): Promise<ConvertResult> {
  const src = parseSource(source);
  if (src.kind === "vm-config") return convertVmConfig(store, src.path, opts);
  const images = await openImageStore(src);
  try {
    return await convertImage(store, images, opts);
  } finally {
    await images.close();
  }
}
