/**
 * Reading rows of weight matrices in every supported encoding: dequantize a row
 * to floats, or take its dot product with a float vector block by block.
 *
 * Block layouts follow llama.cpp (`ggml-common.h`, `dequantize_row_*` in
 * `ggml-quants.c`). Dequantized values are bit-identical to llama.cpp's float32
 * results: every intermediate that llama.cpp keeps in a float is rounded with
 * `Math.fround` here (a double-precision operation on two float32 values
 * followed by one rounding gives the float32 result exactly), and writing into
 * a Float32Array performs the final rounding.
 *
 * @module
 */

import type { Matrix } from "./tensor.ts";
import { rowBytes } from "./tensor.ts";

const fround = Math.fround;

/** Converts an IEEE half-precision bit pattern to a number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Every half-precision value, indexed by its bit pattern: a lookup is much faster than decoding. */
const HALF: Float32Array = (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = halfToFloat(h);
  return table;
})();

let BF16: Float32Array | undefined;

/** Every bfloat16 value by bit pattern, built on first use. */
export function bf16Table(): Float32Array {
  if (BF16 === undefined) BF16 = new Float32Array(Uint32Array.from({ length: 65536 }, (_, h) => h << 16).buffer);
  return BF16;
}

/** A Uint16Array over each whole buffer, made once, so rows are read without allocating a view per call. */
const u16Views = new WeakMap<ArrayBufferLike, Uint16Array>();

function u16View(b: Uint8Array): Uint16Array {
  let view = u16Views.get(b.buffer);
  if (view === undefined) {
    view = new Uint16Array(b.buffer, 0, b.buffer.byteLength >> 1);
    u16Views.set(b.buffer, view);
  }
  return view;
}

/** An Int8Array over each whole buffer, made once: signed quants are read without sign-extending by hand. */
const i8Views = new WeakMap<ArrayBufferLike, Int8Array>();

function i8View(b: Uint8Array): Int8Array {
  let view = i8Views.get(b.buffer);
  if (view === undefined) {
    view = new Int8Array(b.buffer);
    i8Views.set(b.buffer, view);
  }
  return view;
}

const bf16Scratch = new Uint32Array(1);
const bf16Float = new Float32Array(bf16Scratch.buffer);

/** Converts a bfloat16 bit pattern to a number. */
export function bf16ToFloat(h: number): number {
  bf16Scratch[0] = h << 16;
  return bf16Float[0];
}

/**
 * The bfloat16 bits nearest to `value` (round to nearest even: the float32's top half, plus one when the dropped
 * half is above 0x8000 or at it with the kept half odd; past the largest finite value, infinity). A NaN keeps its
 * top half, made quiet.
 */
