import { OvmsError } from "./errors.js";

const UNITS: Record<string, number> = { "": 1, B: 1, K: 1 << 10, M: 1 << 20, G: 1 << 30, T: 2 ** 40 };

/**
 * parseSize reads a byte size: a non-negative integer, optionally with a binary suffix
 * (K, M, G, T; `KiB`/`MB` spellings accepted and all binary), e.g. `512M`, `1G`, `4096`.
 */
export function parseSize(input: string | number, what = "size"): number {
  if (typeof input === "number") {
    if (Number.isSafeInteger(input) && input >= 0) return input;
    throw new OvmsError("INVALID_SIZE", `${what}: ${input} is not a non-negative integer`);
  }
  const m = /^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(input);
  if (!m) throw new OvmsError("INVALID_SIZE", `${what}: "${input}" is not a size (e.g. 4096, 512M, 1G)`);
  const n = Number(m[1]) * UNITS[m[2].toUpperCase()];
  if (!Number.isSafeInteger(n)) throw new OvmsError("INVALID_SIZE", `${what}: "${input}" is too large`);
  return n;
}

/** formatSize writes bytes for people: `1.5 GiB`, `12.0 MiB`, `512 B`. */
export function formatSize(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}
