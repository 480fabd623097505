import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs";
import { RuntimeError } from "../runtime-error.js";

/**
 * A QEMU 7.2 migration stream (`QEVM`, version 3) of a restored clone carries its guest RAM:
 * the clone maps its memory `share=off`, so `x-ignore-shared` does not skip it. splitRamStream
 * takes that RAM out of the stream: its pages go into a memory file (the clone's memory as the
 * guest sees it now), and what is left is the device state a restore feeds back, the same
 * shape as one taken from a `share=on` guest (rfc §5.4). Only the stream's head is parsed — the
 * configuration section and the `ram` section's setup, iterations and end — because QEMU writes
 * every iterative section before the first device section; from there on the bytes are copied.
 */

const QEVM = 0x5145564d;
const SECTION = { EOF: 0x00, START: 0x01, PART: 0x02, END: 0x03, FULL: 0x04, SUB: 0x05, CONFIG: 0x07 };
const FOOTER = 0x7e;
const FLAG = { ZERO: 0x02, MEM_SIZE: 0x04, PAGE: 0x08, EOS: 0x10, CONTINUE: 0x20 };
const PAGE = 4096;

function bad(why: string): RuntimeError {
  return new RuntimeError(
    "SNAPSHOT_FAILED",
    `reading the clone's memory from QEMU's migration stream: ${why}`,
  );
}

/** Reader reads a file front to back through a buffer, tracking the byte offset. */
class Reader {
  private buf = Buffer.alloc(0);
  private at = 0;
  /** pos is the offset in the file of the next byte read. */
  pos = 0;
  private filePos = 0;

  constructor(
    private readonly fd: number,
    private readonly size: number,
  ) {}

  private need(n: number): void {
    if (this.buf.length - this.at >= n) return;
    const rest = this.buf.subarray(this.at);
    const want = Math.max(n - rest.length, 8 << 20);
    const chunk = Buffer.alloc(Math.min(want, this.size - this.filePos));
    const bytesRead = readSync(this.fd, chunk, 0, chunk.length, this.filePos);
    this.filePos += bytesRead;
    this.buf = Buffer.concat([rest, chunk.subarray(0, bytesRead)]);
    this.at = 0;
    if (this.buf.length < n)
      throw bad(`stream ends at ${this.pos + this.buf.length}, ${n} more bytes expected`);
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    this.pos += n;
    return b;
  }

  peek(): number {
    this.need(1);
    return this.buf[this.at];
  }

  u32(): number {
    return this.bytes(4).readUInt32BE(0);
  }
}

/** RamSplit is what splitRamStream found: the device state left and what the RAM block held. */
export interface RamSplit {
  deviceState: Buffer;
  /** The RAM block taken out (QEMU's idstr, e.g. `ram0`). */
  block: string;
  /** Pages of the block the stream carried: every page of it, zero or not. */
  pages: number;
  /** Non-zero pages written to the memory file. */
  dataPages: number;
}

/**
 * splitRamStream reads the migration stream in `streamFile`, writes the pages of the RAM block
 * `blockBytes` long (the guest RAM backend) into `memoryFile` (created sparse, `blockBytes`
 * long; zero pages stay holes) and returns the rest of the stream as device state. It refuses a
 * stream it does not understand, and one that did not carry every page of the block.
 */
