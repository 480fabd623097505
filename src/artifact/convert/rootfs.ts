import type { Digest } from "../../core/digest.js";
import { OvmsError } from "../../core/errors.js";
import type { EntryType, LayerEntry } from "./layer-cache.js";

/** NodeType is what one path of the merged root filesystem is. */
export type NodeType = Exclude<EntryType, "whiteout" | "opaque" | "hardlink">;

/**
 * RootNode is one path of the merged root filesystem: its metadata, and for a regular file
 * where its content is (a layer's cached content file). Two paths with the same `content`
 * are hard links of one inode.
 */
export interface RootNode {
  type: NodeType;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size?: number;
  /** The layer (by diff_id) and number of the cached content file. */
  content?: { layer: Digest; n: number };
  target?: string;
  major?: number;
  minor?: number;
  xattrs?: Record<string, string>;
}

/** MAX_SYMLINKS bounds how many symlinks resolving one path may follow (as Linux does, 40). */
const MAX_SYMLINKS = 40;

/**
 * RootFs merges image layers into one root filesystem, in memory, by the OCI image spec's
 * rules (https://github.com/opencontainers/image-spec/blob/v1.1.0/layer.md): layers apply in
 * order; in each layer its whiteouts (`.wh.NAME`) and opaque markers (`.wh..wh..opq`) hide
 * what the layers below hold, and then its entries are added, a later entry replacing an
 * earlier one at the same path (a folder keeps its children when it is replaced by a folder).
 * Paths are resolved inside the root: a symlinked parent is followed within the image, never
 * out of it, and a missing parent becomes a folder. Nothing here touches the disk.
 */
export class RootFs {
  /** nodes maps each path ("" is the root) to what is there. */
  readonly nodes = new Map<string, RootNode>();

  constructor(defaultTime = 0) {
    this.nodes.set("", { type: "dir", mode: 0o755, uid: 0, gid: 0, mtime: defaultTime });
  }

  /** apply adds one layer (named by its diff_id): whiteouts first (they only hide what is below), then its entries in order. */
  apply(layer: Digest, entries: LayerEntry[]): void {
    for (const e of entries) {
      if (e.type === "whiteout") this.remove(this.resolve(e.path, false));
      else if (e.type === "opaque") {
        const dir = this.resolve(e.path, true);
        if (this.nodes.get(dir)?.type === "dir") this.removeChildren(dir);
      }
    }
    for (const e of entries) {
      if (e.type === "whiteout" || e.type === "opaque") continue;
      this.add(layer, e);
    }
  }

  /** add puts one entry at its (resolved) path. */
  private add(layer: Digest, e: LayerEntry): void {
    const path = this.resolve(e.path, false);
    const meta = {
      mode: e.mode,
      uid: e.uid,
      gid: e.gid,
      mtime: e.mtime,
      ...(e.xattrs ? { xattrs: e.xattrs } : {}),
    };
    let node: RootNode;
    switch (e.type) {
      case "hardlink": {
        const to = this.nodes.get(this.resolve(e.target!, false));
        if (!to)
          throw new OvmsError(
            "IMAGE_UNSUPPORTED",
            `hard link /${e.path}: its target /${e.target} does not exist`,
          );
        if (to.type === "dir")
          throw new OvmsError(
            "IMAGE_UNSUPPORTED",
            `hard link /${e.path}: its target /${e.target} is a folder`,
          );
        // The same inode: same content and metadata (a copy for anything but a regular file).
        node = { ...to };
        break;
      }
      case "file":
        node = { type: "file", ...meta, size: e.size ?? 0, content: { layer, n: e.content! } };
        break;
      case "symlink":
        node = { type: "symlink", ...meta, target: e.target ?? "" };
        break;
      case "char":
      case "block":
        node = { type: e.type, ...meta, major: e.major ?? 0, minor: e.minor ?? 0 };
        break;
      default:
        node = { type: e.type as NodeType, ...meta };
    }
    if (path === "") {
      if (node.type !== "dir")
        throw new OvmsError("IMAGE_UNSUPPORTED", "a layer replaces the root folder with a non-folder");
      this.nodes.set("", node);
      return;
    }
    const old = this.nodes.get(path);
    if (old && !(old.type === "dir" && node.type === "dir")) this.remove(path);
    this.nodes.set(path, node);
  }

  /** remove drops a path and everything under it. */
  private remove(path: string): void {
    if (path === "") {
      this.removeChildren("");
      return;
    }
    this.nodes.delete(path);
    this.removeChildren(path);
  }

  private removeChildren(dir: string): void {
    const prefix = dir === "" ? "" : `${dir}/`;
    for (const p of [...this.nodes.keys()]) if (p !== "" && p.startsWith(prefix)) this.nodes.delete(p);
  }

  /**
   * resolve finds where `path` really is in the merged root: every parent that is a symlink is
   * followed (relative targets from its folder, absolute ones from the root, `..` stopping at
   * the root), a missing parent is made a folder, and a parent that is something else is
   * replaced by a folder (a later layer put a folder where a file was). The last part is
   * followed too when `follow` is set.
   */
  resolve(path: string, follow: boolean): string {
    return this.walk(path, follow, true)!;
  }

  /** walk is resolve; without `create` a missing or non-folder parent means there is no such path. */
  private walk(path: string, follow: boolean, create: boolean): string | undefined {
    let parts = path.split("/").filter((p) => p !== "" && p !== ".");
    let cur: string[] = [];
    let hops = 0;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (part === "..") {
        cur.pop();
        continue;
      }
      const p = [...cur, part].join("/");
      const node = this.nodes.get(p);
      const last = i === parts.length - 1;
      if (node?.type === "symlink" && (!last || follow)) {
        if (++hops > MAX_SYMLINKS)
          throw new OvmsError("IMAGE_UNSUPPORTED", `/${path}: more than ${MAX_SYMLINKS} symlinks to follow`);
        const target = node.target ?? "";
        const rest = parts.slice(i + 1);
        const base = target.startsWith("/") ? [] : cur;
        parts = [...base, ...target.split("/").filter((x) => x !== "" && x !== "."), ...rest];
        cur = [];
        i = -1;
        continue;
      }
      if (!last && node?.type !== "dir") {
        if (!create) return undefined;
        if (node) this.remove(p);
        const parent = this.nodes.get(cur.join("/"));
        this.nodes.set(p, { type: "dir", mode: 0o755, uid: 0, gid: 0, mtime: parent?.mtime ?? 0 });
      }
      cur.push(part);
    }
    return cur.join("/");
  }

  /** paths lists every path, parents before their children ("" first). */
  paths(): string[] {
    return [...this.nodes.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** find returns the node at `path` (symlinks followed), if any; it changes nothing. */
  find(path: string): RootNode | undefined {
    const p = this.walk(path, true, false);
    return p === undefined ? undefined : this.nodes.get(p);
  }
}
