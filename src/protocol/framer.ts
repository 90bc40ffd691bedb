/**
 * Byte-level framing of the client protocol: splits a connection's byte
 * stream into requests — plain/JSON lines and RESP2 arrays — binary safe and
 * with bounded memory.
 *
 * Why not split2: split2 always decodes UTF-8 (that would corrupt binary RESP
 * bulk values) and its `maxLength` either destroys the stream or skips the
 * line silently, while the contract needs an in-order `ERR TOO_LARGE` reply
 * and a connection that stays usable.
 *
 * The framer is a state machine fed with chunks; one byte at a time gives the
 * same frames as one big chunk. It never holds more than `maxLine + 1` bytes
 * of request data (asserted after every {@linkcode Framer.push}).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Dialect } from "./types.ts";

/** Default limit of one line or one RESP array's bulk bytes: 1 MiB (`--max-line`). */
export const DEFAULT_MAX_LINE = 1_048_576;

/** Most arguments one RESP array may carry; a larger array is skipped and answered TOO_LARGE. */
export const MAX_RESP_ARGS = 1024;

/**
 * Most bytes of one RESP header (`*<n>` or `$<len>`, after the marker, up to
 * and including its "\r"). Real headers are at most 19 bytes; longer is garbage.
 */
export const MAX_RESP_HEADER_BYTES = 32;

/** Options for {@linkcode Framer}. */
export interface FramerOptions {
  /** Max bytes of one line or one RESP array (all its bulk strings). Default 1 MiB (1_048_576). */
  maxLine?: number;
}

/** One request as cut out of the byte stream; buffers in it are the framer's own copies. */
export type Frame =
  /** One non-empty line, without "\n" and without one trailing "\r". */
  | { kind: "line"; bytes: Buffer }
  /** One RESP2 array of bulk strings (e.g. `*2\r\n$3\r\nGET\r\n$1\r\na\r\n`). */
  | { kind: "resp"; args: Buffer[] }
  /** A line / RESP array past maxLine: its bytes were discarded up to its end. */
  | { kind: "too_large"; dialect: Dialect }
  /** Malformed RESP: reply an error; the framer resynchronises at the next "\n". */
  | { kind: "resp_error"; message: string };

const LF = 0x0a;
const CR = 0x0d;
const STAR = 0x2a;
const DOLLAR = 0x24;
const MINUS = 0x2d;
const BRACE = 0x7b;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
/** Digits beyond this cannot be a sane length (2^53 has 16 digits). */
const MAX_HEADER_DIGITS = 16;

/** Where the framer is in the byte stream. */
type State =
  /** Between requests: the next byte picks the dialect. */
  | "start"
  /** Inside a plain or JSON line. */
  | "line"
  /** Throwing bytes away through the next "\n" (after TOO_LARGE or a RESP error). */
  | "discard"
  /** After "*": reading the array's element count. */
  | "array_header"
  /** Expecting the "$" of the next bulk string. */
  | "bulk_prefix"
  /** After "$": reading the bulk string's length. */
  | "bulk_header"
  /** Reading (or skipping) the bulk string's bytes. */
  | "bulk_body"
  /** Expecting the "\r" after a bulk string. */
  | "bulk_cr"
  /** Expecting the "\n" after a bulk string. */
  | "bulk_lf";

/**
 * Splits a byte stream into {@linkcode Frame}s. Frames come out in stream
 * order, so replies made from them stay in request order.
 *
 * Limits: a line longer than `maxLine` gives exactly one `too_large` frame
 * (as soon as the limit is crossed) and the rest of it is discarded; a RESP
 * array with more than {@linkcode MAX_RESP_ARGS} elements, or whose bulk
 * strings total more than `maxLine` bytes, is skipped exactly as declared
 * and gives one `too_large` frame at its end, keeping the stream in sync.
 */
export class Framer {
  #maxLine: number;
  #state: State = "start";
  /** Bytes of request data currently held (a partial line, or a RESP array's args and partial bulk). */
  #held = 0;

  // Current line (when it spans chunks).
  readonly #line = new Collector();
  #lineDialect: Dialect = "line";

  // Current RESP header being read (array count or bulk length).
  #headerBytes = 0;
  #headerDigits = 0;
  #headerValue = 0;
  #headerNegative = false;
  #headerCr = false;
  #headerBad = false;