export async function splitRamStream(
  streamFile: string,
  blockBytes: number,
  memoryFile: string,
  ignoreShared = true,
  restoreIgnoreShared = ignoreShared,
): Promise<RamSplit> {
  // A stream taken without x-ignore-shared (a live capture of a shared-memory guest) restored
  // with it: the device state gets the capability in its configuration and each block's address.
  const addShared = restoreIgnoreShared && !ignoreShared;
  // Synchronous reads and writes: one record is a few bytes, and an await per record cost seconds.
  const fh = openSync(streamFile, "r");
  const mem = openSync(memoryFile, "w", 0o600);
  try {
    const size = fstatSync(fh).size;
    const r = new Reader(fh, size);
    const kept: Buffer[] = [];
    ftruncateSync(mem, blockBytes);
    if (r.u32() !== QEVM) throw bad("no QEVM magic");
    if (r.u32() !== 3) throw bad("stream version is not 3");
    // Everything read is copied to `kept` unless it is a record of the guest RAM block.
    const pending: Buffer[] = [];
    const take = (n: number) => {
      const b = r.bytes(n);
      pending.push(Buffer.from(b));
      return b;
    };
    const flushPending = () => {
      kept.push(...pending);
      pending.length = 0;
    };
    kept.push(Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]));
    let ramSection: number | undefined;
    let block: string | undefined;
    let pages = 0;
    let dataPages = 0;
    // A live capture sends pages again that the guest wrote meanwhile, zero or not: the last wins.
    const seen = new Uint8Array(blockBytes / PAGE);
    const hasData = new Uint8Array(blockBytes / PAGE);
    const zeroPage = Buffer.alloc(PAGE);
    let current: string | undefined; // the block of the last record, as QEMU's CONTINUE means it
    // Contiguous data pages of the block are written together.
    let run: { offset: number; bufs: Buffer[] } | undefined;
    const flushRun = () => {
      if (!run) return;
      const data = Buffer.concat(run.bufs);
      writeSync(mem, data, 0, data.length, run.offset);
      run = undefined;
    };
    const u32 = () => take(4).readUInt32BE(0);
    const str = () => {
      const n = take(1)[0];
      return take(n).toString("latin1");
    };
    // The RAM data of one section: records up to EOS (rfc: QEMU's ram_load_precopy).
    const ramRecords = () => {
      for (;;) {
        flushPending();
        const head = take(8).readBigUInt64BE(0);
        const flags = Number(head & BigInt(PAGE - 1));
        const addr = Number(head & ~BigInt(PAGE - 1));
        if (flags & FLAG.EOS) {
          if (flags !== FLAG.EOS) throw bad(`EOS record with flags 0x${flags.toString(16)}`);
          flushPending();
          return;
        }
        if (flags & ~(FLAG.ZERO | FLAG.PAGE | FLAG.CONTINUE))
          throw bad(`RAM record with flags 0x${flags.toString(16)} (compression, xbzrle: not expected)`);
        if (!(flags & FLAG.CONTINUE)) current = str();
        else if (current === undefined) throw bad("CONTINUE record before any block was named");
        const ours = current === block;
        if (ours && addr + PAGE > blockBytes) throw bad(`page at ${addr} lies past the block`);
        if (flags & FLAG.ZERO) {
          const fill = take(1)[0];
          if (ours && fill !== 0) throw bad(`zero page record with fill ${fill}`);
          if (ours && hasData[addr / PAGE]) {
            flushRun();
            writeSync(mem, zeroPage, 0, PAGE, addr);
            hasData[addr / PAGE] = 0;
          }
        } else if (flags & FLAG.PAGE) {
          const data = take(PAGE);
          if (ours) {
            if (!hasData[addr / PAGE]) dataPages++;
            hasData[addr / PAGE] = 1;
            if (run && run.offset + run.bufs.length * PAGE === addr && run.bufs.length < 512)
              run.bufs.push(Buffer.from(data));
            else {
              flushRun();
              run = { offset: addr, bufs: [Buffer.from(data)] };
            }
          }
        } else throw bad(`RAM record with flags 0x${flags.toString(16)} carries no page`);
        if (ours) {
          if (!seen[addr / PAGE]) pages++;
          seen[addr / PAGE] = 1;
          pending.length = 0; // the record is dropped: the restore maps this memory instead
          // A dropped record named the block; the next kept record of another block names its own.
        } else flushPending();
      }
    };
    let first = true;
    for (;;) {
      const t = r.peek();
      if (first && t === SECTION.CONFIG) {
        take(1);
        take(u32()); // the machine type's name
        while (r.peek() === SECTION.SUB) {
          take(1);
          const name = str();
          u32(); // version
          if (name !== "configuration/capabilities") throw bad(`unknown configuration subsection ${name}`);
          const n = u32();
          for (let i = 0; i < n; i++) str();
        }
        // QEMU sends the capabilities it checks (only x-ignore-shared in 7.2) when one is on.
        if (addShared) pending.push(capabilitiesSubsection(["x-ignore-shared"]));
        first = false;
        continue;
      }
      first = false;
      if (t === SECTION.START) {
        take(1);
        const id = u32();
        const name = str();
        take(8); // instance id, version id
        if (name !== "ram") throw bad(`iterative section ${name} is not supported`);
        ramSection = id;
        const total = take(8).readBigUInt64BE(0);
        if (!(Number(total & 0xfffn) & FLAG.MEM_SIZE)) throw bad("RAM setup without MEM_SIZE");
        let left = Number(total & ~0xfffn);
        while (left > 0) {
          const idstr = str();
          const len = Number(take(8).readBigUInt64BE(0));
          if (ignoreShared)
            take(8); // its guest-physical address (only with x-ignore-shared)
          // Checked on restore only for a block it skips (shared): a restore maps RAM private.
          else if (addShared) pending.push(Buffer.alloc(8));
          if (len === blockBytes && block === undefined) block = idstr;
          left -= len;
        }
        if (!block) throw bad(`no RAM block of ${blockBytes} bytes in the stream`);
        ramRecords();
      } else if (t === SECTION.PART || t === SECTION.END) {
        take(1);
        if (u32() !== ramSection) throw bad("a section part that is not RAM's");
        ramRecords();
      } else break;
      if (take(1)[0] !== FOOTER) throw bad(`no section footer at ${r.pos - 1}`);
      u32();
      flushPending();
    }
    flushPending();
    flushRun();
    if (!block) throw bad("the stream has no RAM section");
    if (pages !== blockBytes / PAGE)
      throw bad(`the stream carried ${pages} pages of ${block}, want ${blockBytes / PAGE}`);
    kept.push(readRest(fh, r.pos, size));
    return { deviceState: Buffer.concat(kept), block, pages, dataPages };
  } finally {
    closeSync(fh);
    closeSync(mem);
  }
}

/** capabilitiesSubsection is the `configuration/capabilities` subsection naming `caps`. */
function capabilitiesSubsection(caps: string[]): Buffer {
  const name = "configuration/capabilities";
  const head = Buffer.alloc(1 + 1 + name.length + 4 + 4);
  head[0] = SECTION.SUB;
  head[1] = name.length;
  head.write(name, 2, "latin1");
  head.writeUInt32BE(1, 2 + name.length); // version
  head.writeUInt32BE(caps.length, 6 + name.length);
  return Buffer.concat([
    head,
    ...caps.map((c) => Buffer.concat([Buffer.from([c.length]), Buffer.from(c, "latin1")])),
  ]);
}

function readRest(fd: number, from: number, size: number): Buffer {
  const b = Buffer.alloc(size - from);
  readSync(fd, b, 0, b.length, from);
  return b;
}