export function floatToBf16(value: number): number {
  bf16Float[0] = value;
  const bits = bf16Scratch[0];
  if (value !== value) return (bits >>> 16) | 0x40;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The half-precision number stored little-endian at `b[p]`. */
function f16At(b: Uint8Array, p: number): number {
  return HALF[b[p] | (b[p + 1] << 8)];
}

/** The signed byte at `b[p]`. */
function i8At(b: Uint8Array, p: number): number {
  return (b[p] << 24) >> 24;
}

/**
 * The 6-bit scale and min of sub-block `j` (0..7) of a Q4_K/Q5_K block whose
 * 12 packed scale bytes start at `b[p]` (llama.cpp's `get_scale_min_k4`).
 * Returns `scale | min << 8` so no object is allocated.
 */
function scaleMinK4(j: number, b: Uint8Array, p: number): number {
  if (j < 4) return (b[p + j] & 63) | ((b[p + j + 4] & 63) << 8);
  const scale = (b[p + j + 4] & 0xf) | ((b[p + j - 4] >> 6) << 4);
  const min = (b[p + j + 4] >> 4) | ((b[p + j] >> 6) << 4);
  return scale | (min << 8);
}

/** The 6-bit scale (0..63, before subtracting 32) of sub-block `i` (0..15) of a Q3_K block's 12 bytes at `b[p]`. */
function scaleK3(i: number, b: Uint8Array, p: number): number {
  const low = i < 8 ? b[p + i] & 0xf : b[p + i - 8] >> 4;
  const high = (b[p + 8 + (i & 3)] >> (2 * (i >> 2))) & 3;
  return low | (high << 4);
}

/** Writes row `row` of `w` as `w.cols` floats into `out` starting at `outOffset`. */
export function dequantizeRow(w: Matrix, row: number, out: Float32Array, outOffset = 0): void {
  const n = w.cols;
  const b = w.data;
  const start = row * rowBytes(w.type, n);
  switch (w.type) {
    case "F32":
      out.set(new Float32Array(b.buffer, b.byteOffset + start, n), outOffset);
      return;
    case "F16":
      for (let i = 0; i < n; i++) out[outOffset + i] = f16At(b, start + 2 * i);
      return;
    case "BF16":
      for (let i = 0; i < n; i++) out[outOffset + i] = bf16ToFloat(b[start + 2 * i] | (b[start + 2 * i + 1] << 8));
      return;
    case "Q4_0":
      for (let blk = 0; blk < n / 32; blk++) {
        const p = start + blk * 18, y = outOffset + blk * 32;
        const d = f16At(b, p);
        for (let j = 0; j < 16; j++) {
          const q = b[p + 2 + j];
          out[y + j] = d * ((q & 0xf) - 8);
          out[y + j + 16] = d * ((q >> 4) - 8);
        }
      }
      return;
    case "Q4_1":
      for (let blk = 0; blk < n / 32; blk++) {
        const p = start + blk * 20, y = outOffset + blk * 32;
        const d = f16At(b, p), m = f16At(b, p + 2);
        for (let j = 0; j < 16; j++) {
          const q = b[p + 4 + j];
          out[y + j] = fround(d * (q & 0xf)) + m;
          out[y + j + 16] = fround(d * (q >> 4)) + m;
        }
      }
      return;
    case "Q5_0":
      for (let blk = 0; blk < n / 32; blk++) {
        const p = start + blk * 22, y = outOffset + blk * 32;
        const d = f16At(b, p);
        const qh = b[p + 2] | (b[p + 3] << 8) | (b[p + 4] << 16) | (b[p + 5] << 24);
        for (let j = 0; j < 16; j++) {
          const q = b[p + 6 + j];
          out[y + j] = d * (((q & 0xf) | (((qh >>> j) & 1) << 4)) - 16);
          out[y + j + 16] = d * (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16);
        }
      }
      return;
    case "Q5_1":
      for (let blk = 0; blk < n / 32; blk++) {
        const p = start + blk * 24, y = outOffset + blk * 32;
        const d = f16At(b, p), m = f16At(b, p + 2);
        const qh = b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | (b[p + 7] << 24);
        for (let j = 0; j < 16; j++) {
          const q = b[p + 8 + j];
          out[y + j] = fround(d * ((q & 0xf) | (((qh >>> j) & 1) << 4))) + m;
          out[y + j + 16] = fround(d * ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4))) + m;
        }
      }
      return;
    case "Q8_0":
      for (let blk = 0; blk < n / 32; blk++) {
        const p = start + blk * 34, y = outOffset + blk * 32;
        const d = f16At(b, p);
        for (let j = 0; j < 32; j++) out[y + j] = i8At(b, p + 2 + j) * d;
      }
      return;
    case "Q2_K":
      for (let blk = 0; blk < n / 256; blk++) {
        const p = start + blk * 84, y = outOffset + blk * 256;
        const d = f16At(b, p + 80), dmin = f16At(b, p + 82);
        for (let e = 0; e < 256; e++) {
          // Element e: half h, 2-bit plane j, byte l of that half's 32 quant bytes.
          const h = e >> 7, j = (e >> 5) & 3, l = e & 31;
          const sc = b[p + (e >> 4)];
          const dl = fround(d * (sc & 0xf)), ml = fround(dmin * (sc >> 4));
          out[y + e] = fround(dl * ((b[p + 16 + 32 * h + l] >> (2 * j)) & 3)) - ml;
        }
      }
      return;
    case "Q3_K":
      for (let blk = 0; blk < n / 256; blk++) {
        const p = start + blk * 110, y = outOffset + blk * 256;
        const d = f16At(b, p + 108);
        for (let e = 0; e < 256; e++) {
          const h = e >> 7, j = (e >> 5) & 3, l = e & 31;
          const dl = fround(d * (scaleK3(e >> 4, b, p + 96) - 32));
          const low = (b[p + 32 + 32 * h + l] >> (2 * j)) & 3;
          const high = (b[p + l] >> (4 * h + j)) & 1;
          out[y + e] = dl * (low - (high ? 0 : 4));
        }
      }
      return;
    case "Q4_K":
      for (let blk = 0; blk < n / 256; blk++) {
        const p = start + blk * 144, y = outOffset + blk * 256;
        const d = f16At(b, p), dmin = f16At(b, p + 2);
        for (let sub = 0; sub < 8; sub++) {
          const sm = scaleMinK4(sub, b, p + 4);
          const d1 = fround(d * (sm & 0xff)), m1 = fround(dmin * (sm >> 8));
          // Sub-blocks 2k and 2k+1 share 32 bytes: low nibbles, then high nibbles.
          const q = p + 16 + 32 * (sub >> 1), shift = 4 * (sub & 1);
          for (let l = 0; l < 32; l++) out[y + 32 * sub + l] = fround(d1 * ((b[q + l] >> shift) & 0xf)) - m1;
        }
      }
      return;
    case "Q5_K":
      for (let blk = 0; blk < n / 256; blk++) {
        const p = start + blk * 176, y = outOffset + blk * 256;
        const d = f16At(b, p), dmin = f16At(b, p + 2);
        for (let sub = 0; sub < 8; sub++) {
          const sm = scaleMinK4(sub, b, p + 4);
          const d1 = fround(d * (sm & 0xff)), m1 = fround(dmin * (sm >> 8));
          const q = p + 48 + 32 * (sub >> 1), shift = 4 * (sub & 1);
          for (let l = 0; l < 32; l++) {
            const v = ((b[q + l] >> shift) & 0xf) | (((b[p + 16 + l] >> sub) & 1) << 4);
            out[y + 32 * sub + l] = fround(d1 * v) - m1;
          }
        }
      }
      return;
    case "Q6_K":
      for (let blk = 0; blk < n / 256; blk++) {
        const p = start + blk * 210, y = outOffset + blk * 256;
        const d = f16At(b, p + 208);
        for (let e = 0; e < 256; e++) {
          // Element e: half h, plane s (0..3), byte l; planes 0/1 use low nibbles of ql, 2/3 high nibbles.
          const h = e >> 7, s = (e >> 5) & 3, l = e & 31;
          const ql = (b[p + 64 * h + 32 * (s & 1) + l] >> (4 * (s >> 1))) & 0xf;
          const qh = (b[p + 128 + 32 * h + l] >> (2 * s)) & 3;
          out[y + e] = fround(d * i8At(b, p + 192 + (e >> 4))) * ((ql | (qh << 4)) - 32);
        }
      }
      return;
  }
}

