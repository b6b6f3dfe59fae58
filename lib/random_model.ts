/**
 * Random models of the stories shapes (and TinyLlama 1.1B's and Llama 2 7B's and 13B's) for benchmarking:
 * uniform weights in ±1/sqrt(cols), written as a llama2.c v0 checkpoint (F32)
 * or as GGUF (F16 and BF16, rounded to nearest even; Q8_0, Q4_0, Q4_1, Q5_0
 * and Q5_1, quantized like llama.cpp's reference quantizers; Q4_K_M, with Q4_K and Q6_K tensors
 * where llama.cpp puts them and simpler quantizers than its searching ones).
 * The arithmetic costs the same as trained weights; the text is nonsense.
 *
 * @module
 */

import { GGML_TYPE_IDS } from "./gguf.ts";
import { encodeLlama2c } from "./llama2c.ts";
import type { LlamaConfig } from "./model_file.ts";
import { floatToBf16, halfToFloat } from "./quant.ts";
import { rowBytes } from "./tensor.ts";

/** Model shapes the benchmark knows by name. */
export const SHAPES: Record<string, LlamaConfig> = {
  "15M": { dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, vocabSize: 32000, seqLen: 1024 },
  "42M": { dim: 512, hiddenDim: 1376, nLayers: 8, nHeads: 8, nKvHeads: 8, vocabSize: 32000, seqLen: 1024 },
  "110M": { dim: 768, hiddenDim: 2048, nLayers: 12, nHeads: 12, nKvHeads: 12, vocabSize: 32000, seqLen: 1024 },
  "1.1B": { dim: 2048, hiddenDim: 5632, nLayers: 22, nHeads: 32, nKvHeads: 4, vocabSize: 32000, seqLen: 2048 },
  "7B": { dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, vocabSize: 32000, seqLen: 4096 },
  "13B": { dim: 5120, hiddenDim: 13824, nLayers: 40, nHeads: 40, nKvHeads: 40, vocabSize: 32000, seqLen: 4096 },
};

/** Encodings {@link writeRandomModel} can write (Q4_K_M: a mix of Q4_K and Q6_K tensors, as llama.cpp's). */
export type RandomModelType = "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0" | "Q4_1" | "Q5_0" | "Q5_1" | "Q4_K_M";
/** Every {@link RandomModelType}. */
export const RANDOM_MODEL_TYPES: readonly RandomModelType[] = [
  "F32",
  "F16",
  "BF16",
  "Q8_0",
  "Q4_0",
  "Q4_1",
  "Q5_0",
  "Q5_1",
  "Q4_K_M",
];
/** The encodings of single tensors in those files. */
type TensorEncoding = Exclude<RandomModelType, "Q4_K_M"> | "Q4_K" | "Q6_K";

/** Why {@link writeRandomModel} cannot write `type` for `config` (`name` says which shape in the message), if it cannot. */
export function randomModelProblem(
  config: LlamaConfig,
  type: RandomModelType,
  name = "this shape",
): string | undefined {
  if (type === "Q4_K_M" && (config.dim % 256 !== 0 || config.hiddenDim % 256 !== 0)) {
    return `Q4_K_M needs sizes that are multiples of 256; ${name} has ${config.dim} and ${config.hiddenDim}`;
  }
}

