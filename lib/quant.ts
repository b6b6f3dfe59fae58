/**
 * Reading rows of weight matrices in every supported encoding: dequantize a row
 * to floats, or take its dot product with a float vector block by block.
 *
 * @module
 */

import type { Matrix } from "./tensor.ts";
import { rowBytes } from "./tensor.ts";

/** Converts an IEEE half-precision bit pattern to a number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

const bf16Scratch = new Uint32Array(1);
const bf16Float = new Float32Array(bf16Scratch.buffer);

/** Converts a bfloat16 bit pattern to a number. */
export function bf16ToFloat(h: number): number {
  bf16Scratch[0] = h << 16;
  return bf16Float[0];
}

/** Writes row `row` of `w` as `w.cols` floats into `out` starting at `outOffset`. */
export function dequantizeRow(w: Matrix, row: number, out: Float32Array, outOffset = 0): void {
  const n = w.cols;
  const start = w.data.byteOffset + row * rowBytes(w.type, n);
  switch (w.type) {
    case "F32":
      out.set(new Float32Array(w.data.buffer, start, n), outOffset);
      return;
    case "F16": {
      const h = new Uint16Array(w.data.buffer, start, n);
      for (let i = 0; i < n; i++) out[outOffset + i] = halfToFloat(h[i]);
      return;
    }
    case "BF16": {
      const h = new Uint16Array(w.data.buffer, start, n);
      for (let i = 0; i < n; i++) out[outOffset + i] = bf16ToFloat(h[i]);
      return;
    }
    default:
      throw new RangeError(`dequantizing ${w.type} is not implemented`);
  }
}

/** Dot product of row `row` of `w` with `x[xOffset .. xOffset + w.cols)`. */
export function dotRow(w: Matrix, row: number, x: Float32Array, xOffset: number): number {
  const n = w.cols;
  const start = w.data.byteOffset + row * rowBytes(w.type, n);
  switch (w.type) {
    case "F32": {
      const a = new Float32Array(w.data.buffer, start, n);
      let sum = 0;
      for (let i = 0; i < n; i++) sum += a[i] * x[xOffset + i];
      return sum;
    }
    case "F16": {
      const h = new Uint16Array(w.data.buffer, start, n);
      let sum = 0;
      for (let i = 0; i < n; i++) sum += halfToFloat(h[i]) * x[xOffset + i];
      return sum;
    }
    case "BF16": {
      const h = new Uint16Array(w.data.buffer, start, n);
      let sum = 0;
      for (let i = 0; i < n; i++) sum += bf16ToFloat(h[i]) * x[xOffset + i];
      return sum;
    }
    default:
      throw new RangeError(`${w.type} products are not implemented`);
  }
}