/** Dot product of row `row` of `w` with `x[xOffset .. xOffset + w.cols)`. */
export function dotRow(w: Matrix, row: number, x: Float32Array, xOffset: number): number {
  const n = w.cols;
  const b = w.data;
  const start = row * rowBytes(w.type, n);
  switch (w.type) {
    case "F32": {
      const a = new Float32Array(b.buffer, b.byteOffset + start, n);
      let sum = 0;
      for (let i = 0; i < n; i++) sum += a[i] * x[xOffset + i];
      return sum;
    }
    case "F16":
    case "BF16": {
      // Matrices keep F16/BF16 data 2-byte aligned: read whole halves and convert by table.
      const table = w.type === "F16" ? HALF : bf16Table();
      if ((b.byteOffset + start) % 2 !== 0) throw new RangeError(`${w.type} row data is not 2-byte aligned`);
      const h = u16View(b), first = (b.byteOffset + start) >> 1;
      let s0 = 0, s1 = 0;
      let i = 0;
      for (; i + 1 < n; i += 2) {
        s0 += table[h[first + i]] * x[xOffset + i];
        s1 += table[h[first + i + 1]] * x[xOffset + i + 1];
      }
      if (i < n) s0 += table[h[first + i]] * x[xOffset + i];
      return s0 + s1;
    }
    case "Q4_0":
      return dotQ4_0(b, start, n / 32, x, xOffset);
    case "Q4_1":
      return dotQ4_1(b, start, n / 32, x, xOffset);
    case "Q5_0":
      return dotQ5_0(b, start, n / 32, x, xOffset);
    case "Q5_1":
      return dotQ5_1(b, start, n / 32, x, xOffset);
    case "Q8_0":
      return dotQ8_0(b, start, n / 32, x, xOffset);
    case "Q2_K":
      return dotQ2_K(b, start, n / 256, x, xOffset);
    case "Q3_K":
      return dotQ3_K(b, start, n / 256, x, xOffset);
    case "Q4_K":
      return dotQ4_K(b, start, n / 256, x, xOffset);
    case "Q5_K":
      return dotQ5_K(b, start, n / 256, x, xOffset);
    case "Q6_K":
      return dotQ6_K(b, start, n / 256, x, xOffset);
  }
}