/** A small fast PRNG (xorshift32); `next()` is uniform in [-1, 1). */
export class Random {
  #state: number;
  constructor(seed = 1) {
    this.#state = seed >>> 0 || 1;
  }
  next(): number {
    let s = this.#state;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.#state = s >>> 0;
    return this.#state / 2 ** 31 - 1;
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** The IEEE half-precision bits nearest to `value` (round to nearest even), like GGML_FP32_TO_FP16. */
export function floatToHalf(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    // Subnormal: shift the mantissa (with its implicit 1) into place, rounding to nearest even.
    const m = mantissa | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1), midpoint = 1 << (shift - 1);
    if (rest > midpoint || (rest === midpoint && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** Quantizes `values` (a multiple of 32) into Q8_0 blocks at `out`, as llama.cpp's `quantize_row_q8_0_ref`. */
export function quantizeQ8_0(values: Float32Array, out: Uint8Array, outOffset = 0): void {
  const f = Math.fround;
  for (let b = 0; b < values.length / 32; b++) {
    const x = b * 32, p = outOffset + b * 34;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(values[x + j]));
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    writeHalf(out, p, d);
    for (let j = 0; j < 32; j++) {
      const v = f(values[x + j] * id);
      out[p + 2 + j] = (v < 0 ? -Math.round(-v) : Math.round(v)) & 0xff;
    }
  }
}

/** The value of largest magnitude in `values[from .. from + 32)`, with its sign (the first of equal magnitudes). */
function signedMax(values: Float32Array, from: number): number {
  let amax = 0, max = 0;
  for (let j = from; j < from + 32; j++) {
    if (Math.abs(values[j]) > amax) {
      amax = Math.abs(values[j]);
      max = values[j];
    }
  }
  return max;
}

/** Quantizes `values` (a multiple of 32) into Q4_0 blocks at `out`, as llama.cpp's `quantize_row_q4_0_ref`. */
export function quantizeQ4_0(values: Float32Array, out: Uint8Array, outOffset = 0): void {
  const f = Math.fround;
  for (let b = 0; b < values.length / 32; b++) {
    const x = b * 32, p = outOffset + b * 18;
    // The value of largest magnitude, with its sign, maps to -8.
    const d = f(signedMax(values, x) / -8);
    const id = d ? f(1 / d) : 0;
    writeHalf(out, p, d);
    for (let j = 0; j < 16; j++) {
      // (int8_t)(x*id + 8.5f) truncates toward zero; MIN(15, ...).
      const q0 = Math.min(15, Math.trunc(f(f(values[x + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(f(f(values[x + 16 + j] * id) + 8.5)));
      out[p + 2 + j] = q0 | (q1 << 4);
    }
  }
}

/** Scratch of the 4- and 5-bit quantizers: a block's levels. */
const blockLevels = new Uint8Array(32);

/**
 * The scale and minimum of the block at `values[from ..]` as llama.cpp's Q4_1 and Q5_1 quantizers take them (its range
 * in `steps`), its levels `(uint8_t)((x - min)·id + 0.5f)` into {@link blockLevels}.
 */
function levelsAboveMinimum(values: Float32Array, from: number, steps: number): { d: number; min: number } {
  const f = Math.fround;
  let min = Infinity, max = -Infinity;
  for (let j = from; j < from + 32; j++) {
    min = Math.min(min, values[j]);
    max = Math.max(max, values[j]);
  }
  const d = f(f(max - min) / steps);
  const id = d ? f(1 / d) : 0;
  for (let j = 0; j < 32; j++) blockLevels[j] = Math.trunc(f(f(f(values[from + j] - min) * id) + 0.5));
  return { d, min };
}

/** Quantizes `values` (a multiple of 32) into Q4_1 blocks at `out`, as llama.cpp's `quantize_row_q4_1_ref`. */
export function quantizeQ4_1(values: Float32Array, out: Uint8Array, outOffset = 0): void {
  for (let b = 0; b < values.length / 32; b++) {
    const p = outOffset + b * 20;
    const { d, min } = levelsAboveMinimum(values, b * 32, 15);
    writeHalf(out, p, d);
    writeHalf(out, p + 2, min);
    // MIN(15, level).
    for (let j = 0; j < 16; j++) {
      out[p + 4 + j] = Math.min(15, blockLevels[j]) | (Math.min(15, blockLevels[j + 16]) << 4);
    }
  }
}

/**
 * Writes the 5-bit {@link blockLevels} as Q5_0/Q5_1 store them: their fifth bits as the 32-bit `qh` at `qhAt`, then
 * their low nibbles (element j in byte j's low nibble, j + 16 in its high one).
 */
function writeFiveBits(out: Uint8Array, qhAt: number): void {
  let qh = 0;
  for (let j = 0; j < 32; j++) qh |= ((blockLevels[j] >> 4) & 1) << j;
  new DataView(out.buffer, out.byteOffset).setUint32(qhAt, qh >>> 0, true);
  for (let j = 0; j < 16; j++) out[qhAt + 4 + j] = (blockLevels[j] & 15) | ((blockLevels[j + 16] & 15) << 4);
}

/** Quantizes `values` (a multiple of 32) into Q5_0 blocks at `out`, as llama.cpp's `quantize_row_q5_0_ref`. */
export function quantizeQ5_0(values: Float32Array, out: Uint8Array, outOffset = 0): void {
  const f = Math.fround;
  for (let b = 0; b < values.length / 32; b++) {
    const x = b * 32, p = outOffset + b * 22;
    // The value of largest magnitude, with its sign, maps to -16.
    const d = f(signedMax(values, x) / -16);
    const id = d ? f(1 / d) : 0;
    writeHalf(out, p, d);
    // MIN(31, (int8_t)(x·id + 16.5f)).
    for (let j = 0; j < 32; j++) blockLevels[j] = Math.min(31, Math.trunc(f(f(values[x + j] * id) + 16.5)));
    writeFiveBits(out, p + 2);
  }
}

/** Quantizes `values` (a multiple of 32) into Q5_1 blocks at `out`, as llama.cpp's `quantize_row_q5_1_ref`. */
export function quantizeQ5_1(values: Float32Array, out: Uint8Array, outOffset = 0): void {
  for (let b = 0; b < values.length / 32; b++) {
    const p = outOffset + b * 24;
    // No clamp, as llama.cpp: a level is at most 31 plus a rounding error.
    const { d, min } = levelsAboveMinimum(values, b * 32, 31);
    writeHalf(out, p, d);
    writeHalf(out, p + 2, min);
    writeFiveBits(out, p + 4);
  }
}

/** `x` rounded to the nearest integer, clamped to `[low, high]`. */
function clampRound(x: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, Math.round(x)));
}

/** Scratch of the K-quantizers: a super-block's sub-block scales, minimums and levels. */
const kScales = new Float32Array(16), kMins = new Float32Array(8), kLevels = new Uint8Array(256);

/**
 * Quantizes `values` (a multiple of 256) into Q4_K blocks at `out`: per sub-block of 32, the scale spans
 * min(0, min x) .. max x in 15 steps, and the minimum is -min(0, min x); the 8 scales and minimums become 6-bit
 * multiples of d and dmin, packed as llama.cpp's `get_scale_min_k4` reads them. (llama.cpp searches for better
 * scales; the kernels' cost is the same.)
 */
export function quantizeQ4_K(values: Float32Array, out: Uint8Array, outOffset = 0): void {
  const f = Math.fround;
  for (let blk = 0; blk < values.length / 256; blk++) {
    const x = blk * 256, p = outOffset + blk * 144;
    let largestScale = 0, largestMin = 0;
    for (let j = 0; j < 8; j++) {
      let low = 0, high = -Infinity;
      for (let i = x + 32 * j; i < x + 32 * j + 32; i++) {
        low = Math.min(low, values[i]);
        high = Math.max(high, values[i]);
      }
      kScales[j] = (high - low) / 15;
      kMins[j] = -low;
      largestScale = Math.max(largestScale, kScales[j]);
      largestMin = Math.max(largestMin, kMins[j]);
    }
    const d = f(halfFloat(largestScale / 63)), dmin = f(halfFloat(largestMin / 63));
    writeHalf(out, p, d);
    writeHalf(out, p + 2, dmin);
    const sc = kScales.map((v) => d ? clampRound(v / d, 0, 63) : 0);
    const m = kMins.map((v) => dmin ? clampRound(v / dmin, 0, 63) : 0);
    const packed = out.subarray(p + 4, p + 16);
    packed.fill(0);
    for (let j = 0; j < 8; j++) {
      if (j < 4) {
        packed[j] = sc[j];
        packed[j + 4] = m[j];
      } else {
        packed[j + 4] = (sc[j] & 0xf) | ((m[j] & 0xf) << 4);
        packed[j - 4] |= (sc[j] >> 4) << 6;
        packed[j] |= (m[j] >> 4) << 6;
      }
    }
    for (let j = 0; j < 8; j++) {
      const step = f(d * sc[j]), offset = f(dmin * m[j]);
      // Sub-blocks 2k and 2k + 1 share 32 bytes: low nibbles, then high nibbles.
      const q = p + 16 + 32 * (j >> 1), shift = 4 * (j & 1);
      if (shift === 0) out.fill(0, q, q + 32);
      for (let l = 0; l < 32; l++) {
        const level = step ? clampRound((values[x + 32 * j + l] + offset) / step, 0, 15) : 0;
        out[q + l] |= level << shift;
      }
    }
  }
}

/**
 * Quantizes `values` (a multiple of 256) into Q6_K blocks at `out`: per sub-block of 16, the scale maps the largest
 * magnitude to 32 steps; the 16 scales are int8 multiples of d. Bits are laid out as llama.cpp's
 * `quantize_row_q6_K_ref` lays them out.
 */
export function quantizeQ6_K(values: Float32Array, out: Uint8Array, outOffset = 0): void {
  const f = Math.fround;
  for (let blk = 0; blk < values.length / 256; blk++) {
    const x = blk * 256, p = outOffset + blk * 210;
    let largest = 0;
    for (let s = 0; s < 16; s++) {
      let amax = 0;
      for (let i = x + 16 * s; i < x + 16 * s + 16; i++) amax = Math.max(amax, Math.abs(values[i]));
      kScales[s] = amax / 32;
      largest = Math.max(largest, kScales[s]);
    }
    const d = f(halfFloat(largest / 127));
    writeHalf(out, p + 208, d);
    const levels = kLevels;
    for (let s = 0; s < 16; s++) {
      const sc = d ? clampRound(kScales[s] / d, -128, 127) : 0;
      out[p + 192 + s] = sc & 0xff;
      const step = f(d * sc);
      for (let i = 16 * s; i < 16 * s + 16; i++) levels[i] = step ? clampRound(values[x + i] / step, -32, 31) + 32 : 32;
    }
    // Per half of 128: ql holds planes 0/1 (low nibbles) and 2/3 (high nibbles), qh two bits of each plane.
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        const [q1, q2, q3, q4] = [0, 32, 64, 96].map((plane) => levels[128 * h + plane + l]);
        out[p + 64 * h + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
        out[p + 64 * h + 32 + l] = (q2 & 0xf) | ((q4 & 0xf) << 4);
        out[p + 128 + 32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
      }
    }
  }
}

/** `value` rounded to half precision (as a float). */
function halfFloat(value: number): number {
  return halfToFloat(floatToHalf(value));
}

/** Writes 16 bits at `out[at]`, little-endian. */
function writeBits16(out: Uint8Array, at: number, bits: number): void {
  out[at] = bits & 0xff;
  out[at + 1] = bits >> 8;
}

function writeHalf(out: Uint8Array, at: number, value: number): void {
  writeBits16(out, at, floatToHalf(value));
}

/** Writes `values` into `out` as half-precision bits with `toBits` (float16 or bfloat16). */
function halves(toBits: (value: number) => number): (values: Float32Array, out: Uint8Array) => void {
  return (values, out) => values.forEach((value, i) => writeBits16(out, 2 * i, toBits(value)));
}

const QUANTIZERS = {
  F16: halves(floatToHalf),
  BF16: halves(floatToBf16),
  Q8_0: quantizeQ8_0,
  Q4_0: quantizeQ4_0,
  Q4_1: quantizeQ4_1,
  Q5_0: quantizeQ5_0,
  Q5_1: quantizeQ5_1,
  Q4_K: quantizeQ4_K,
  Q6_K: quantizeQ6_K,
} as const;

/** Bytes a `rows x cols` matrix takes in `type`. */
function matrixBytes(type: TensorEncoding, rows: number, cols: number): number {
  return type === "F32" ? rows * cols * 4 : rowBytes(type, cols) * rows;
}

/** Streams bytes to a file in large chunks. */
class FileSink {
  readonly #file: Deno.FsFile;
  constructor(file: Deno.FsFile) {
    this.#file = file;
  }
  async write(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.length;) done += await this.#file.write(bytes.subarray(done));
  }
}

/** A random `rows x cols` matrix in `type`, written row by row (bounded memory even at 7B). */
async function writeMatrix(sink: FileSink, type: TensorEncoding, rows: number, cols: number, random: Random) {
  const scale = 1 / Math.sqrt(cols);
  const rowsPerChunk = Math.max(1, Math.floor((8 << 20) / (cols * 4)));
  const values = new Float32Array(rowsPerChunk * cols);
  for (let r = 0; r < rows; r += rowsPerChunk) {
    const count = Math.min(rowsPerChunk, rows - r);
    const chunk = values.subarray(0, count * cols);
    for (let i = 0; i < chunk.length; i++) chunk[i] = random.next() * scale;
    if (type === "F32") {
      await sink.write(new Uint8Array(chunk.buffer, 0, chunk.byteLength));
    } else {
      const out = new Uint8Array(matrixBytes(type, count, cols));
      QUANTIZERS[type](chunk, out);
      await sink.write(out);
    }
  }
}

/** Norm weights: ones, as in a freshly initialised model. */
function ones(length: number): Uint8Array {
  return new Uint8Array(new Float32Array(length).fill(1).buffer);
}

/**
 * Writes a random model of `config` to `path`: a llama2.c v0 checkpoint with a
 * shared classifier for F32, a GGUF v3 file (with a filler vocabulary) for
 * the others. Written to `path + ".partial"` first, then renamed. Q4_K_M needs
 * `dim` and `hiddenDim` to be multiples of 256.
 */
export async function writeRandomModel(path: string, config: LlamaConfig, type: RandomModelType, seed = 1) {
  const problem = randomModelProblem(config, type);
  if (problem) throw new RangeError(problem);
  const partial = path + ".partial";
  const file = await Deno.open(partial, { write: true, create: true, truncate: true });
  try {
    const sink = new FileSink(file);
    if (type === "F32") await sink.write(encodeLlama2c(config, llama2cValues(config, new Random(seed))));
    else await writeGguf(sink, config, type, new Random(seed));
  } catch (error) {
    // No half-written file is left behind.
    file.close();
    await Deno.remove(partial).catch(() => {});
    throw error;
  }
  file.close();
  await Deno.rename(partial, path);
}

/**
 * Random values for the llama2.c writer's tensors: norms are ones, matrices
 * uniform in ±1/√cols (the `w2` down projection reads `hiddenDim` inputs, the rest `dim`).
 */
function llama2cValues(c: LlamaConfig, random: Random): (name: string, count: number) => Float32Array {
  return (name, count) => {
    if (name.endsWith("norm")) return new Float32Array(count).fill(1);
    const scale = 1 / Math.sqrt(name === "w2" ? c.hiddenDim : c.dim);
    const values = new Float32Array(count);
    for (let i = 0; i < count; i++) values[i] = random.next() * scale;
    return values;
  };
}

/** The pieces of a Llama-style vocabulary: <unk>, <s>, </s>, 256 byte pieces, then filler words. */
export function fillerVocabulary(size: number): { pieces: string[]; scores: Float32Array; types: Int32Array } {
  const pieces = ["<unk>", "<s>", "</s>"];
  const types = [2, 3, 3];
  for (let b = 0; b < 256 && pieces.length < size; b++) {
    pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6);
  }
  while (pieces.length < size) {
    pieces.push(`\u2581w${pieces.length}`);
    types.push(1);
  }
  const scores = Float32Array.from(pieces, (_, i) => (types[i] === 1 ? -i : 0));
  return {
    pieces: pieces.slice(0, size),
    scores: scores.subarray(0, size),
    types: Int32Array.from(types.slice(0, size)),
  };
}

/** Minimal GGUF v3 encoding: little-endian fields appended to a growing byte list. */
class GgufHeader {
  #parts: Uint8Array[] = [];
  #length = 0;
  get length(): number {
    return this.#length;
  }
  bytes(part: Uint8Array): void {
    this.#parts.push(part);
    this.#length += part.length;
  }
  u32(value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, true);
    this.bytes(b);
  }
  u64(value: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
    this.bytes(b);
  }
  string(text: string): void {
    const encoded = new TextEncoder().encode(text);
    this.u64(encoded.length);
    this.bytes(encoded);
  }
  /** A metadata key with a uint32 (4), float32 (6) or string (8) value. */
  kv(key: string, type: 4 | 6 | 8, value: number | string): void {
    this.string(key);
    this.u32(type);
    if (type === 8) this.string(value as string);
    else if (type === 4) this.u32(value as number);
    else this.bytes(new Uint8Array(new Float32Array([value as number]).buffer));
  }
  /** A metadata key with an array of strings (8), float32 (6) or int32 (5). */
  array(key: string, type: 5 | 6 | 8, values: ArrayLike<number> | string[]): void {
    this.string(key);
    this.u32(9);
    this.u32(type);
    this.u64(values.length);
    if (type === 8) { for (const v of values as string[]) this.string(v); }
    else if (type === 6) this.bytes(new Uint8Array(Float32Array.from(values as ArrayLike<number>).buffer));
    else this.bytes(new Uint8Array(Int32Array.from(values as ArrayLike<number>).buffer));
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.#length);
    let at = 0;
    for (const part of this.#parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }
}

/**
 * The encoding of each matrix: `type` throughout, except for Q4_K_M, which (as llama.cpp's `llama-quantize`) is Q4_K
 * with Q6_K for the classifier and for `attn_v` and `ffn_down` in the layers its `use_more_bits` picks.
 */
function encodingOf(
  type: Exclude<RandomModelType, "F32">,
  name: string,
  layer: number,
  layers: number,
): TensorEncoding {
  if (type !== "Q4_K_M") return type;
  if (name === "output.weight") return "Q6_K";
  // llama.cpp's use_more_bits, in its integer arithmetic.
  const eighth = Math.floor(layers / 8);
  const moreBits = layer < eighth || layer >= Math.floor((7 * layers) / 8) || (layer - eighth) % 3 === 2;
  return (name.endsWith("attn_v.weight") || name.endsWith("ffn_down.weight")) && moreBits ? "Q6_K" : "Q4_K";
}
const ALIGNMENT = 32;

async function writeGguf(
  sink: FileSink,
  c: LlamaConfig,
  modelType: Exclude<RandomModelType, "F32">,
  random: Random,
): Promise<void> {
  const kvDim = (c.dim / c.nHeads) * c.nKvHeads;
  // Tensors in file order: name, rows, cols (a 1-row "matrix" of F32 for norms).
  const tensors: { name: string; rows: number; cols: number; type: TensorEncoding; norm?: boolean }[] = [];
  const matrix = (name: string, rows: number, cols: number, layer = 0) =>
    tensors.push({ name, rows, cols, type: encodingOf(modelType, name, layer, c.nLayers) });
  const norm = (name: string) => tensors.push({ name, rows: 1, cols: c.dim, type: "F32", norm: true });
  matrix("token_embd.weight", c.vocabSize, c.dim);
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    norm(p + "attn_norm.weight");
    matrix(p + "attn_q.weight", c.dim, c.dim, l);
    matrix(p + "attn_k.weight", kvDim, c.dim, l);
    matrix(p + "attn_v.weight", kvDim, c.dim, l);
    matrix(p + "attn_output.weight", c.dim, c.dim, l);
    norm(p + "ffn_norm.weight");
    matrix(p + "ffn_gate.weight", c.hiddenDim, c.dim, l);
    matrix(p + "ffn_down.weight", c.dim, c.hiddenDim, l);
    matrix(p + "ffn_up.weight", c.hiddenDim, c.dim, l);
  }
  norm("output_norm.weight");
  matrix("output.weight", c.vocabSize, c.dim);

  const vocab = fillerVocabulary(c.vocabSize);
  const h = new GgufHeader();
  h.bytes(new TextEncoder().encode("GGUF"));
  h.u32(3);
  h.u64(tensors.length);
  h.u64(16);
  h.kv("general.architecture", 8, "llama");
  h.kv("general.name", 8, "random");
  h.kv("llama.context_length", 4, c.seqLen);
  h.kv("llama.embedding_length", 4, c.dim);
  h.kv("llama.block_count", 4, c.nLayers);
  h.kv("llama.feed_forward_length", 4, c.hiddenDim);
  h.kv("llama.rope.dimension_count", 4, c.dim / c.nHeads);
  h.kv("llama.attention.head_count", 4, c.nHeads);
  h.kv("llama.attention.head_count_kv", 4, c.nKvHeads);
  h.kv("llama.attention.layer_norm_rms_epsilon", 6, 1e-5);
  h.kv("tokenizer.ggml.model", 8, "llama");
  h.array("tokenizer.ggml.tokens", 8, vocab.pieces);
  h.array("tokenizer.ggml.scores", 6, vocab.scores);
  h.array("tokenizer.ggml.token_type", 5, vocab.types);
  h.kv("tokenizer.ggml.bos_token_id", 4, 1);
  h.kv("tokenizer.ggml.eos_token_id", 4, 2);
  let offset = 0;
  for (const t of tensors) {
    h.string(t.name);
    if (t.norm) {
      h.u32(1);
      h.u64(t.cols);
    } else {
      h.u32(2);
      h.u64(t.cols);
      h.u64(t.rows);
    }
    h.u32(GGML_TYPE_IDS[t.type]);
    h.u64(offset);
    offset += Math.ceil(matrixBytes(t.type, t.rows, t.cols) / ALIGNMENT) * ALIGNMENT;
  }
  h.bytes(new Uint8Array((ALIGNMENT - (h.length % ALIGNMENT)) % ALIGNMENT));
  await sink.write(h.concat());
  for (const t of tensors) {
    if (t.norm) await sink.write(ones(t.cols));
    else await writeMatrix(sink, t.type, t.rows, t.cols, random);
    const bytes = matrixBytes(t.type, t.rows, t.cols);
    await sink.write(new Uint8Array((ALIGNMENT - (bytes % ALIGNMENT)) % ALIGNMENT));
  }
}
