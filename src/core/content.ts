import type { Readable } from "node:stream";
import type { Descriptor } from "./oci.js";

/**
 * ContentStore is the one role both the local store and a registry repository play, so
 * copy/pull/push is a single function that does not care which side is local
 * (the shape of oras-go `content.Storage` + `Resolver` + `Tagger`).
 */
export interface ContentStore {
  /** exists tells whether the blob or manifest of `desc` is present. */
  exists(desc: Descriptor): Promise<boolean>;
  /** fetch streams the content of `desc`; the stream fails at its end when digest or size is wrong. */
  fetch(desc: Descriptor): Promise<Readable>;
  /** push stores `content`, which must match `desc` exactly; it is not visible until verified. */
  push(desc: Descriptor, content: Readable): Promise<void>;
  /** resolve turns a tag or digest reference into the descriptor of its manifest. */
  resolve(reference: string): Promise<Descriptor>;
  /** tag names the manifest `desc` with `reference`. */
  tag(desc: Descriptor, reference: string): Promise<void>;
  /** referrers lists the manifests whose `subject` is `subject`, optionally of one artifactType. */
  referrers(subject: Descriptor, artifactType?: string): Promise<Descriptor[]>;
}