// The block dot products factor each block's scale (and min) out of the inner
// loop: Σ (d·q - m)·x = d·Σ q·x - m·Σ x. They agree with dequantizeRow + dot up
// to float rounding, not bit for bit.

function dotQ4_0(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 18, xo += 32) {
    let s = 0;
    for (let j = 0; j < 16; j++) {
      const q = b[p + 2 + j];
      s += ((q & 0xf) - 8) * x[xo + j] + ((q >> 4) - 8) * x[xo + j + 16];
    }
    sum += f16At(b, p) * s;
  }
  return sum;
}

function dotQ4_1(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 20, xo += 32) {
    let s = 0, sx = 0;
    for (let j = 0; j < 16; j++) {
      const q = b[p + 4 + j], x0 = x[xo + j], x1 = x[xo + j + 16];
      s += (q & 0xf) * x0 + (q >> 4) * x1;
      sx += x0 + x1;
    }
    sum += f16At(b, p) * s + f16At(b, p + 2) * sx;
  }
  return sum;
}

function dotQ5_0(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 22, xo += 32) {
    const qh = b[p + 2] | (b[p + 3] << 8) | (b[p + 4] << 16) | (b[p + 5] << 24);
    let s = 0;
    for (let j = 0; j < 16; j++) {
      const q = b[p + 6 + j];
      s += (((q & 0xf) | (((qh >>> j) & 1) << 4)) - 16) * x[xo + j] +
        (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16) * x[xo + j + 16];
    }
    sum += f16At(b, p) * s;
  }
  return sum;
}

function dotQ5_1(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 24, xo += 32) {
    const qh = b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | (b[p + 7] << 24);
    let s = 0, sx = 0;
    for (let j = 0; j < 16; j++) {
      const q = b[p + 8 + j], x0 = x[xo + j], x1 = x[xo + j + 16];
      s += ((q & 0xf) | (((qh >>> j) & 1) << 4)) * x0 + ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) * x1;
      sx += x0 + x1;
    }
    sum += f16At(b, p) * s + f16At(b, p + 2) * sx;
  }
  return sum;
}

function dotQ8_0(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  const q = i8View(b);
  let sum = 0;
  for (let blk = 0, at = b.byteOffset + p + 2; blk < blocks; blk++, p += 34, at += 34, xo += 32) {
    let s0 = 0, s1 = 0;
    for (let j = 0; j < 32; j += 2) {
      s0 += q[at + j] * x[xo + j];
      s1 += q[at + j + 1] * x[xo + j + 1];
    }
    sum += f16At(b, p) * (s0 + s1);
  }
  return sum;
}

function dotQ2_K(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 84, xo += 256) {
    const d = f16At(b, p + 80), dmin = f16At(b, p + 82);
    for (let sub = 0; sub < 16; sub++) {
      // Sub-block of 16: half h, plane j, bytes l0..l0+15 of the half's 32 quant bytes.
      const h = sub >> 3, shift = 2 * ((sub >> 1) & 3), q = p + 16 + 32 * h + 16 * (sub & 1);
      const xs = xo + 16 * sub;
      let s = 0, sx = 0;
      for (let l = 0; l < 16; l++) {
        const v = x[xs + l];
        s += ((b[q + l] >> shift) & 3) * v;
        sx += v;
      }
      const sc = b[p + sub];
      sum += d * (sc & 0xf) * s - dmin * (sc >> 4) * sx;
    }
  }
  return sum;
}

/** Reused by {@link dotQ3_K}: one block's 16 decoded scales. */
const q3Scales = new Int32Array(16);

