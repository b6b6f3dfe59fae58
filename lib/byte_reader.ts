/**
 * A bounds-checked little-endian cursor over untrusted bytes. Every read checks
 * that the bytes exist first, and failures name the file.
 *
 * @module
 */

import { FileFormatError } from "./errors.ts";

/**
 * Thrown by a {@link ByteReader} over the start of a file when a read needs bytes past that start: read more of the
 * file (up to `end` at least) and parse again.
 */
export class BeyondHead extends FileFormatError {
  /**
   * @param file the path
   * @param end the offset the read needed bytes up to
   */
  constructor(file: string, readonly end: number) {
    super(file, `needs its bytes up to offset ${end}, past those read`);
  }
}

/**
 * Where a tensor's bytes go when a file is read tensor by tensor: memory of `length` bytes that will be filled from
 * `offset` of the file (by the caller, once the header is parsed).
 */
export type Placement = (offset: number, length: number) => Uint8Array;

/**
 * Reads little-endian numbers and strings from a byte array, never past its end. The array may hold just the start
 * of a file of `size` bytes (its header, when a model is only described, or read tensor by tensor): sizes are checked
 * against the whole file, reads past the start throw {@link BeyondHead}, and {@link ByteReader.at} gives data not
 * read as zeros, and all tensor data as the {@link Placement}'s memory when there is one.
 */
export class ByteReader {
  readonly bytes: Uint8Array;
  readonly file: string;
  /** The whole file's length; `bytes` holds its first `bytes.byteLength`. */
  readonly size: number;
  offset: number;
  #view: DataView;
  #zeros = new Uint8Array(0);
  readonly #place?: Placement;

  /**
   * @param bytes the untrusted data
   * @param file the path used in error messages
   * @param offset where to start reading
   * @param size the whole file's length, when `bytes` holds only its start
   * @param place where all tensor data goes (see {@link ByteReader.at}); default: views, zeros past `bytes`
   */
  constructor(bytes: Uint8Array, file: string, offset = 0, size: number = bytes.byteLength, place?: Placement) {
    this.bytes = bytes;
    this.file = file;
    this.offset = offset;
    this.size = Math.max(size, bytes.byteLength);
    this.#place = place;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Bytes of the file left after the cursor. */
  get remaining(): number {
    return this.size - this.offset;
  }

  /** Throws a {@link FileFormatError} naming the file. */
  fail(problem: string): never {
    throw new FileFormatError(this.file, problem);
  }

  /** Checks that `count` more bytes exist; `what` names them in the error. */
  need(count: number, what: string): void {
    if (!Number.isSafeInteger(count) || count < 0 || count > this.remaining) {
      this.fail(
        `file ends early: ${what} needs ${count} bytes at offset ${this.offset}, ${this.remaining} left`,
      );
    }
    if (this.offset + count > this.bytes.byteLength) throw new BeyondHead(this.file, this.offset + count);
  }

  /**
   * The file's `length` bytes at `offset` (which the caller has checked lie inside it): the placement's memory for
   * them when there is one; else a view when they were read, and past that zeros (shared by all such ranges, not to
   * be written).
   */
  at(offset: number, length: number): Uint8Array {
    if (!Number.isSafeInteger(offset + length) || offset < 0 || length < 0 || offset + length > this.size) {
      this.fail(`${length} bytes at offset ${offset} lie outside the file's ${this.size}`);
    }
    if (this.#place) return this.#place(offset, length);
    if (offset + length <= this.bytes.byteLength) return this.bytes.subarray(offset, offset + length);
    if (length > this.#zeros.length) this.#zeros = new Uint8Array(Math.max(length, 2 * this.#zeros.length));
    return this.#zeros.subarray(0, length);
  }

  u8(what = "byte"): number {
    this.need(1, what);
    return this.#view.getUint8(this.offset++);
  }

  i8(what = "int8"): number {
    this.need(1, what);
    return this.#view.getInt8(this.offset++);
  }

  u16(what = "uint16"): number {
    this.need(2, what);
    const v = this.#view.getUint16(this.offset, true);
    this.offset += 2;
    return v;
  }

  i16(what = "int16"): number {
    this.need(2, what);
    const v = this.#view.getInt16(this.offset, true);
    this.offset += 2;
    return v;
  }

  u32(what = "uint32"): number {
    this.need(4, what);
    const v = this.#view.getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }

  i32(what = "int32"): number {
    this.need(4, what);
    const v = this.#view.getInt32(this.offset, true);
    this.offset += 4;
    return v;
  }

  /** An unsigned 64-bit integer; values above 2^53 are refused (no real file needs them). */
  u64(what = "uint64"): number {
    this.need(8, what);
    const v = this.#view.getBigUint64(this.offset, true);
    this.offset += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} is too large (${v})`);
    return Number(v);
  }

  /** A signed 64-bit integer, refused outside ±2^53. */
  i64(what = "int64"): number {
    this.need(8, what);
    const v = this.#view.getBigInt64(this.offset, true);
    this.offset += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      this.fail(`${what} is out of range (${v})`);
    }
    return Number(v);
  }

  f32(what = "float32"): number {
    this.need(4, what);
    const v = this.#view.getFloat32(this.offset, true);
    this.offset += 4;
    return v;
  }

  f64(what = "float64"): number {
    this.need(8, what);
    const v = this.#view.getFloat64(this.offset, true);
    this.offset += 8;
    return v;
  }

  /** `length` raw bytes (a view, not a copy). */
  take(length: number, what = "bytes"): Uint8Array {
    this.need(length, what);
    const out = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  /** `length` bytes decoded as UTF-8 (invalid sequences become U+FFFD). */
  utf8(length: number, what = "string"): string {
    return textDecoder.decode(this.take(length, what));
  }
}

const textDecoder = new TextDecoder();
