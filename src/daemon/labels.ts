import { JsonFile } from "./json-file.js";

/**
 * Labels remember, per instance, the reference the client started it from when the runtime
 * reports another one: a restore served by a warm-pool process carries the reference of the
 * start that filled the pool, which may be another name of the same snapshot (issue 14). The
 * daemon shows the name the user ran. Kept in a file, so a restarted daemon shows it too.
 */
export class Labels {
  private readonly byId = new Map<string, string>();
  private readonly file: JsonFile<Record<string, string>>;

  constructor(file?: string) {
    this.file = new JsonFile(file);
  }

  /** load reads the labels a previous daemon kept, dropping those of instances that are gone. */
  async load(exists: (id: string) => boolean): Promise<void> {
    const saved = await this.file.read({});
    for (const [id, ref] of Object.entries(saved ?? {}))
      if (typeof ref === "string" && exists(id)) this.byId.set(id, ref);
    this.save();
  }

  /** set labels an instance with the reference it was started from (nothing to keep when the runtime agrees). */
  set(id: string, asked: string, reported: string): void {
    if (asked === reported) return;
    this.byId.set(id, asked);
    this.save();
  }

  /** of is an instance's label, if it has one. */
  of(id: string): string | undefined {
    return this.byId.get(id);
  }

  /** forget drops the label of a removed instance. */
  forget(id: string): void {
    if (this.byId.delete(id)) this.save();
  }

  private save(): void {
    this.file.write(Object.fromEntries(this.byId));
  }
}
