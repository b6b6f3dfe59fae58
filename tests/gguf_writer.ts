/**
 * A small GGUF writer for tests: builds well-formed files from metadata and
 * tensors, with switches to write the malformed headers hostile-input tests need.
 */

import { GGML_TYPE_IDS, GgufValueType } from "../lib/gguf.ts";
import type { TensorType } from "../lib/tensor.ts";

/** A metadata value with its GGUF type. */
export type MetaValue =
  | { type: Exclude<(typeof GgufValueType)[keyof typeof GgufValueType], 8 | 9>; value: number | bigint | boolean }
  | { type: typeof GgufValueType.STRING; value: string }
  | { type: typeof GgufValueType.ARRAY; elementType: number; value: MetaValue[] };

/** A uint32 metadata value. */
export const u32 = (value: number): MetaValue => ({ type: GgufValueType.UINT32, value });
/** A float32 metadata value. */
export const f32 = (value: number): MetaValue => ({ type: GgufValueType.FLOAT32, value });
/** A string metadata value. */
export const str = (value: string): MetaValue => ({ type: GgufValueType.STRING, value });
/** A bool metadata value. */
export const bool = (value: boolean): MetaValue => ({ type: GgufValueType.BOOL, value });
/** An array of values of one type (`values` must all have that type). */
export const arr = (elementType: number, value: MetaValue[]): MetaValue => ({
  type: GgufValueType.ARRAY,
  elementType,
  value,
});
/** An array of strings. */
export const strings = (values: string[]): MetaValue => arr(GgufValueType.STRING, values.map(str));
/** An array of float32. */
export const floats = (values: ArrayLike<number>): MetaValue => arr(GgufValueType.FLOAT32, Array.from(values, f32));
/** An array of int32. */
export const ints = (values: ArrayLike<number>): MetaValue =>
  arr(GgufValueType.INT32, Array.from(values, (value) => ({ type: GgufValueType.INT32, value })));

/** One tensor to write. */
export interface TensorSpec {
  name: string;
  /** An encoding name, or a raw ggml type id (for unknown or unsupported types). */
  type: TensorType | number;
  /** GGUF order: `shape[0]` is the row length. */
  shape: number[];
  /**
   * The tensor's bytes, or just their count: a file with any such tensor ends where its data section starts, for a
   * test to extend it (sparsely) to its full size.
   */
  data: Uint8Array | number;
  /** Overrides the offset written for this tensor (relative to the data section). */
  offset?: number | bigint;
}

/** Switches for writing malformed files. */
export interface WriteOptions {
  version?: number;
  /** Written as `general.alignment` (uint32) when given; also used to lay out the data. */
  alignment?: number;
  /** Overrides the tensor count in the header. */
  tensorCount?: bigint;
  /** Overrides the metadata count in the header. */
  kvCount?: bigint;
}

/** Appends little-endian values to a growing byte array. */
class Bytes {
  #buffer = new Uint8Array(1024);
  #view = new DataView(this.#buffer.buffer);
  length = 0;

  #reserve(count: number): void {
    if (this.length + count <= this.#buffer.length) return;
    let size = this.#buffer.length * 2;
    while (size < this.length + count) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buffer.subarray(0, this.length));
    this.#buffer = next;
    this.#view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.#reserve(1);
    this.#view.setUint8(this.length++, v);
  }
  u16(v: number): void {
    this.#reserve(2);
    this.#view.setUint16(this.length, v, true);
    this.length += 2;
  }
  u32(v: number): void {
    this.#reserve(4);
    this.#view.setUint32(this.length, v >>> 0, true);
    this.length += 4;
  }
  u64(v: number | bigint): void {
    this.#reserve(8);
    this.#view.setBigUint64(this.length, BigInt.asUintN(64, BigInt(v)), true);
    this.length += 8;
  }
  f32(v: number): void {
    this.#reserve(4);
    this.#view.setFloat32(this.length, v, true);
    this.length += 4;
  }
  f64(v: number): void {
    this.#reserve(8);
    this.#view.setFloat64(this.length, v, true);
    this.length += 8;
  }
  raw(bytes: Uint8Array): void {
    this.#reserve(bytes.length);
    this.#buffer.set(bytes, this.length);
    this.length += bytes.length;
  }
  string(s: string): void {
    const encoded = new TextEncoder().encode(s);
    this.u64(encoded.length);
    this.raw(encoded);
  }
  pad(alignment: number): void {
    while (this.length % alignment !== 0) this.u8(0);
  }
  done(): Uint8Array {
    return this.#buffer.slice(0, this.length);
  }
}

function writeValue(out: Bytes, v: MetaValue): void {
  switch (v.type) {
    case GgufValueType.UINT8:
    case GgufValueType.INT8:
      return out.u8(Number(v.value) & 0xff);
    case GgufValueType.UINT16:
    case GgufValueType.INT16:
      return out.u16(Number(v.value) & 0xffff);
    case GgufValueType.UINT32:
    case GgufValueType.INT32:
      return out.u32(Number(v.value));
    case GgufValueType.FLOAT32:
      return out.f32(Number(v.value));
    case GgufValueType.BOOL:
      return out.u8(v.value ? 1 : 0);
    case GgufValueType.STRING:
      return out.string(v.value);
    case GgufValueType.ARRAY:
      out.u32(v.elementType);
      out.u64(v.value.length);
      for (const element of v.value) writeValue(out, element);
      return;
    case GgufValueType.UINT64:
    case GgufValueType.INT64:
      return out.u64(typeof v.value === "boolean" ? Number(v.value) : v.value);
    case GgufValueType.FLOAT64:
      return out.f64(Number(v.value));
  }
}

/** Encodes a GGUF file. Tensors are laid out in order, each at the next aligned offset. */
export function writeGguf(
  metadata: [string, MetaValue][],
  tensors: TensorSpec[] = [],
  options: WriteOptions = {},
): Uint8Array {
  const alignment = options.alignment ?? 32;
  const kvs: [string, MetaValue][] = options.alignment === undefined
    ? metadata
    : [...metadata, ["general.alignment", u32(alignment)]];
  const out = new Bytes();
  out.raw(new TextEncoder().encode("GGUF"));
  out.u32(options.version ?? 3);
  out.u64(options.tensorCount ?? BigInt(tensors.length));
  out.u64(options.kvCount ?? BigInt(kvs.length));
  for (const [key, value] of kvs) {
    out.string(key);
    out.u32(value.type);
    writeValue(out, value);
  }
  let next = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    offsets.push(next);
    next = Math.ceil((next + (typeof t.data === "number" ? t.data : t.data.length)) / alignment) * alignment;
  }
  tensors.forEach((t, i) => {
    out.string(t.name);
    out.u32(t.shape.length);
    for (const d of t.shape) out.u64(d);
    out.u32(typeof t.type === "number" ? t.type : GGML_TYPE_IDS[t.type]);
    out.u64(t.offset ?? offsets[i]);
  });
  if (tensors.length > 0) out.pad(alignment);
  if (tensors.some((t) => typeof t.data === "number")) return out.done();
  const dataStart = out.length;
  tensors.forEach((t, i) => {
    while (out.length < dataStart + offsets[i]) out.u8(0);
    out.raw(t.data as Uint8Array);
  });
  return out.done();
}

/** Copies `bytes` into memory aligned like `readFileBytes` output (8-byte aligned start). */
export function aligned(bytes: Uint8Array): Uint8Array {
  const copy = new Uint8Array(new ArrayBuffer(bytes.length));
  copy.set(bytes);
  return copy;
}