function dotQ3_K(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 110, xo += 256) {
    for (let i = 0; i < 16; i++) q3Scales[i] = scaleK3(i, b, p + 96) - 32;
    let blockSum = 0;
    for (let h = 0; h < 2; h++) {
      const q = p + 32 + 32 * h;
      for (let j = 0; j < 4; j++) {
        // Plane j of half h: 2 low bits from the quant bytes, and the high bit (clear means -4) from hmask.
        const shift = 2 * j, hbit = 4 * h + j, xs = xo + 128 * h + 32 * j;
        let s0 = 0, s1 = 0;
        for (let l = 0; l < 16; l++) {
          s0 += (((b[q + l] >> shift) & 3) - 4 + (((b[p + l] >> hbit) & 1) << 2)) * x[xs + l];
          s1 += (((b[q + l + 16] >> shift) & 3) - 4 + (((b[p + l + 16] >> hbit) & 1) << 2)) * x[xs + l + 16];
        }
        const sub = 8 * h + 2 * j;
        blockSum += q3Scales[sub] * s0 + q3Scales[sub + 1] * s1;
      }
    }
    sum += f16At(b, p + 108) * blockSum;
  }
  return sum;
}

function dotQ4_K(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 144, xo += 256) {
    const d = f16At(b, p), dmin = f16At(b, p + 2);
    for (let pair = 0; pair < 4; pair++) {
      // 32 bytes hold sub-block 2·pair in their low nibbles and 2·pair+1 in their high nibbles.
      const q = p + 16 + 32 * pair, xa = xo + 64 * pair, xb = xa + 32;
      let sa = 0, sb = 0, sxa = 0, sxb = 0;
      for (let l = 0; l < 32; l++) {
        const v = b[q + l], va = x[xa + l], vb = x[xb + l];
        sa += (v & 0xf) * va;
        sb += (v >> 4) * vb;
        sxa += va;
        sxb += vb;
      }
      const smA = scaleMinK4(2 * pair, b, p + 4), smB = scaleMinK4(2 * pair + 1, b, p + 4);
      sum += d * ((smA & 0xff) * sa + (smB & 0xff) * sb) - dmin * ((smA >> 8) * sxa + (smB >> 8) * sxb);
    }
  }
  return sum;
}

function dotQ5_K(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 176, xo += 256) {
    const d = f16At(b, p), dmin = f16At(b, p + 2);
    for (let pair = 0; pair < 4; pair++) {
      const q = p + 48 + 32 * pair, xa = xo + 64 * pair, xb = xa + 32;
      const bitA = 2 * pair, bitB = bitA + 1;
      let sa = 0, sb = 0, sxa = 0, sxb = 0;
      for (let l = 0; l < 32; l++) {
        const v = b[q + l], hi = b[p + 16 + l], va = x[xa + l], vb = x[xb + l];
        sa += ((v & 0xf) | (((hi >> bitA) & 1) << 4)) * va;
        sb += ((v >> 4) | (((hi >> bitB) & 1) << 4)) * vb;
        sxa += va;
        sxb += vb;
      }
      const smA = scaleMinK4(bitA, b, p + 4), smB = scaleMinK4(bitB, b, p + 4);
      sum += d * ((smA & 0xff) * sa + (smB & 0xff) * sb) - dmin * ((smA >> 8) * sxa + (smB >> 8) * sxb);
    }
  }
  return sum;
}

function dotQ6_K(b: Uint8Array, p: number, blocks: number, x: Float32Array, xo: number): number {
  let sum = 0;
  for (let blk = 0; blk < blocks; blk++, p += 210, xo += 256) {
    const d = f16At(b, p + 208);
    for (let h = 0; h < 2; h++) {
      const ql = p + 64 * h, qh = p + 128 + 32 * h, sc = p + 192 + 8 * h, xs = xo + 128 * h;
      for (let half = 0; half < 2; half++) {
        // Bytes l in [16·half, 16·half + 16) feed four sub-blocks of 16, one per plane.
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let l = 16 * half; l < 16 * half + 16; l++) {
          const a = b[ql + l], c = b[ql + l + 32], hi = b[qh + l];
          s0 += (((a & 0xf) | ((hi & 3) << 4)) - 32) * x[xs + l];
          s1 += (((c & 0xf) | (((hi >> 2) & 3) << 4)) - 32) * x[xs + l + 32];
          s2 += (((a >> 4) | (((hi >> 4) & 3) << 4)) - 32) * x[xs + l + 64];
          s3 += (((c >> 4) | (((hi >> 6) & 3) << 4)) - 32) * x[xs + l + 96];
        }
        sum += d * (i8At(b, sc + half) * s0 + i8At(b, sc + half + 2) * s1 + i8At(b, sc + half + 4) * s2 +
          i8At(b, sc + half + 6) * s3);
      }
    }
  }
  return sum;
}
