import { readFile, rename, writeFile } from "node:fs/promises";

/**
 * JsonFile is a small piece of daemon state kept in one JSON file: read once at start,
 * written whole (temp file + rename, so a crash never leaves half a file), one write after
 * another. Without a path it keeps nothing (embedding, tests).
 */
export class JsonFile<T> {
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly path?: string) {}

  /** read returns the file's value, or `fallback` when there is none or it cannot be read. */
  async read(fallback: T): Promise<T> {
    if (!this.path) return fallback;
    try {
      return JSON.parse(await readFile(this.path, "utf8")) as T;
    } catch {
      return fallback;
    }
  }

  /** write queues `value` to be written after the writes before it. */
  write(value: T): void {
    const path = this.path;
    if (!path) return;
    const text = JSON.stringify(value);
    this.writing = this.writing
      .then(async () => {
        await writeFile(`${path}.tmp`, text, { mode: 0o600 });
        await rename(`${path}.tmp`, path);
      })
      .catch(() => undefined);
  }

  /** flush settles once every queued write is done. */
  flush(): Promise<void> {
    return this.writing;
  }
}