  // Current RESP array.
  #expected = 0;
  #seen = 0;
  #args: Buffer[] = [];
  /** Declared bulk bytes of the array so far (may pass maxLine when skipping). */
  #declared = 0;
  #skipping = false;

  // Current bulk string.
  #remaining = 0;
  /** The bulk string's bytes when it spans chunks. */
  readonly #bulk = new Collector();

  /** Creates a framer; one per connection. */
  constructor(options: FramerOptions = {}) {
    const maxLine = options.maxLine ?? DEFAULT_MAX_LINE;
    assert(Number.isSafeInteger(maxLine) && maxLine >= 1, `maxLine must be a positive integer, got ${maxLine}`);
    this.#maxLine = maxLine;
  }

  /**
   * Raises the limit for the rest of the stream (an authenticated peer sends
   * replication batches and snapshot chunks far larger than a client's line).
   * Never lowers it: what is already held stays within bounds.
   */
  raiseMaxLine(maxLine: number): void {
    assert(Number.isSafeInteger(maxLine) && maxLine >= 1, `maxLine must be a positive integer, got ${maxLine}`);
    if (maxLine > this.#maxLine) this.#maxLine = maxLine;
  }

  /** Bytes of request data currently held: at most `maxLine + 1`. */
  get buffered(): number {
    return this.#held;
  }

  /**
   * Feeds the next chunk of the stream and returns the frames it completed,
   * in order. The framer copies what it keeps, so `chunk` may be reused
   * afterwards; buffers in returned frames are the frames' own.
   */
  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let i = 0;
    while (i < chunk.length) {
      switch (this.#state) {
        case "start": {
          const b = chunk[i];
          if (b === LF) {
            i++; // An empty line: no frame.
          } else if (b === STAR) {
            i++;
            this.#beginHeader();
            this.#state = "array_header";
          } else {
            // Not consumed: the line state takes it as the line's first byte.
            this.#lineDialect = b === BRACE ? "json" : "line";
            this.#state = "line";
          }
          break;
        }
        case "line":
          i = this.#readLine(chunk, i, frames);
          break;
        case "discard": {
          const nl = chunk.indexOf(LF, i);
          if (nl === -1) {
            i = chunk.length;
          } else {
            i = nl + 1;
            this.#state = "start";
          }
          break;
        }
        case "array_header":
        case "bulk_header":
          i = this.#readHeader(chunk, i, frames);
          break;
        case "bulk_prefix":
          if (chunk[i] === DOLLAR) {
            i++;
            this.#beginHeader();
            this.#state = "bulk_header";
          } else {
            // Not consumed: if it is the "\n" itself, discarding through it resyncs.
            this.#respError(frames, `Protocol error: expected '$', got ${describeByte(chunk[i])}`);
          }
          break;
        case "bulk_body":
          i = this.#readBulk(chunk, i);
          break;
        case "bulk_cr":
          if (chunk[i] === CR) {
            i++;
            this.#state = "bulk_lf";
          } else {
            this.#respError(frames, "Protocol error: expected \\r\\n after a bulk string");
          }
          break;
        case "bulk_lf":
          if (chunk[i] === LF) {
            i++;
            this.#endElement(frames);
          } else {
            this.#respError(frames, "Protocol error: expected \\r\\n after a bulk string");
          }
          break;
        default: {
          const never: never = this.#state;
          assert.fail(`unknown framer state ${never}`);
        }
      }
    }
    assert(this.#held <= this.#maxLine + 1, `framer holds ${this.#held} bytes, past maxLine ${this.#maxLine} + 1`);
    return frames;
  }

  /** Reads line bytes from `i`; returns where it stopped. */
  #readLine(chunk: Buffer, i: number, frames: Frame[]): number {
    // "+ 1": a trailing "\r", dropped later, does not count against the limit.
    const limit = this.#maxLine + 1;
    const nl = chunk.indexOf(LF, i);
    if (nl !== -1 && this.#line.length === 0 && nl - i <= limit) {
      // The hot path: the whole line is in this chunk. Copy it straight out.
      const end = nl > i && chunk[nl - 1] === CR ? nl - 1 : nl;
      if (end - i > this.#maxLine) {
        frames.push({ kind: "too_large", dialect: this.#lineDialect });
      } else if (end > i) {
        frames.push({ kind: "line", bytes: copyOut(chunk, i, end) });
      }
      this.#state = "start";
      return nl + 1;
    }
    const piece = chunk.subarray(i, nl === -1 ? chunk.length : nl);
    if (this.#line.length + piece.length > limit) {
      // Too large: say so now, once, and drop the rest of the line.
      frames.push({ kind: "too_large", dialect: this.#lineDialect });
      this.#held -= this.#line.length;
      this.#line.reset();
      this.#state = nl === -1 ? "discard" : "start";
      return nl === -1 ? chunk.length : nl + 1;
    }
    if (nl === -1) {
      this.#line.append(piece, limit);
      this.#held += piece.length;
      return chunk.length;
    }

    // The line spanned chunks: finish it in the collector (its own copy).
    this.#held -= this.#line.length;
    this.#line.append(piece, limit);
    const line = this.#line.take();
    assert(this.#held === 0);
    let length = line.length;
    if (length > 0 && line[length - 1] === CR) length--;
    if (length > this.#maxLine) {
      frames.push({ kind: "too_large", dialect: this.#lineDialect });
    } else if (length > 0) {
      frames.push({ kind: "line", bytes: line.subarray(0, length) });
    }
    this.#state = "start";
    return nl + 1;
  }

  #beginHeader(): void {
    this.#headerBytes = 0;
    this.#headerDigits = 0;
    this.#headerValue = 0;
    this.#headerNegative = false;
    this.#headerCr = false;
    this.#headerBad = false;
  }

  /** Reads a RESP header (`<n>\r\n` after "*" or "$") byte by byte; returns where it stopped. */
  #readHeader(chunk: Buffer, i: number, frames: Frame[]): number {
    while (i < chunk.length) {
      const b = chunk[i++];
      if (b === LF) {
        this.#endHeader(frames);
        return i;
      }
      this.#headerBytes++;
      if (this.#headerBytes > MAX_RESP_HEADER_BYTES) {
        const what = this.#state === "array_header" ? "multibulk" : "bulk";
        this.#respError(frames, `Protocol error: invalid ${what} length`);
        return i;
      }
      if (this.#headerCr) {
        this.#headerBad = true; // "\r" must come right before "\n".
      } else if (b === CR) {
        this.#headerCr = true;
      } else if (b >= DIGIT_0 && b <= DIGIT_9) {
        this.#headerDigits++;
        if (this.#headerDigits <= MAX_HEADER_DIGITS) this.#headerValue = this.#headerValue * 10 + (b - DIGIT_0);
      } else if (b === MINUS && this.#headerBytes === 1) {
        this.#headerNegative = true;
      } else {
        this.#headerBad = true;
      }
    }
    return i;
  }

  /** A header's "\n" arrived: act on the count or length. */
  #endHeader(frames: Frame[]): void {
    const wellFormed = !this.#headerBad && this.#headerCr && this.#headerDigits >= 1 &&
      this.#headerDigits <= MAX_HEADER_DIGITS;
    const value = this.#headerValue;
    if (this.#state === "array_header") {
      if (!wellFormed || (this.#headerNegative && value !== 1)) {
        this.#respError(frames, "Protocol error: invalid multibulk length", { resynced: true });
      } else if (this.#headerNegative || value === 0) {
        this.#state = "start"; // `*-1` and `*0`: Redis ignores them, no reply.
      } else {
        this.#expected = value;
        this.#seen = 0;
        this.#args = [];
        this.#declared = 0;
        this.#skipping = value > MAX_RESP_ARGS;
        this.#state = "bulk_prefix";
      }
      return;
    }

    assert(this.#state === "bulk_header");
    if (!wellFormed) {
      this.#respError(frames, "Protocol error: invalid bulk length", { resynced: true });
      return;
    }
    if (this.#headerNegative) {
      this.#respError(frames, "Protocol error: a request may not hold a null bulk string", { resynced: true });
      return;
    }
    this.#declared += value;
    if (!this.#skipping && (value > this.#maxLine || this.#declared > this.#maxLine)) {
      // Well formed but too large: skip exactly the declared bytes, answer at the end.
      this.#skipping = true;
      this.#dropArgs();
    }
    this.#remaining = value;
    if (value > 0) {
      this.#state = "bulk_body";
    } else {
      if (!this.#skipping) this.#args.push(Buffer.alloc(0));
      this.#state = "bulk_cr";
    }
  }

  /** Reads (or skips) bulk bytes from `i`; returns where it stopped. */
  #readBulk(chunk: Buffer, i: number): number {
    const take = Math.min(this.#remaining, chunk.length - i);
    assert(take > 0);
    this.#remaining -= take;
    if (!this.#skipping) {
      this.#held += take;
      if (this.#remaining === 0 && this.#bulk.length === 0) {
        // The hot path: the whole bulk string is in this chunk. Copy it straight out.
        this.#args.push(copyOut(chunk, i, i + take));
      } else {
        this.#bulk.append(chunk.subarray(i, i + take), this.#bulk.length + take + this.#remaining);
        if (this.#remaining === 0) this.#args.push(this.#bulk.take());
      }
    }
    if (this.#remaining === 0) this.#state = "bulk_cr";
    return i + take;
  }

  /** A bulk string and its "\r\n" are complete. */
  #endElement(frames: Frame[]): void {
    this.#seen++;
    if (this.#seen < this.#expected) {
      this.#state = "bulk_prefix";
      return;
    }
    assert(this.#seen === this.#expected);
    if (this.#skipping) {
      frames.push({ kind: "too_large", dialect: "resp" });
    } else {
      assert(this.#args.length === this.#expected);
      frames.push({ kind: "resp", args: this.#args });
    }
    this.#args = [];
    this.#held = 0;
    this.#skipping = false;
    this.#state = "start";
  }

  #dropArgs(): void {
    this.#args = [];
    this.#bulk.reset();
    this.#held = 0;
  }

  /**
   * Malformed RESP: one `resp_error` frame, forget the array, and discard
   * through the next "\n" unless the "\n" that ended a header was just read.
   */
  #respError(frames: Frame[], message: string, options: { resynced?: boolean } = {}): void {
    frames.push({ kind: "resp_error", message });
    this.#dropArgs();
    this.#skipping = false;
    this.#state = options.resynced ? "start" : "discard";
  }
}

/** Below this many bytes a JS loop copies faster than `Buffer.copy` (which validates its arguments). */
const SHORT_COPY_BYTES = 64;

/**
 * A fresh copy of `source[start, end)`. Frames outlive their chunk (a value
 * may be stored for good), so they must not be views that pin it.
 */
function copyOut(source: Buffer, start: number, end: number): Buffer {
  const length = end - start;
  const out = Buffer.allocUnsafe(length);
  if (length <= SHORT_COPY_BYTES) {
    for (let k = 0; k < length; k++) out[k] = source[start + k];
  } else {
    source.copy(out, 0, start, end);
  }
  return out;
}

/** A byte for an error message: printable ASCII as itself, else as \xHH. */
function describeByte(b: number): string {
  if (b > 0x20 && b < 0x7f) return `'${String.fromCharCode(b)}'`;
  return `'\\x${b.toString(16).padStart(2, "0")}'`;
}

const NO_BYTES = Buffer.alloc(0);

/** Smallest buffer a {@linkcode Collector} allocates. */
const MIN_COLLECTOR_BYTES = 256;

/**
 * Gathers the bytes of one line or bulk string that spans chunks into one
 * buffer that doubles as needed: O(n) copying in total however small the
 * chunks, and no per-chunk objects held (one byte per chunk would otherwise
 * cost a Buffer object per byte).
 */
class Collector {
  #buffer: Buffer = NO_BYTES;
  #length = 0;

  /** Bytes collected so far. */
  get length(): number {
    return this.#length;
  }

  /** Appends `piece`; `limit` is the most the whole will ever hold, to cap growth. */
  append(piece: Buffer, limit: number): void {
    const needed = this.#length + piece.length;
    assert(needed <= limit, `collector would hold ${needed} bytes, past its limit ${limit}`);
    if (needed > this.#buffer.length) {
      const capacity = Math.min(limit, Math.max(needed, this.#buffer.length * 2, MIN_COLLECTOR_BYTES));
      const grown = Buffer.allocUnsafe(capacity);
      this.#buffer.copy(grown, 0, 0, this.#length);
      this.#buffer = grown;
    }
    piece.copy(this.#buffer, this.#length);
    this.#length = needed;
  }

  /** Returns the collected bytes (owned by the caller, exactly sized) and empties the collector. */
  take(): Buffer {
    const whole = this.#buffer.length === this.#length
      ? this.#buffer
      : Buffer.from(this.#buffer.subarray(0, this.#length)); // Do not pin the spare capacity.
    this.reset();
    return whole;
  }

  /** Forgets the collected bytes. */
  reset(): void {
    this.#buffer = NO_BYTES;
    this.#length = 0;
  }
}
