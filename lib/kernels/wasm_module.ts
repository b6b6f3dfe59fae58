/**
 * The WebAssembly SIMD matrix kernels, assembled into bytes at startup: the
 * module's source is this file, written in a small folded-expression DSL
 * (`add(a, b)` emits a, then b, then the opcode), so no toolchain and no
 * committed binary are involved.
 *
 * Every exported kernel has the same signature:
 *
 * ```
 * (w, r0, r1, cols, x, xd, xc, n, out, rows, xd4, xc4, xs4, xh4, xt, xp4)
 * ```
 *
 * and computes `out[t*rows + r] = row r of w · input t` for rows `r0 <= r < r1`
 * and inputs `0 <= t < n`, all pointers into the one shared memory:
 *
 * - `f32`, `f16`, `bf16`: `x` holds the inputs as floats, `cols` apart.
 * - `q8_0`, `q4_0`, `q4_1`, `q5_0`, `q5_1`: the inputs were quantized like
 *   llama.cpp's `quantize_row_q8_0` (blocks of 32: a float scale in `xd`,
 *   integers in -127..127); `x` holds them as int16 (`q8_0`, and the others
 *   without relaxed SIMD) or int8 (the others with relaxed SIMD), and `xc`
 *   holds per block the i32x4 `[-8·Σq, Σq₀, Σq₁, 0]`: lane 0 folds Q4_0's
 *   offset of 8 (and, doubled, Q5_0's of 16) into the sum, and lanes 1 and 2
 *   are the sums of the block's two halves of 16 (for Q4_1's and Q5_1's
 *   minimums). `xd4`, `xc4` and `xs4` (`d·Σq`) hold the same scales and sums
 *   regrouped by four inputs (per group and block, one vector of the four
 *   inputs' values), for the four-input path, which folds the four block sums
 *   into one vector and converts and scales them together. With eight inputs
 *   or more, `xt` holds the inputs of each group of four interleaved: the int8
 *   ones four bytes at a time (16 bytes: values 4c .. 4c + 3 of each input),
 *   the int16 ones (for Q8_0) two values at a time.
 * - `q2_k` .. `q6_k`: the same quantized inputs, but with one scale per 256
 *   values (llama.cpp's `quantize_row_q8_K`; `xd` repeats it for each block of
 *   32), as int16 (int8 with relaxed SIMD); `xc`'s `-8·Σq` gives the minimums
 *   of Q4_K and Q5_K their input sums, its half sums Q2_K's. Their four-input
 *   path reads those sums regrouped by four as well: `xs4` holds each block's
 *   `d·Σq` (float, for the minimums) and `xh4` each half block's `32·Σq`
 *   (int32, for Q6_K's offset of 32, Q3_K's of 4 and Q2_K's minimums); their
 *   eight-input path reads `xp4`, each block's half sums as int16 pairs (input
 *   j's `Σq₀, Σq₁` in 32-bit lane j). Any kernel reads inputs quantized so (a
 *   product of several encodings quantizes its inputs once).
 *
 * Each kernel handles four inputs at a time when it can, so a weight row is
 * read from memory once and reused from cache for the whole batch; with
 * fewer inputs (generation) it streams four rows at once. The module
 * also exports `quantize`, which prepares `x`, `xd` and `xc` from floats, and
 * `regroup`, which lays a group of four inputs out into `xd4` .. `xt`; and the
 * steps around the products: attention, RoPE with caching, SwiGLU, RMSNorm and
 * the residual addition.
 *
 * Half-precision weights are widened with integer and float arithmetic that
 * is exact for every finite half (subnormals included); infinities and NaNs
 * come out as large finite numbers, which no usable model contains.
 *
 * Helper names follow the WebAssembly text format (`i32x4Dot` is
 * `i32x4.dot_i16x8_s`, `relaxedDot` is `i16x8.relaxed_dot_i8x16_i7x16_s`).
 *
 * @module
 */

import { TENSOR_TYPES } from "../tensor.ts";

/**
 * Code as the helpers build it: bytes, nested arrays of code in order, and code already laid out (a function's). An
 * expression keeps its operands as they are instead of copying their bytes (which cost a copy per level of nesting);
 * {@link Fn.encode} lays a function's out once.
 */
type Code = (number | Code | Uint8Array)[];

/**
 * Bytes appended to a buffer that doubles as it fills. Laid out through JavaScript arrays grown by `push` (then
 * copied into the next level's), the module's 330 KB took 41-54 ms of its 160-210 ms; this way the whole build is
 * about a tenth faster.
 */
class ByteSink {
  #bytes = new Uint8Array(1 << 12);
  #length = 0;
  /** Appends `code`'s bytes in order, nesting undone. */
  write(code: Code): void {
    for (const part of code) {
      if (typeof part === "number") {
        if (this.#length === this.#bytes.length) this.#reserve(1);
        this.#bytes[this.#length++] = part;
      } else if (Array.isArray(part)) {
        this.write(part);
      } else {
        this.#reserve(part.length);
        this.#bytes.set(part, this.#length);
        this.#length += part.length;
      }
    }
  }
  /** The bytes written, in an array of their own. */
  bytes(): Uint8Array<ArrayBuffer> {
    return this.#bytes.slice(0, this.#length);
  }
  #reserve(count: number): void {
    if (this.#length + count <= this.#bytes.length) return;
    const grown = new Uint8Array(Math.max(2 * this.#bytes.length, this.#length + count));
    grown.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = grown;
  }
}

/** `code`'s bytes in order, nesting undone. */
function flatten(code: Code): Uint8Array<ArrayBuffer> {
  const sink = new ByteSink();
  sink.write(code);
  return sink.bytes();
}

/** Unsigned LEB128. */
function uleb(value: number): number[] {
  const out: number[] = [];
  do {
    let byte = value & 0x7f;
    value = Math.floor(value / 128);
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
  return out;
}

/** Signed LEB128 of a 32-bit integer. */
function sleb(value: number): number[] {
  const out: number[] = [];
  value |= 0;
  while (true) {
    const byte = value & 0x7f;
    value >>= 7;
    if ((value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const I32 = 0x7f, F32 = 0x7d, V128 = 0x7b;

// Plain instructions: each helper emits its operands, then its opcode.
const op = (code: number) => (...args: Code[]): Code => [...args, code];
const simd = (code: number) => (...args: Code[]): Code => [...args, 0xfd, ...uleb(code)];
const get = (local: number): Code => [0x20, ...uleb(local)];
const set = (local: number, value: Code): Code => [...value, 0x21, ...uleb(local)];
const i32 = (value: number): Code => [0x41, ...sleb(value)];
const f32 = (value: number): Code => {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setFloat32(0, value, true);
  return [0x43, ...bytes];
};
const add = op(0x6a), sub = op(0x6b), mul = op(0x6c), and = op(0x71), or = op(0x72), shl = op(0x74), shrU = op(0x76);
const ltU = op(0x49), leU = op(0x4d);
const fadd = op(0x92), fmul = op(0x94), fdiv = op(0x95), fmax = op(0x97), copysign = op(0x98), asFloat = op(0xbe);
const fne = op(0x5c), fsub = op(0x93), fsqrt = op(0x91), convertU = op(0xb3);
const fload = (addr: Code, offset = 0): Code => [...addr, 0x2a, 2, ...uleb(offset)];
const fstore = (addr: Code, value: Code): Code => [...addr, ...value, 0x38, 2, 0];
const load16u = (addr: Code, offset = 0): Code => [...addr, 0x2f, 1, ...uleb(offset)];
const iload = (addr: Code, offset = 0): Code => [...addr, 0x28, 2, ...uleb(offset)];
const convertS = op(0xb2);

// SIMD instructions (prefix 0xfd).
const vload = (addr: Code, offset = 0): Code => [...addr, 0xfd, 0, 0, ...uleb(offset)];
/** `v` with its 16-bit lane `lane` replaced by the one at `addr + offset` (`v128.load16_lane`). */
const load16Lane = (
  addr: Code,
  v: Code,
  lane: number,
  offset = 0,
): Code => [...addr, ...v, 0xfd, 0x55, 1, ...uleb(offset), lane];
const i32x4Splat = simd(0x11), f32x4Splat = simd(0x13);
const f32x4Lane = (v: Code, lane: number): Code => [...v, 0xfd, 0x1f, lane];
const f32x4ReplaceLane = (v: Code, lane: number, value: Code): Code => [...v, ...value, 0xfd, 0x20, lane];
/** An f32x4 of four floats, lane i from `values[i]` (e.g. four rows' scales side by side). */
const f32x4Of = (values: Code[]): Code =>
  values.slice(1).reduce((vector, value, i) => f32x4ReplaceLane(vector, i + 1, value), f32x4Splat(values[0]));
const vand = simd(0x4e), vor = simd(0x50), vxor = simd(0x51);
const i8x16Sub = simd(0x71), i16x8Add = simd(0x8e), i16x8Sub = simd(0x91), i16x8ShrU = simd(0x8d);
const i8x16Eq = simd(0x23), i8x16Swizzle = simd(0x0e);
const i16x8Shl = simd(0x8b);
/**
 * Each byte of `v` shifted right by `shift` bits (left when negative), then masked by `mask`. The 16-bit shifts
 * move bits between neighbouring bytes, but the byte mask keeps only each byte's own (wasm's i8x16 shifts are much
 * slower in V8 here).
 */
const byteBits = (v: Code, shift: number, mask: Code): Code =>
  vand(shift < 0 ? i16x8Shl(v, i32(-shift)) : shift > 0 ? i16x8ShrU(v, i32(shift)) : v, mask);
const i16x8ExtendLowU = simd(0x89), i16x8ExtendHighU = simd(0x8a);
const i32x4ExtaddPairwise = simd(0x7e);
const i16x8ExtendLowS = simd(0x87), i16x8ExtendHighS = simd(0x88);
const i32x4ExtendLowS = simd(0xa7), i32x4ExtendHighS = simd(0xa8);
const i32x4ExtendLowU = simd(0xa9), i32x4ExtendHighU = simd(0xaa);
const i32x4Shl = simd(0xab), i32x4ShrS = simd(0xac), i32x4Add = simd(0xae), i32x4Dot = simd(0xba);
const i32x4Mul = simd(0xb5);
const f32x4Add = simd(0xe4), f32x4Sub = simd(0xe5), f32x4Mul = simd(0xe6), f32x4Div = simd(0xe7);
const f32x4FromI32 = simd(0xfa);
const f32x4Floor = simd(0x68), f32x4Pmin = simd(0xea), f32x4Pmax = simd(0xeb), i32x4Sub = simd(0xb1);
const relaxedSwizzle = simd(0x100), relaxedMadd = simd(0x105), relaxedDot = simd(0x112);
const f32x4Abs = simd(0xe0);
const i16x8Narrow = simd(0x85), i8x16Narrow = simd(0x65);
const i32Lane = (v: Code, lane: number): Code => [...v, 0xfd, 0x1b, lane];
const i32x4ReplaceLane = (v: Code, lane: number, value: Code): Code => [...v, ...value, 0xfd, 0x1c, lane];
const i32x4ReplaceLane0 = (v: Code, value: Code): Code => i32x4ReplaceLane(v, 0, value);
/** `i8x16.shuffle` picking four 32-bit lanes from `a` (0-3) and `b` (4-7). */
const shuffle32 = (a: Code, b: Code, lanes: number[]): Code => [
  ...a,
  ...b,
  0xfd,
  0x0d,
  ...lanes.flatMap((lane) => [4 * lane, 4 * lane + 1, 4 * lane + 2, 4 * lane + 3]),
];
/** `i8x16.shuffle`: byte i of the result is byte `lanes[i]` of a (0-15) or of b (16-31). */
const shuffle8 = (a: Code, b: Code, lanes: number[]): Code => [...a, ...b, 0xfd, 0x0d, ...lanes];
/**
 * The byte lanes of `shuffle8(zeros, bits, ...)` that put 16-bit values 0..3 (`from` 0) or 4..7 (`from` 8) of `bits`
 * at the top of four 32-bit lanes, zeros below: bfloat16 to float in one instruction (`punpcklwd`/`punpckhwd`).
 */
const topHalves = (from: 0 | 8): number[] =>
  [0, 1, 2, 3].flatMap((i) => [2 * i + from, 2 * i + from + 1, 16 + 2 * i + from, 16 + 2 * i + from + 1]);
/** `v128.const` of sixteen bytes. */
const bytesConst = (bytes: number[]): Code => [0xfd, 0x0c, ...bytes];
const vstore = (addr: Code, offset: number, value: Code): Code => [...addr, ...value, 0xfd, 0x0b, 0, ...uleb(offset)];
const zero = (): Code => i32x4Splat(i32(0));
const i8x16Splat = (value: number): Code => simd(0x0f)(i32(value));

// Control flow.
const block = (...body: Code[]): Code => [0x02, 0x40, ...body, 0x0b];
const loop = (...body: Code[]): Code => [0x03, 0x40, ...body, 0x0b];
const brIf = (depth: number, cond: Code): Code => [...cond, 0x0d, depth];
/** `while (cond) body` (body may not branch out itself). */
const whileLoop = (cond: Code, ...body: Code[]): Code => block(loop(brIf(1, op(0x45)(cond)), ...body, [0x0c, 0]));

/** A function under construction: parameters are locals 0..; more locals are declared on demand. */
class Fn {
  readonly params: number;
  readonly #locals: number[] = [];
  constructor(params: number) {
    this.params = params;
  }
  /** The parameters' local indices, 0 .. params - 1 (to destructure into names). */
  parameters(): number[] {
    return Array.from({ length: this.params }, (_, i) => i);
  }
  local(type: number): number {
    this.#locals.push(type);
    return this.params + this.#locals.length - 1;
  }
  /** The function's entry in the code section (its size, its locals and its body's bytes), laid out once. */
  encode(body: Code): Code {
    const code = flatten([uleb(this.#locals.length), ...this.#locals.map((type) => [1, type]), body, 0x0b]);
    return [uleb(code.length), code];
  }
}

/** The kinds of weight encodings the module has kernels for, in export order. */
export const WASM_KERNELS = [
  "f32",
  "f16",
  "bf16",
  "q8_0",
  "q4_0",
  "q4_1",
  "q5_0",
  "q5_1",
  "q2_k",
  "q3_k",
  "q4_k",
  "q5_k",
  "q6_k",
] as const;
/** One of {@link WASM_KERNELS}. */
export type WasmKernelName = (typeof WASM_KERNELS)[number];
/** The kernels that read their inputs as floats; every other one reads them quantized by `quantize`. */
export const FLOAT_INPUT_KERNELS: readonly WasmKernelName[] = ["f32", "f16", "bf16"];
/**
 * The kernels whose weights (2- to 6-bit, unsigned) fit the 7-bit operand of the relaxed 8-bit dot product (every
 * quantized one but Q8_0): with relaxed SIMD they read the quantized inputs as int8, the other quantized kernels as
 * int16.
 */
export const INT8_INPUT_KERNELS: readonly WasmKernelName[] = WASM_KERNELS.filter((kernel) =>
  kernel !== "q8_0" && !FLOAT_INPUT_KERNELS.includes(kernel)
);

/**
 * The kernels whose inputs are quantized with one scale per 256 values, their super-block (llama.cpp's Q8_K): a
 * super-block's products then stay integers until its end, where they are scaled once.
 */
export const SUPER_BLOCK_INPUT_KERNELS: readonly WasmKernelName[] = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"];

/** Parameter indices shared by every kernel. */
const W = 0, R0 = 1, R1 = 2, COLS = 3, X = 4, XD = 5, XC = 6, N = 7, OUT = 8, ROWS = 9, XD4 = 10, XC4 = 11, XS4 = 12;
const XH4 = 13, XT = 14, XP4 = 15, KERNEL_PARAMS = 16;

/** Horizontal sum of an f32x4: (l0 + l1) + (l2 + l3). */
const hsum = (v: number): Code =>
  fadd(fadd(f32x4Lane(get(v), 0), f32x4Lane(get(v), 1)), fadd(f32x4Lane(get(v), 2), f32x4Lane(get(v), 3)));

/** Horizontal sum of two f32x4 added: the two accumulators of one dot product. */
const hsum2 = (a: number, b: number): Code => [...set(a, f32x4Add(get(a), get(b))), ...hsum(a)];

/** IEEE half bits → float: shift into float position, rescale the exponent by 2^112, restore the sign. */
const halfToFloat = (bits: Code): Code =>
  copysign(fmul(asFloat(shl(and(bits, i32(0x7fff)), i32(13))), f32(2 ** 112)), asFloat(shl(bits, i32(16))));

/** The constants of {@link halvesToFloats}, as v128 locals that `setup` sets once, before the loops that use them. */
interface HalfConstants {
  keep: number;
  scale: number;
  setup: Code;
}

/**
 * Locals for {@link halvesToFloats}' constants: V8 would otherwise rebuild each splat at every use, three more
 * instructions apiece (F16 products ran at half their speed).
 */
function halfConstants(f: Fn): HalfConstants {
  const keep = f.local(V128), scale = f.local(V128);
  return {
    keep,
    scale,
    setup: [...set(keep, i32x4Splat(i32(0x8fffffff))), ...set(scale, f32x4Splat(f32(2 ** 112)))],
  };
}

/**
 * Four halves at the top of i32 lanes, zeros below (see {@link topHalves}) → f32x4, the arithmetic of
 * {@link halfToFloat} lane-wise: shifting right by 3 (arithmetically) puts exponent and mantissa where a float's
 * go and keeps the sign on top; the three copies of the sign it leaves above the exponent are cleared; the
 * multiplication rebases the exponent. Three instructions after the interleave, where widening, shifting and
 * masking sign and magnitude apart took six.
 */
const halvesToFloats = (top: Code, k: HalfConstants): Code =>
  f32x4Mul(vand(i32x4ShrS(top, i32(3)), get(k.keep)), get(k.scale));

/**
 * The halves at `offset` past four pointers (four rows' scales or minimums) as one f32x4, lane j from `pointers[j]`:
 * gathered into the lanes' top halves with `v128.load16_lane`, then {@link halvesToFloats}. From the half table, each
 * took two loads (each with its bounds check: Deno runs WebAssembly without a trap handler) and then an insert.
 */
const fourHalves = (pointers: number[], offset: number, k: HalfConstants): Code =>
  halvesToFloats(pointers.reduce((v: Code, p, j) => load16Lane(get(p), v, 2 * j + 1, offset), zero()), k);

/**
 * How a function reads and writes the key/value cache: float32, or bfloat16 (a float32's top 16 bits: read back
 * by a shift, written rounded to nearest even). With `cacheMemory`, in memory 1. Offsets are counted in cached
 * values.
 */
function cacheAccess(f: Fn, cacheMemory: boolean, bf16: boolean) {
  const memarg = (offset: number): Code => cacheMemory ? [0x40, 1, ...uleb(offset)] : [0, ...uleb(offset)];
  /** Bytes per cached value, and its log2. */
  const bytes = bf16 ? 2 : 4, shift = bf16 ? 1 : 2;
  const constants = new Map<number, number>();
  /** An i32x4 splat of `value` kept in a local (V8 would rebuild a splat or a constant at every use). */
  const k = (value: number): Code => {
    if (!constants.has(value)) constants.set(value, f.local(V128));
    return get(constants.get(value)!);
  };
  /** Four cached values at `addr + offset` as an f32x4. */
  const load = (addr: Code, offset = 0): Code =>
    bf16
      ? i32x4Shl([...addr, 0xfd, 4, ...memarg(2 * offset)], i32(16)) // v128.load16x4_u, each value to the top half
      : [...addr, 0xfd, 0, ...memarg(4 * offset)];
  const bits = f.local(V128), lanes = [f.local(V128), f.local(V128)];
  /**
   * Eight cached values at `addr + offset` into two f32x4 locals. bfloat16: one load, then each value moved to the
   * top of a 32-bit lane by interleaving with zeros (`punpcklwd`/`punpckhwd`: one instruction each, where widening
   * and shifting takes two).
   */
  const loadPair = (addr: Code, offset: number, into: [number, number]): Code => {
    if (!bf16) return [...set(into[0], load(addr, offset)), ...set(into[1], load(addr, offset + 4))];
    return [
      ...set(bits, [...addr, 0xfd, 0, ...memarg(2 * offset)]),
      ...set(into[0], shuffle8(k(0), get(bits), topHalves(0))),
      ...set(into[1], shuffle8(k(0), get(bits), topHalves(8))),
    ];
  };
  const shrU = simd(0xad), narrowU = simd(0x86), bitselect = simd(0x52), f32x4Ne = simd(0x42);
  /**
   * An f32x4 as four bfloat16 values in i32 lanes, rounded to nearest even as `floatToBf16` in `lib/quant.ts` does
   * (adding 0x7fff and the lowest kept bit carries into the kept half exactly when it should; past the largest
   * finite value, into infinity); a NaN keeps its top half, made quiet.
   */
  const toBf16 = (x: Code): Code => [
    ...set(bits, x),
    ...bitselect(
      vor(shrU(get(bits), i32(16)), k(0x40)),
      shrU(i32x4Add(i32x4Add(get(bits), k(0x7fff)), vand(shrU(get(bits), i32(16)), k(1))), i32(16)),
      f32x4Ne(get(bits), get(bits)),
    ),
  ];
  /** Stores eight values (two f32x4) at `addr + offset`. */
  const store8 = (addr: Code, offset: number, first: Code, second: Code): Code => {
    if (!bf16) {
      return [
        ...[...addr, ...first, 0xfd, 0x0b, ...memarg(4 * offset)],
        ...[...addr, ...second, 0xfd, 0x0b, ...memarg(4 * offset + 16)],
      ];
    }
    return [
      ...set(lanes[0], toBf16(first)),
      ...set(lanes[1], toBf16(second)),
      ...addr,
      ...narrowU(get(lanes[0]), get(lanes[1])),
      0xfd,
      0x0b,
      ...memarg(2 * offset),
    ];
  };
  // The constants are known once the body is built: call `setup` after building it.
  const setup = (): Code => [...constants].flatMap(([value, local]) => set(local, i32x4Splat(i32(value))));
  return { bytes, shift, load, loadPair, store8, setup };
}

/** Lanes of {@link fold}'s two steps: first [a0+a2, a1+a3, b0+b2, b1+b3] from a and b, then [Σa, Σb, Σc, Σd]. */
const PAIRS = [[0, 1, 4, 5], [2, 3, 6, 7]], LANES = [[0, 2, 4, 6], [1, 3, 5, 7]];
/** Lanes of a folding step that keeps a and b interleaved: [a0+a2, b0+b2, a1+a3, b1+b3]. */
const INTERLEAVED = [[0, 4, 1, 5], [2, 6, 3, 7]];

/** One folding step of four-lane sums (i32x4; f32x4 with `sum = f32x4Add`): lanes `lanes[0]` plus `lanes[1]`. */
const fold = (a: number, b: number, lanes: number[][], sum = i32x4Add): Code =>
  sum(shuffle32(get(a), get(b), lanes[0]), shuffle32(get(a), get(b), lanes[1]));

/** Four i32x4 sums (one per input) as one i32x4 of their totals, in `sums[0]`. */
const foldFour = (sums: number[]): Code[] => [
  set(sums[0], fold(sums[0], sums[1], PAIRS)),
  set(sums[2], fold(sums[2], sums[3], PAIRS)),
  set(sums[0], fold(sums[0], sums[2], LANES)),
];

/**
 * The int8 path's four block products (int16 lanes) as one i32x4 of their sums, in `sums[0]`: folded at 16 bits,
 * [a0+a2, b0+b2, a1+a3, b1+b3] in 32-bit pairs of int16, then of two such, then widened once. Each lane of a
 * block product is at most 2·2·15·127 (4-bit weights) or 2·2·31·127 (5-bit), so the sums of four stay below 2^15
 * for 4-bit weights; 5-bit ones are widened first (see the K-quant kernel).
 */
const fold16 = (sums: number[]): Code[] => [
  set(sums[0], fold(sums[0], sums[1], INTERLEAVED, i16x8Add)),
  set(sums[2], fold(sums[2], sums[3], INTERLEAVED, i16x8Add)),
  set(sums[0], i32x4ExtaddPairwise(fold(sums[0], sums[2], PAIRS, i16x8Add))),
];

/**
 * Like {@link fold16}, for int16 lanes of up to 2^14 in magnitude (two of them still fit 16 bits, four do not):
 * the first step at 16 bits, then widened, then the second at 32.
 */
const foldWide16 = (sums: number[]): Code[] => [
  set(sums[0], i32x4ExtaddPairwise(fold(sums[0], sums[1], INTERLEAVED, i16x8Add))),
  set(sums[2], i32x4ExtaddPairwise(fold(sums[2], sums[3], INTERLEAVED, i16x8Add))),
  set(sums[0], fold(sums[0], sums[2], PAIRS)),
];

/**
 * Pointers to two consecutive groups of four inputs: `into[0] = first`, `into[1] = into[0] + stride` (the
 * eight-input paths' interleaved inputs and per-group scales and sums).
 */
const twoGroups = (into: number[], first: Code, stride: Code): Code[] => [
  set(into[0], first),
  set(into[1], add(get(into[0]), stride)),
];

/** Lane 0 of each of four vectors, side by side (e.g. four blocks' `-8·Σq` from their `xc` entries). */
const firstLanes = (vectors: Code[]): Code =>
  shuffle32(
    shuffle32(vectors[0], vectors[1], [0, 4, 0, 4]),
    shuffle32(vectors[2], vectors[3], [0, 4, 0, 4]),
    [0, 1, 4, 5],
  );

/** Lane `lane` of an i32x4 or f32x4 in all four lanes. */
const splatLane = (v: number, lane: number): Code => shuffle32(get(v), get(v), [lane, lane, lane, lane]);

/**
 * Shared outer structure: for each row, first groups of four inputs then the
 * rest one by one. `rowBytes` computes a row's size from `cols`; `dot(k, ...)`
 * emits the product of the current row with `k` inputs starting at input `t`,
 * leaving the k results in float locals `results[0..k)`.
 *
 * With fewer than four inputs (generation), where the weights stream from
 * memory once per token, rows go four at a time a quarter of the task's rows
 * apart: `dotRows(rows, t, results)` emits the products of the four rows at
 * addresses `rows[0..4)` with input `t`. Each of the four then runs straight
 * through its quarter as one long memory stream, and four streams keep about
 * twice as many cache lines in flight as one (measured: 1.8 -> 3.2 GMAC/s on
 * one thread for a 32000 x 288 F32 matrix).
 *
 * With four inputs or more (a prompt), kernels that give `dotOctet` or
 * `dotPair` take rows two at a time: against eight inputs at a time first
 * (`dotOctet(rows, t, outs)` leaves row r + i's results for inputs
 * t + 4g .. t + 4g + 3 in the f32x4 `outs[2i + g]`), then against each group of
 * four (`dotPair`: results 0..3 for the first row, 4..7 for the second; without
 * it, `dot(4, ...)` row by row). The last n % 4 inputs then go through
 * `dotRows` as generation's do, over the paired rows again (one row and one
 * input at a time for kernels without it).
 */
function rowsByInputs(
  f: Fn,
  rowBytes: Code,
  dot: (k: number, row: number, t: number, results: number[]) => Code,
  dotRows?: (rows: number[], t: number, results: number[]) => Code,
  dotPair?: (rows: number[], t: number, results: number[]) => Code,
  dotOctet?: (rows: number[], t: number, outs: number[]) => Code,
): Code {
  const r = f.local(I32), t = f.local(I32), row = f.local(I32), stride = f.local(I32);
  const quarter = f.local(I32), quarterEnd = f.local(I32), rowEnd = f.local(I32), from = f.local(I32);
  const rows = [f.local(I32), f.local(I32), f.local(I32), f.local(I32)];
  const results = [f.local(F32), f.local(F32), f.local(F32), f.local(F32)];
  const store = (k: number): Code =>
    fstore(add(get(OUT), shl(add(mul(add(get(t), i32(k)), get(ROWS)), get(r)), i32(2))), get(results[k]));
  const group = (k: number): Code[] => [
    dot(k, row, t, results),
    ...Array.from({ length: k }, (_, j) => store(j)),
    set(t, add(get(t), i32(k))),
  ];
  // Row r + j·quarter of input t.
  const storeSpread = (j: number): Code =>
    fstore(
      add(get(OUT), shl(add(mul(get(t), get(ROWS)), add(get(r), mul(get(quarter), i32(j)))), i32(2))),
      get(results[j]),
    );
  // Inputs from .. n - 1 of rows r0 .. rowEnd - 1: four rows a quarter apart against each input in turn (the rows stay
  // in cache across the inputs), then the last (rowEnd - r0) % 4 rows one at a time.
  const spread = !dotRows ? [] : [
    ...set(r, get(R0)),
    ...set(quarter, shrU(sub(get(rowEnd), get(R0)), i32(2))),
    ...set(quarterEnd, add(get(R0), get(quarter))),
    ...whileLoop(
      ltU(get(r), get(quarterEnd)),
      set(rows[0], add(get(W), mul(get(r), get(stride)))),
      ...[1, 2, 3].map((j) => set(rows[j], add(get(rows[j - 1]), mul(get(quarter), get(stride))))),
      set(t, get(from)),
      whileLoop(
        ltU(get(t), get(N)),
        dotRows(rows, t, results),
        ...[0, 1, 2, 3].map(storeSpread),
        set(t, add(get(t), i32(1))),
      ),
      set(r, add(get(r), i32(1))),
    ),
    ...set(r, add(get(R0), shl(get(quarter), i32(2)))),
    ...whileLoop(
      ltU(get(r), get(rowEnd)),
      set(row, add(get(W), mul(get(r), get(stride)))),
      set(t, get(from)),
      whileLoop(ltU(get(t), get(N)), ...group(1)),
      set(r, add(get(r), i32(1))),
    ),
  ];
  // Two rows against four inputs at once, where the kernel has it: each weight load serves four inputs and each input
  // load two rows, so the products stop waiting on loads. Results 0..3 are row r's, 4..7 row r + 1's.
  const pairResults = dotPair ? [...results, f.local(F32), f.local(F32), f.local(F32), f.local(F32)] : [];
  const storePair = (j: number): Code =>
    fstore(
      add(get(OUT), shl(add(mul(add(get(t), i32(j & 3)), get(ROWS)), add(get(r), i32(j >> 2))), i32(2))),
      get(pairResults[j]),
    );
  // Two rows against eight inputs: outs[2i + g] holds row r + i's results for inputs t + 4g .. t + 4g + 3.
  const octetOuts = dotOctet ? [f.local(V128), f.local(V128), f.local(V128), f.local(V128)] : [];
  const storeOctet = (i: number, g: number, j: number): Code =>
    fstore(
      add(get(OUT), shl(add(mul(add(get(t), i32(4 * g + j)), get(ROWS)), add(get(r), i32(i))), i32(2))),
      f32x4Lane(get(octetOuts[2 * i + g]), j),
    );
  const octets = !dotOctet ? [] : whileLoop(
    leU(add(get(t), i32(8)), get(N)),
    dotOctet(rows, t, octetOuts),
    ...[0, 1].flatMap((i) => [0, 1].flatMap((g) => [0, 1, 2, 3].map((j) => storeOctet(i, g, j)))),
    set(t, add(get(t), i32(8))),
  );
  // Without dotPair, the pair's remaining groups of four go one row at a time.
  const rowByRowFours = [0, 1].flatMap((j) => [
    set(row, get(rows[j])),
    dot(4, row, t, results),
    ...[0, 1, 2, 3].map((k) =>
      fstore(add(get(OUT), shl(add(mul(add(get(t), i32(k)), get(ROWS)), add(get(r), i32(j))), i32(2))), get(results[k]))
    ),
  ]);
  const pairs = !dotPair && !dotOctet ? [] : [
    ...whileLoop(
      leU(add(get(r), i32(2)), get(R1)),
      set(rows[0], add(get(W), mul(get(r), get(stride)))),
      set(rows[1], add(get(rows[0]), get(stride))),
      set(t, i32(0)),
      octets,
      whileLoop(
        leU(add(get(t), i32(4)), get(N)),
        ...(dotPair ? [dotPair(rows, t, pairResults), ...pairResults.map((_, j) => storePair(j))] : rowByRowFours),
        set(t, add(get(t), i32(4))),
      ),
      // The last n % 4 inputs: without dotRows, one row and one input at a time.
      dotRows ? [] : whileLoop(
        ltU(get(t), get(N)),
        ...[0, 1].map((j) => [
          ...set(row, get(rows[j])),
          ...dot(1, row, t, results),
          ...fstore(add(get(OUT), shl(add(mul(get(t), get(ROWS)), add(get(r), i32(j))), i32(2))), get(results[0])),
        ]),
        set(t, add(get(t), i32(1))),
      ),
      set(r, add(get(r), i32(2))),
    ),
    // With dotRows, the paired rows' last n % 4 inputs go through it afterwards: four rows against one input beat one
    // against one, even with the rows read again (one thread, 5632 x 2048, 7 inputs: Q4_0 +28%, Q4_K +30%).
    ...(!dotRows ? [] : [
      ...set(rowEnd, get(r)),
      ...set(from, and(get(N), i32(-4))),
      ...block(brIf(0, leU(get(N), get(from))), spread),
    ]),
  ];
  // Fewer than four inputs (generation): all rows and inputs through dotRows.
  const generation = !dotRows
    ? []
    : block(brIf(0, leU(i32(4), get(N))), set(rowEnd, get(R1)), set(from, i32(0)), spread);
  return [
    ...set(stride, rowBytes),
    ...set(r, get(R0)),
    ...generation,
    // With four inputs or more, rows two at a time (the kernels that can), then the rest one at a time.
    ...(dotPair || dotOctet ? block(brIf(0, ltU(get(N), i32(4))), pairs) : []),
    ...whileLoop(
      ltU(get(r), get(R1)),
      set(row, add(get(W), mul(get(r), get(stride)))),
      set(t, i32(0)),
      whileLoop(leU(add(get(t), i32(4)), get(N)), ...group(4)),
      whileLoop(ltU(get(t), get(N)), ...group(1)),
      set(r, add(get(r), i32(1))),
    ),
  ];
}

/**
 * F32, F16 and BF16 rows: float dot products, 4 floats per step (8 halves, widened to floats), a scalar tail for odd
 * widths.
 */
function floatKernel(encoding: "f32" | "f16" | "bf16", relaxed: boolean): Code {
  const half = encoding !== "f32";
  const f = new Fn(KERNEL_PARAMS);
  const madd = (a: Code, b: Code, c: Code): Code => relaxed ? relaxedMadd(a, b, c) : f32x4Add(c, f32x4Mul(a, b));
  const c = f.local(I32), vecEnd = f.local(I32), wv = f.local(V128);
  const acc = Array.from({ length: 8 }, () => f.local(V128));
  const tail = [f.local(F32), f.local(F32), f.local(F32), f.local(F32)];
  const xrow = [f.local(I32), f.local(I32), f.local(I32), f.local(I32)];
  const lo = f.local(V128), wLocal = f.local(F32);
  const elemBytes = half ? 2 : 4;
  const halves = halfConstants(f), zeros = f.local(V128);
  /** Elements per vector step: four floats, or eight halves (two vectors once widened). */
  const step = half ? 8 : 4;
  /**
   * The low (0) or high (8) four of eight halves as floats: each moved to the top of a 32-bit lane by interleaving
   * with zeros, which for a bfloat16 (a float's top half) is its float; a float16 then goes through halvesToFloats.
   */
  const widen = (bits: Code, from: 0 | 8): Code => {
    const top = shuffle8(get(zeros), bits, topHalves(from));
    return encoding === "f16" ? halvesToFloats(top, halves) : top;
  };
  /** One weight at byte address `addr`, as a float. */
  const scalarWeight = (addr: Code): Code =>
    encoding === "f32"
      ? fload(addr)
      : encoding === "f16"
      ? halfToFloat(load16u(addr))
      : asFloat(shl(load16u(addr), i32(16)));
  const dot = (k: number, row: number, t: number, results: number[]): Code => {
    // Independent accumulators hide the multiply-add latency: four for one input, two each for four.
    const unroll = k === 1 ? 4 : 2;
    const accOf = (j: number, u: number) => acc[j * unroll + u];
    const setup: Code[] = [];
    for (let j = 0; j < k; j++) {
      setup.push(set(xrow[j], add(get(X), shl(mul(add(get(t), i32(j)), get(COLS)), i32(2)))));
      setup.push(set(tail[j], f32(0)));
      for (let u = 0; u < unroll; u++) setup.push(set(accOf(j, u), zero()));
    }
    // One vector step at element c + at: 4 floats (F32) or 8 halves (F16, BF16) into accumulator u.
    const xAt = (j: number, at: number): Code => vload(add(get(xrow[j]), shl(get(c), i32(2))), 4 * at);
    const vectorStep = (u: number, at: number): Code[] => {
      const body: Code[] = [];
      if (half) {
        body.push(set(wv, vload(add(get(row), shl(get(c), i32(1))), 2 * at)));
        body.push(set(lo, widen(get(wv), 0)));
        body.push(set(wv, widen(get(wv), 8)));
        for (let j = 0; j < k; j++) {
          body.push(set(accOf(j, u), madd(get(lo), xAt(j, at), get(accOf(j, u)))));
          body.push(set(accOf(j, u), madd(get(wv), xAt(j, at + 4), get(accOf(j, u)))));
        }
      } else {
        body.push(set(wv, vload(add(get(row), shl(get(c), i32(2))), 4 * at)));
        for (let j = 0; j < k; j++) body.push(set(accOf(j, u), madd(get(wv), xAt(j, at), get(accOf(j, u)))));
      }
      return body;
    };
    const unrolled: Code[] = [];
    for (let u = 0; u < unroll; u++) unrolled.push(...vectorStep(u, u * step));
    unrolled.push(set(c, add(get(c), i32(unroll * step))));
    const single = [...vectorStep(0, 0), set(c, add(get(c), i32(step)))];
    // Scalar tail for the last cols % step elements.
    const weight = scalarWeight(add(get(row), shl(get(c), i32(half ? 1 : 2))));
    const scalar: Code[] = [set(wLocal, weight)];
    for (let j = 0; j < k; j++) {
      const xc = fload(add(get(xrow[j]), shl(get(c), i32(2))));
      scalar.push(set(tail[j], fadd(get(tail[j]), fmul(get(wLocal), xc))));
    }
    scalar.push(set(c, add(get(c), i32(1))));
    const finish: Code[] = [];
    for (let j = 0; j < k; j++) {
      for (let u = 1; u < unroll; u++) finish.push(set(accOf(j, 0), f32x4Add(get(accOf(j, 0)), get(accOf(j, u)))));
      finish.push(set(results[j], fadd(hsum(accOf(j, 0)), get(tail[j]))));
    }
    return [
      ...setup.flat(),
      ...set(c, i32(0)),
      ...whileLoop(leU(add(get(c), i32(unroll * step)), get(vecEnd)), ...unrolled),
      ...whileLoop(ltU(get(c), get(vecEnd)), ...single),
      ...whileLoop(ltU(get(c), get(COLS)), ...scalar),
      ...finish.flat(),
    ];
  };
  // Four rows, one input: each input vector load serves the four rows; two accumulators per row.
  const dotRows = (rows: number[], t: number, results: number[]): Code => {
    const x = xrow[0], xv = [lo, f.local(V128)];
    const rowAt = (j: number, at: number): Code => vload(add(get(rows[j]), shl(get(c), i32(half ? 1 : 2))), at);
    const xAt = (at: number): Code => vload(add(get(x), shl(get(c), i32(2))), at);
    /** Elements c + e .. c + e + 7 of the four rows. */
    const eight = (e: number): Code[] => {
      const body: Code[] = [];
      if (half) {
        // The low four halves widened into accumulator 0, the high four into accumulator 1.
        body.push(set(xv[0], xAt(4 * e)), set(xv[1], xAt(4 * e + 16)));
        for (let j = 0; j < 4; j++) {
          body.push(set(wv, rowAt(j, 2 * e)));
          body.push(set(acc[2 * j], madd(widen(get(wv), 0), get(xv[0]), get(acc[2 * j]))));
          body.push(set(acc[2 * j + 1], madd(widen(get(wv), 8), get(xv[1]), get(acc[2 * j + 1]))));
        }
      } else {
        for (let u = 0; u < 2; u++) {
          body.push(set(xv[u], xAt(4 * e + 16 * u)));
          for (let j = 0; j < 4; j++) {
            body.push(set(acc[2 * j + u], madd(rowAt(j, 4 * e + 16 * u), get(xv[u]), get(acc[2 * j + u]))));
          }
        }
      }
      return body;
    };
    // Sixteen elements a turn where they fit (half the loop's own instructions per byte: +8% on one thread for a
    // 32000 x 288 F32 matrix), then eight.
    const sixteen = [...eight(0), ...eight(8), set(c, add(get(c), i32(16)))];
    const body = [...eight(0), set(c, add(get(c), i32(8)))];
    const weight = (j: number): Code => scalarWeight(add(get(rows[j]), shl(get(c), i32(half ? 1 : 2))));
    const scalar: Code[] = [set(wLocal, fload(add(get(x), shl(get(c), i32(2)))))];
    for (let j = 0; j < 4; j++) scalar.push(set(tail[j], fadd(get(tail[j]), fmul(weight(j), get(wLocal)))));
    scalar.push(set(c, add(get(c), i32(1))));
    // F32 rows whose width is 4 mod 8 take one more four-wide step into accumulator 0.
    const single: Code[] = [set(xv[0], xAt(0))];
    for (let j = 0; j < 4; j++) single.push(set(acc[2 * j], madd(rowAt(j, 0), get(xv[0]), get(acc[2 * j]))));
    single.push(set(c, add(get(c), i32(4))));
    return [
      ...set(x, add(get(X), shl(mul(get(t), get(COLS)), i32(2)))),
      ...acc.flatMap((a) => set(a, zero())),
      ...tail.flatMap((v) => set(v, f32(0))),
      ...set(c, i32(0)),
      ...whileLoop(leU(add(get(c), i32(16)), get(vecEnd)), ...sixteen),
      ...whileLoop(leU(add(get(c), i32(8)), get(vecEnd)), ...body),
      ...(half ? [] : whileLoop(ltU(get(c), get(vecEnd)), ...single)),
      ...whileLoop(ltU(get(c), get(COLS)), ...scalar),
      ...results.flatMap((result, j) => set(result, fadd(hsum2(acc[2 * j], acc[2 * j + 1]), get(tail[j])))),
    ];
  };
  // Two rows, four inputs, one accumulator each (eight chains); a scalar tail for widths that are not a multiple of
  // the step. Results 0..3 are rows[0]'s, 4..7 rows[1]'s. F16 and BF16 widen each row's eight halves once for the
  // four inputs.
  const xv = f.local(V128), pairTail = Array.from({ length: 8 }, () => f.local(F32));
  const highs = [f.local(V128), f.local(V128)];
  const dotPair = (rows: number[], t: number, results: number[]): Code => {
    const at = (pointer: number, shift: number): Code => add(get(pointer), shl(get(c), i32(shift)));
    const body: Code[] = [];
    // Row i's weights: lows[i] (values c .. c + 3) and, for halves, highs[i] (c + 4 .. c + 7).
    const lows = [wv, lo];
    for (let i = 0; i < 2; i++) {
      if (!half) body.push(set(lows[i], vload(at(rows[i], 2))));
      else {
        body.push(set(highs[i], vload(at(rows[i], 1))));
        body.push(set(lows[i], widen(get(highs[i]), 0)), set(highs[i], widen(get(highs[i]), 8)));
      }
    }
    for (let j = 0; j < 4; j++) {
      for (const [weights, offset] of half ? [[lows, 0], [highs, 16]] as const : [[lows, 0]] as const) {
        body.push(set(xv, vload(at(xrow[j], 2), offset)));
        body.push(
          set(acc[j], madd(get(weights[0]), get(xv), get(acc[j]))),
          set(acc[4 + j], madd(get(weights[1]), get(xv), get(acc[4 + j]))),
        );
      }
    }
    body.push(set(c, add(get(c), i32(step))));
    const scalar: Code[] = [];
    for (let j = 0; j < 8; j++) {
      const w = scalarWeight(at(rows[j >> 2], half ? 1 : 2));
      scalar.push(set(pairTail[j], fadd(get(pairTail[j]), fmul(w, fload(at(xrow[j & 3], 2))))));
    }
    scalar.push(set(c, add(get(c), i32(1))));
    return [
      ...[0, 1, 2, 3].flatMap((j) => set(xrow[j], add(get(X), shl(mul(add(get(t), i32(j)), get(COLS)), i32(2))))),
      ...acc.flatMap((a) => set(a, zero())),
      ...pairTail.flatMap((v) => set(v, f32(0))),
      ...set(c, i32(0)),
      ...whileLoop(ltU(get(c), get(vecEnd)), ...body),
      ...whileLoop(ltU(get(c), get(COLS)), ...scalar),
      ...results.flatMap((result, j) => set(result, fadd(hsum(acc[j]), get(pairTail[j])))),
    ];
  };
  return f.encode([
    ...(encoding === "f16" ? halves.setup : []),
    ...set(zeros, zero()),
    ...set(vecEnd, and(get(COLS), i32(-step))),
    ...rowsByInputs(f, mul(get(COLS), i32(elemBytes)), dot, dotRows, dotPair),
  ]);
}

/**
 * Where the kernels expect a table of all 65536 half-precision values as
 * floats (256 KiB): a block's scale is then one lookup instead of a dozen
 * bit operations. The owner of the memory fills it (see {@link fillHalfTable}).
 */
export const HALF_TABLE = 65536;
/** First byte after the table: allocations start here. */
export const RESERVED_BYTES = HALF_TABLE + 65536 * 4;
/**
 * The pages the main memory starts with (the table's), which the module declares as its memory's minimum. V8 checks
 * every load and store against the memory's size at run time here (Deno installs no trap handler); an access whose
 * constant offset lies below the declared minimum skips half of that check, which is +7-11% on the products.
 */
export const RESERVED_PAGES = Math.ceil(RESERVED_BYTES / 65536);

/** Writes the half-precision table at {@link HALF_TABLE}. */
export function fillHalfTable(memory: WebAssembly.Memory, halfToFloat: (bits: number) => number): void {
  const table = new Float32Array(memory.buffer, HALF_TABLE, 65536);
  for (let h = 0; h < 65536; h++) table[h] = halfToFloat(h);
}

/**
 * Where the levels of the 4- and 5-bit encodings of blocks of 32 sit in a block (after its half-precision scale d at
 * byte 0): the minimum m (Q4_1, Q5_1), the 32 fifth bits `qh` (Q5_0, Q5_1), the 16 bytes of nibbles `qs` (element j
 * in byte j's low nibble, element j + 16 in its high one), and the offset taken off the unsigned levels.
 */
const LEVEL_LAYOUTS = {
  q4_0: { min: undefined, qh: undefined, qs: 2, offset: 8 },
  q4_1: { min: 2, qh: undefined, qs: 4, offset: 0 },
  q5_0: { min: undefined, qh: 2, qs: 6, offset: 16 },
  q5_1: { min: 2, qh: 4, qs: 8, offset: 0 },
} as const;

/**
 * Rows of blocks of 32 weights with one scale (Q8_0's signed bytes; Q4_0, Q4_1, Q5_0 and Q5_1's 4- or 5-bit levels,
 * see LEVEL_LAYOUTS) against inputs quantized to 8 bits: per block, an integer dot product, then one float
 * multiply-add by the two scales, `Σ w·x = dx·(d·Σ (q − offset)·qx + m·Σ qx)`. The int8 path (relaxed SIMD, every
 * encoding but Q8_0) multiplies the unsigned levels and adds the inputs' `−8·Σq` (`xc`) times offset / 8; the int16
 * path takes the offset off before widening. The minimum goes with the inputs' `dx·Σq` (`xc`'s half sums; `xs4`).
 * Prompts of eight inputs or more go two rows against eight inputs, the inputs in lanes (`xt`; see dotOctet).
 */
function quantKernel(type: "q8_0" | "q4_0" | "q4_1" | "q5_0" | "q5_1", relaxed: boolean): Code {
  const f = new Fn(KERNEL_PARAMS);
  const madd = (a: Code, b: Code, c: Code): Code => relaxed ? relaxedMadd(a, b, c) : f32x4Add(c, f32x4Mul(a, b));
  const { blockBytes } = TENSOR_TYPES[type.toUpperCase() as Uppercase<typeof type>];
  const layout = type === "q8_0" ? undefined : LEVEL_LAYOUTS[type];
  const hasMin = layout?.min !== undefined, offset = layout?.offset ?? 0;
  // The int8 path (relaxed, levels) reads x as bytes; the others as int16.
  const int8x = relaxed && INT8_INPUT_KERNELS.includes(type);
  // 5-bit levels: a lane of an 8-bit dot product is at most 2·31·127, so int16 sums hold fewer of them (foldWide16;
  // four chunks, half a block, in dotOctet).
  const fiveBits = layout?.qh !== undefined, foldBlocks = fiveBits ? foldWide16 : fold16;
  /** The int8 path's correction for the offset from `xc` (`−8·Σq`, scalar or vector): times offset / 8. */
  const corrected = (xc: Code, vector: boolean): Code =>
    offset === 8 ? xc : vector ? i32x4Shl(xc, i32(1)) : shl(xc, i32(1));
  const xBlockBytes = int8x ? 32 : 64;
  const b = f.local(I32), blocks = f.local(I32), bp = f.local(I32), d = f.local(F32), m = f.local(F32);
  // Moving pointers into input t's values, scales and corrections; strides to input t + 1.
  const xp = f.local(I32), dp = f.local(I32), cp = f.local(I32);
  const xStride = f.local(I32), dStride = f.local(I32), cStride = f.local(I32);
  const vectors = () => [f.local(V128), f.local(V128), f.local(V128), f.local(V128)];
  const wv = vectors();
  const acc = [f.local(V128), f.local(V128)], minSum = f.local(F32);
  // The bytes per group of four inputs in XD4/XC4 (16 per block).
  const groupStride = f.local(I32);
  // Constants live in locals: an engine may rematerialise a splat inside the loop each time.
  const low4 = f.local(V128), offsets = f.local(V128), sixteens = f.local(V128), bitMask = f.local(V128);
  // Byte k >> 3 of qh for byte k of elements 0..15 (lowIndex) and 16..31 (highIndex), as swizzle indices; `bits`
  // holds a block's qh in each lane.
  const lowIndex = f.local(V128), highIndex = f.local(V128), bits = f.local(V128);
  /** A half-precision number at `pointer + at·blockBytes + offset` as a float. */
  const halfAt = (pointer: number, at: number, offset: number): Code =>
    fload(shl(load16u(get(pointer), at * blockBytes + offset), i32(2)), HALF_TABLE);
  /** Levels 0..15 and 16..31 of the block at `pointer + at·blockBytes`, unsigned (4 or 5 bits), as bytes. */
  const levelBytes = (pointer: number, at: number, low: number, high: number): Code[] => {
    const { qs, qh } = layout!;
    const code = [
      set(high, vload(get(pointer), at * blockBytes + qs)),
      set(low, vand(get(high), get(low4))),
      set(high, byteBits(get(high), 4, get(low4))),
    ];
    if (qh !== undefined) {
      // Element j's fifth bit is bit j of qh: each byte of qh spread over the eight bytes it covers, its bit for
      // each picked by the mask (1, 2, 4, .. 128), then made 16 where set.
      const fifth = (index: number): Code =>
        vand(
          i8x16Eq(vand((relaxed ? relaxedSwizzle : i8x16Swizzle)(get(bits), get(index)), get(bitMask)), get(bitMask)),
          get(sixteens),
        );
      code.push(
        set(bits, i32x4Splat(iload(get(pointer), at * blockBytes + qh))),
        set(low, vor(get(low), fifth(lowIndex))),
        set(high, vor(get(high), fifth(highIndex))),
      );
    }
    return code;
  };
  /**
   * Decodes the block at `pointer + at·blockBytes` into `into.wv` (its 32 weights: int16 in wv[0..3], or on the
   * int8 path the unsigned levels as bytes in wv[1] and wv[2]), `into.d` (its scale) and `into.m` (its minimum),
   * each when given (the generating path gathers four rows' scales itself).
   */
  const decode = (at: number, pointer = bp, into: { wv: number[]; d?: number; m?: number } = { wv, d, m }): Code[] => {
    const { wv, d } = into;
    const body: Code[] = [];
    if (type === "q8_0") {
      const w = (offset: number) => vload(get(pointer), at * blockBytes + offset);
      body.push(set(wv[1], w(2)), set(wv[3], w(18)));
      body.push(set(wv[0], i16x8ExtendLowS(get(wv[1]))), set(wv[1], i16x8ExtendHighS(get(wv[1]))));
      body.push(set(wv[2], i16x8ExtendLowS(get(wv[3]))), set(wv[3], i16x8ExtendHighS(get(wv[3]))));
    } else {
      // On the int8 path the levels stay unsigned bytes: the 7-bit operand of the relaxed dot product.
      body.push(...levelBytes(pointer, at, wv[1], wv[2]));
      if (!int8x) {
        // Levels minus their offset, widened to int16 (as signed bytes where there is an offset).
        if (offset) {
          body.push(set(wv[1], i8x16Sub(get(wv[1]), get(offsets))), set(wv[2], i8x16Sub(get(wv[2]), get(offsets))));
        }
        const [lo, hi] = offset ? [i16x8ExtendLowS, i16x8ExtendHighS] : [i16x8ExtendLowU, i16x8ExtendHighU];
        body.push(set(wv[0], lo(get(wv[1]))), set(wv[1], hi(get(wv[1]))));
        body.push(set(wv[3], hi(get(wv[2]))), set(wv[2], lo(get(wv[2]))));
      }
    }
    if (d === undefined) return body;
    body.push(set(d, halfAt(pointer, at, 0)));
    if (hasMin && into.m !== undefined) body.push(set(into.m, halfAt(pointer, at, layout!.min!)));
    return body;
  };
  /** `dx·Σ qx` of the input block `at` past `dp` (scales) and `cp` (xc, whose lanes 1 and 2 hold its half sums). */
  const inputSum = (at: number): Code =>
    fmul(fload(get(dp), at * 4), convertS(add(iload(get(cp), at * 16 + 4), iload(get(cp), at * 16 + 8))));
  /** A decoded block `w` times one input block at `x` (+ `offset`): an i32x4 whose lanes sum to the integer dot. */
  const blockSum = (x: Code, offset: number, w = wv): Code =>
    int8x ? i32x4ExtaddPairwise(blockSum16(x, offset, w)) : i32x4Add(
      i32x4Add(i32x4Dot(get(w[0]), vload(x, offset)), i32x4Dot(get(w[1]), vload(x, offset + 16))),
      i32x4Add(i32x4Dot(get(w[2]), vload(x, offset + 32)), i32x4Dot(get(w[3]), vload(x, offset + 48))),
    );
  /** The int8 path's block product before widening: two 8-bit dot products into int16 lanes (each <= 2·31·127). */
  const blockSum16 = (x: Code, offset: number, w = wv): Code =>
    i16x8Add(relaxedDot(vload(x, offset), get(w[1])), relaxedDot(vload(x, offset + 16), get(w[2])));
  const dot = (k: number, row: number, t: number, results: number[]): Code =>
    k === 4 ? dotByFour([row], t, results) : dotOne(row, t, results);

  // One input: two accumulators, alternating blocks; per block, the sum is scaled by both scales.
  const dotOne = (row: number, t: number, results: number[]): Code => {
    const blockStep = (at: number): Code[] => {
      let sum = blockSum(get(xp), at * xBlockBytes);
      // Lane 0 of xc only (its lanes 1 and 2 hold the half sums).
      if (int8x && offset) sum = i32x4Add(sum, i32x4ReplaceLane0(zero(), corrected(iload(get(cp), at * 16), false)));
      const scale = fmul(get(d), fload(get(dp), at * 4));
      return [
        ...decode(at),
        set(acc[at], madd(f32x4FromI32(sum), f32x4Splat(scale), get(acc[at]))),
        ...(hasMin ? [set(minSum, fadd(get(minSum), fmul(get(m), inputSum(at))))] : []),
      ];
    };
    const advance = (count: number): Code[] => [
      set(b, add(get(b), i32(count))),
      set(bp, add(get(bp), i32(count * blockBytes))),
      set(xp, add(get(xp), i32(count * xBlockBytes))),
      set(dp, add(get(dp), i32(count * 4))),
      set(cp, add(get(cp), i32(count * 16))),
    ];
    return [
      ...set(xp, add(get(X), mul(get(t), get(xStride)))),
      ...set(dp, add(get(XD), mul(get(t), get(dStride)))),
      ...set(cp, add(get(XC), mul(get(t), get(cStride)))),
      ...set(bp, get(row)),
      ...set(b, i32(0)),
      ...set(acc[0], zero()),
      ...set(acc[1], zero()),
      ...set(minSum, f32(0)),
      ...whileLoop(leU(add(get(b), i32(2)), get(blocks)), ...blockStep(0), ...blockStep(1), ...advance(2)),
      ...whileLoop(ltU(get(b), get(blocks)), ...blockStep(0), ...advance(1)),
      ...set(results[0], hasMin ? fadd(hsum2(acc[0], acc[1]), get(minSum)) : hsum2(acc[0], acc[1])),
    ];
  };

  // The four inputs' moving pointers (the first is xp).
  const xps = [xp, f.local(I32), f.local(I32), f.local(I32)];
  /** One row of a four-input step: its moving block pointer, decoded block, four integer sums, accumulator. */
  interface StepRow {
    bp: number;
    wv: number[];
    d: number;
    m: number;
    sums: number[];
    acc: number;
  }
  const stepRows: StepRow[] = [
    { bp, wv, d, m, sums: vectors(), acc: acc[0] },
    { bp: f.local(I32), wv: vectors(), d: f.local(F32), m: f.local(F32), sums: vectors(), acc: f.local(V128) },
  ];
  // The four inputs' `dx·Σq` (xs4), for the minimums.
  const sp = f.local(I32);
  /**
   * Rows `rows` (one or two) against four inputs: each block is decoded once for the four inputs, and each input
   * block is loaded once for the rows. Each row's four integer sums are folded into one vector (lane j: input j),
   * so converting and scaling (by the four inputs' scales, read as one vector from `XD4`) happens once. Results
   * 0..3 are the first row's, 4..7 the second's.
   */
  const dotByFour = (rows: number[], t: number, results: number[]): Code => {
    const used = stepRows.slice(0, rows.length);
    const sumOf = int8x ? blockSum16 : blockSum;
    /** Block `at` (0 or 1) past the pointers. */
    const step = (at: number): Code[] => {
      const code: Code[] = used.flatMap((row) => decode(at, row.bp, row));
      for (let j = 0; j < 4; j++) {
        code.push(...used.map((row) => set(row.sums[j], sumOf(get(xps[j]), at * xBlockBytes, row.wv))));
      }
      for (const { sums, acc, d, m } of used) {
        code.push(...(int8x ? foldBlocks(sums) : foldFour(sums)));
        if (int8x && offset) code.push(set(sums[0], i32x4Add(get(sums[0]), corrected(vload(get(cp), 16 * at), true))));
        const scales = f32x4Mul(vload(get(dp), 16 * at), f32x4Splat(get(d)));
        code.push(set(acc, madd(f32x4FromI32(get(sums[0])), scales, get(acc))));
        if (hasMin) code.push(set(acc, madd(f32x4Splat(get(m)), vload(get(sp), 16 * at), get(acc))));
      }
      return code;
    };
    const advance = (count: number): Code[] => [
      set(b, add(get(b), i32(count))),
      ...used.map((row) => set(row.bp, add(get(row.bp), i32(count * blockBytes)))),
      ...xps.map((p) => set(p, add(get(p), i32(count * xBlockBytes)))),
      set(dp, add(get(dp), i32(count * 16))),
      int8x && offset ? set(cp, add(get(cp), i32(count * 16))) : [],
      hasMin ? set(sp, add(get(sp), i32(count * 16))) : [],
    ];
    return [
      ...set(xp, add(get(X), mul(get(t), get(xStride)))),
      ...[1, 2, 3].flatMap((j) => set(xps[j], add(get(xps[j - 1]), get(xStride)))),
      ...set(dp, add(get(XD4), mul(shrU(get(t), i32(2)), get(groupStride)))),
      ...set(cp, add(get(XC4), mul(shrU(get(t), i32(2)), get(groupStride)))),
      ...set(sp, add(get(XS4), mul(shrU(get(t), i32(2)), get(groupStride)))),
      ...used.flatMap((row, i) => [...set(row.bp, get(rows[i])), ...set(row.acc, zero())]),
      ...set(b, i32(0)),
      // Two blocks a step (half the pointer updates), then the last odd one.
      ...whileLoop(leU(add(get(b), i32(2)), get(blocks)), ...step(0), ...step(1), ...advance(2)),
      ...whileLoop(ltU(get(b), get(blocks)), ...step(0), ...advance(1)),
      ...used.flatMap((row, i) =>
        results.slice(4 * i, 4 * i + 4).flatMap((r, j) => set(r, f32x4Lane(get(row.acc), j)))
      ),
    ];
  };
  // Four rows, one input: each row's block decoded in turn against the input block. One accumulator per row (the
  // int8 path folds the rows into the first: lane j, row j).
  const rowPointers = [f.local(I32), f.local(I32), f.local(I32), f.local(I32)];
  const rowAcc = [f.local(V128), f.local(V128), f.local(V128), f.local(V128)];
  const halves = halfConstants(f), rowScales = f.local(V128);
  /** The half at `offset` in the four rows' blocks `at` (scale or minimum) side by side (one input: +7-47%). */
  const rowHalves = (at: number, offset: number): Code => fourHalves(rowPointers, at * blockBytes + offset, halves);
  const dotRows = (rows: number[], t: number, results: number[]): Code => {
    /** The four rows' blocks `at` (0 or 1) past the pointers. */
    const step = (at: number): Code[] => {
      // The four rows' scales times the input block's.
      const code: Code[] = [set(rowScales, f32x4Mul(rowHalves(at, 0), f32x4Splat(fload(get(dp), 4 * at))))];
      if (!int8x) {
        // int32 products; each row's scale splatted from its lane.
        for (let j = 0; j < 4; j++) {
          code.push(...decode(at, rowPointers[j], { wv }));
          const product = f32x4FromI32(blockSum(get(xp), at * xBlockBytes));
          code.push(set(rowAcc[j], madd(product, splatLane(rowScales, j), get(rowAcc[j]))));
        }
        return code;
      }
      // The four rows' products folded into one vector (lane j: row j) as in the prompt path, scaled side by side.
      const products = stepRows[0].sums;
      for (let j = 0; j < 4; j++) {
        code.push(...decode(at, rowPointers[j], { wv }));
        code.push(set(products[j], blockSum16(get(xp), at * xBlockBytes)));
      }
      // Each row's block sum gets the input block's correction, lane 0 of xc splatted.
      code.push(...foldBlocks(products));
      if (offset) {
        code.push(
          set(products[0], i32x4Add(get(products[0]), i32x4Splat(corrected(iload(get(cp), 16 * at), false)))),
        );
      }
      code.push(set(rowAcc[0], madd(f32x4FromI32(get(products[0])), get(rowScales), get(rowAcc[0]))));
      if (hasMin) {
        code.push(set(rowAcc[0], madd(rowHalves(at, layout!.min!), f32x4Splat(inputSum(at)), get(rowAcc[0]))));
      }
      return code;
    };
    const advance = (count: number): Code[] => [
      set(b, add(get(b), i32(count))),
      ...rowPointers.map((pointer) => set(pointer, add(get(pointer), i32(count * blockBytes)))),
      set(xp, add(get(xp), i32(count * xBlockBytes))),
      set(dp, add(get(dp), i32(count * 4))),
      set(cp, add(get(cp), i32(count * 16))),
    ];
    return [
      ...set(xp, add(get(X), mul(get(t), get(xStride)))),
      ...set(dp, add(get(XD), mul(get(t), get(dStride)))),
      ...set(cp, add(get(XC), mul(get(t), get(cStride)))),
      ...rows.flatMap((row, j) => set(rowPointers[j], get(row))),
      ...rowAcc.flatMap((a) => set(a, zero())),
      ...set(b, i32(0)),
      // Two blocks a step (half the loop's own work: counters, pointers, reloads), then the last odd one.
      ...whileLoop(leU(add(get(b), i32(2)), get(blocks)), ...step(0), ...step(1), ...advance(2)),
      ...whileLoop(ltU(get(b), get(blocks)), ...step(0), ...advance(1)),
      ...results.flatMap((result, j) => set(result, int8x ? f32x4Lane(get(rowAcc[0]), j) : hsum(rowAcc[j]))),
    ];
  };
  // Two rows against eight inputs (the int8 path), inputs in lanes: `XT` holds each group of four inputs with their
  // bytes interleaved four at a time (16 bytes: four consecutive values of each of the four inputs), so one 8-bit dot
  // product against four of a row's weights (one lane of its levels, splatted) gives the four inputs' partial sums
  // side by side. No folding across lanes: per row, group and block one int16 sum of eight products (each at most
  // 2·15·127, so the sum stays below 2^15), widened once; with 5-bit levels (at most 2·31·127) one per half block,
  // widened twice. Each splat serves two groups and each input vector two
  // rows, which is what makes it cheaper than the four-input path (measured: 228 against 277 instructions per 512
  // multiply-adds, +19-26% on prompt-sized batches).
  const octet = {
    rows: [f.local(I32), f.local(I32)],
    low: [f.local(V128), f.local(V128)],
    high: [f.local(V128), f.local(V128)],
    d: [f.local(F32), f.local(F32)],
    m: [f.local(F32), f.local(F32)],
    xt: [f.local(I32), f.local(I32)],
    dp: [f.local(I32), f.local(I32)],
    cp: [f.local(I32), f.local(I32)],
    sp: [f.local(I32), f.local(I32)],
    sums: vectors(),
    // 5-bit levels: the first half block's sums, widened (see dotOctet).
    firstHalf: vectors(),
    x: [f.local(V128), f.local(V128)],
    splat: f.local(V128),
  };
  // Q8_0 reads the int16 inputs interleaved two at a time (`XT` then holds 16 bytes per two values of four inputs),
  // so a 16-bit dot product against a row's two weights splatted gives the four inputs' sums in int32 lanes.
  const xtBlockBytes = int8x ? 128 : 256;
  // int16 ones: a 16-bit dot product with them widens int16 sums to int32 in one instruction with the vector in a
  // register, where V8's extadd_pairwise reloads its constant's address every time (+1-4% here, +4-11% for Q4_K).
  const ones16 = f.local(V128);
  const dotOctet = (rows: number[], t: number, outs: number[]): Code => {
    const { low, high, d, m, xt, sums, firstHalf, x, splat } = octet;
    /** Input chunk `c` of block `at` (both groups) times the `weights` of both rows, into the sums. */
    const chunk = (at: number, c: number, weights: (i: number) => Code): Code[] => {
      const code: Code[] = [];
      for (let g = 0; g < 2; g++) code.push(set(x[g], vload(get(xt[g]), at * xtBlockBytes + c * 16)));
      for (let i = 0; i < 2; i++) {
        code.push(set(splat, weights(i)));
        for (let g = 0; g < 2; g++) {
          const product = int8x ? relaxedDot(get(x[g]), get(splat)) : i32x4Dot(get(x[g]), get(splat));
          const sum = sums[2 * i + g];
          const first = c === 0 || (fiveBits && c === 4);
          code.push(set(sum, first ? product : (int8x ? i16x8Add : i32x4Add)(get(sum), product)));
        }
      }
      return code;
    };
    const step = (at: number): Code[] => {
      const code: Code[] = [];
      for (let i = 0; i < 2; i++) {
        code.push(set(d[i], halfAt(octet.rows[i], at, 0)));
        if (hasMin) code.push(set(m[i], halfAt(octet.rows[i], at, layout!.min!)));
      }
      if (int8x) {
        for (let i = 0; i < 2; i++) code.push(...levelBytes(octet.rows[i], at, low[i], high[i]));
        // Chunk c: values 4c .. 4c + 3 of the block (c < 4: low levels, else high).
        for (let c = 0; c < 8; c++) {
          code.push(...chunk(at, c, (i) => splatLane(c < 4 ? low[i] : high[i], c & 3)));
          if (fiveBits && c === 3) {
            code.push(...sums.map((sum, j) => set(firstHalf[j], i32x4Dot(get(sum), get(ones16)))));
          }
        }
      } else {
        // Each half of 16 weights widened to two int16 vectors (low: values 0..7, high: 8..15); chunk c holds
        // values 2c, 2c + 1.
        for (let half = 0; half < 2; half++) {
          for (let i = 0; i < 2; i++) {
            code.push(set(high[i], vload(get(octet.rows[i]), at * blockBytes + 2 + 16 * half)));
            code.push(set(low[i], i16x8ExtendLowS(get(high[i]))), set(high[i], i16x8ExtendHighS(get(high[i]))));
          }
          for (let c = 8 * half; c < 8 * half + 8; c++) {
            code.push(...chunk(at, c, (i) => splatLane((c & 7) < 4 ? low[i] : high[i], c & 3)));
          }
        }
      }
      for (let i = 0; i < 2; i++) {
        for (let g = 0; g < 2; g++) {
          const j = 2 * i + g;
          let sum = int8x ? i32x4Dot(get(sums[j]), get(ones16)) : get(sums[j]);
          if (int8x && fiveBits) sum = i32x4Add(sum, get(firstHalf[j]));
          if (int8x && offset) sum = i32x4Add(sum, corrected(vload(get(octet.cp[g]), 16 * at), true));
          const scales = f32x4Mul(vload(get(octet.dp[g]), 16 * at), f32x4Splat(get(d[i])));
          code.push(set(outs[j], madd(f32x4FromI32(sum), scales, get(outs[j]))));
          if (hasMin) {
            code.push(set(outs[j], madd(f32x4Splat(get(m[i])), vload(get(octet.sp[g]), 16 * at), get(outs[j]))));
          }
        }
      }
      return code;
    };
    const advance = (count: number): Code[] => [
      set(b, add(get(b), i32(count))),
      ...octet.rows.map((pointer) => set(pointer, add(get(pointer), i32(count * blockBytes)))),
      ...xt.map((p) => set(p, add(get(p), i32(count * xtBlockBytes)))),
      ...[...octet.dp, ...octet.cp, ...octet.sp].map((p) => set(p, add(get(p), i32(count * 16)))),
    ];
    return [
      ...twoGroups(xt, add(get(XT), mul(get(t), get(xStride))), shl(get(xStride), i32(2))).flat(),
      ...twoGroups(octet.dp, add(get(XD4), mul(shrU(get(t), i32(2)), get(groupStride))), get(groupStride)).flat(),
      ...twoGroups(octet.cp, add(get(XC4), mul(shrU(get(t), i32(2)), get(groupStride))), get(groupStride)).flat(),
      ...twoGroups(octet.sp, add(get(XS4), mul(shrU(get(t), i32(2)), get(groupStride))), get(groupStride)).flat(),
      ...rows.slice(0, 2).flatMap((row, i) => set(octet.rows[i], get(row))),
      ...outs.flatMap((out) => set(out, zero())),
      ...set(b, i32(0)),
      ...whileLoop(leU(add(get(b), i32(2)), get(blocks)), ...step(0), ...step(1), ...advance(2)),
      ...whileLoop(ltU(get(b), get(blocks)), ...step(0), ...advance(1)),
    ];
  };
  return f.encode([
    ...set(low4, i8x16Splat(0x0f)),
    ...halves.setup,
    ...(offset && !int8x ? set(offsets, i8x16Splat(offset)) : []),
    ...(fiveBits
      ? [
        set(sixteens, i8x16Splat(16)),
        set(bitMask, bytesConst([1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128])),
        set(lowIndex, bytesConst(Array.from({ length: 16 }, (_, k) => k >> 3))),
        set(highIndex, bytesConst(Array.from({ length: 16 }, (_, k) => 2 + (k >> 3)))),
      ].flat()
      : []),
    ...set(ones16, i32x4Splat(i32(0x00010001))),
    ...set(blocks, shrU(get(COLS), i32(5))),
    ...set(xStride, mul(get(COLS), i32(int8x ? 1 : 2))),
    ...set(dStride, shl(get(blocks), i32(2))),
    ...set(cStride, shl(get(blocks), i32(4))),
    ...set(groupStride, shl(get(blocks), i32(4))),
    ...rowsByInputs(
      f,
      mul(get(blocks), i32(blockBytes)),
      dot,
      int8x || !hasMin ? dotRows : undefined,
      dotByFour,
      int8x || type === "q8_0" ? dotOctet : undefined,
    ),
  ]);
}

/**
 * The byte orders that put a Q4_K/Q5_K super-block's scale bytes (from byte 4) in place for `get_scale_min_k4`: byte
 * i of the result is byte LOW_ORDER[i] (the low six or four bits' source) and HIGH_ORDER[i] (the top two bits'
 * source; 16: none).
 */
const LOW_ORDER = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11];
const HIGH_ORDER = [16, 16, 16, 16, 0, 1, 2, 3, 16, 16, 16, 16, 4, 5, 6, 7];

/**
 * Q4_K, Q5_K and Q6_K rows (super-blocks of 256 weights) against inputs
 * quantized to 8 bits in blocks of 32, read as int16 (`x`; int8 with relaxed
 * SIMD) with their scales (`xd`) and `-8·Σq` (lane 0 of `xc`, used here for
 * the minimums). Each block of 32 weights is widened to int16 and multiplied
 * with `i32x4.dot_i16x8_s` (or, relaxed, kept as bytes for the 8-bit dot
 * product):
 *
 * - Q4_K: sub-block j of 32 has a 6-bit scale and minimum (12 packed bytes,
 *   llama.cpp's `get_scale_min_k4`): `Σ w·x = dx·(d·sc·Σ q·qx − dmin·m·Σ qx)`.
 * - Q5_K: the same, with a fifth bit per weight from 32 more bytes.
 * - Q6_K: 16 sub-blocks of 16 with int8 scales; `q` is 4 low bits from `ql`
 *   and 2 high bits from `qh`, minus 32 (the 8-bit path multiplies the
 *   unsigned levels and takes off 32·Σx with a second 8-bit dot product).
 * - Q3_K: Q6_K's layout of sub-blocks, with 6-bit scales minus 32 (12 packed
 *   bytes) and `q` of 2 low bits from `qs` and a third from `hmask`, minus 4.
 * - Q2_K: 16 sub-blocks of 16 with a 4-bit scale and minimum each:
 *   `Σ w·x = dx·(d·sc·Σ q·qx − dmin·m·Σ qx)` per sub-block, `q` 2 bits.
 *
 * A super-block's scales (and minimums) are decoded into float vectors once.
 * Each sub-block is decoded once for the one or four inputs of a step. With
 * four, their sums are folded into one vector (lane i: input i) and scaled by
 * the four inputs' scales and sums read as vectors from `xd4` and `xs4`
 * (Q4_K, Q5_K) or `xh4` (Q6_K, Q3_K, Q2_K; the offsets' 8-bit paths then
 * need only one 8-bit dot product per input and sub-block). With fewer
 * (generation), the int8 path takes four rows at once and
 * folds the rows' sums (lane i: row i), with their scales transposed to
 * match; otherwise one row's sums of four consecutive sub-blocks are folded
 * (lane i: sub-block i) and scaled by their scales and input scales side by
 * side. With eight inputs or more, the int8 path takes two rows against eight
 * inputs with the inputs in lanes (`xt`), as Q4_0 does, and sums each
 * super-block in integers (see `dotOctet`): the one input scale per 256 is
 * what lets it. The outer loop is `rowsByInputs`'.
 */
function kQuantKernel(type: "q2_k" | "q3_k" | "q4_k" | "q5_k" | "q6_k", relaxed: boolean): Code {
  const f = new Fn(KERNEL_PARAMS);
  const int8x = relaxed && INT8_INPUT_KERNELS.includes(type);
  const madd = (a: Code, b: Code, c: Code): Code => relaxed ? relaxedMadd(a, b, c) : f32x4Add(c, f32x4Mul(a, b));
  const xBytes = int8x ? 1 : 2;
  const { blockBytes } = TENSOR_TYPES[type.toUpperCase() as Uppercase<typeof type>];
  const b = f.local(I32), blocks = f.local(I32), bp = f.local(I32), d = f.local(F32), dmin = f.local(F32);
  const q = [f.local(V128), f.local(V128), f.local(V128), f.local(V128), f.local(V128), f.local(V128)];
  const low4 = f.local(V128), bits45 = f.local(V128), bit4 = f.local(V128), thirtyTwo = f.local(V128);
  // Q2_K and Q3_K: their low two bits; Q3_K: its third bit (4, which is also its offset), and the sixteen scales
  // (minus 32) of the current super-block, decoded from 12 bytes.
  const low2 = f.local(V128), fours = f.local(V128), scales3 = f.local(V128), ones8 = f.local(V128);
  const scaleWords = [f.local(I32), f.local(I32), f.local(I32)];
  // A sub-block's weights, decoded once for every input: 32 bytes in `w8` (int8 path) or int16 in `w16`.
  const w8 = [f.local(V128), f.local(V128)];
  const w16 = [f.local(V128), f.local(V128), f.local(V128), f.local(V128)];
  // Q6_K, Q3_K, Q2_K: the scales times d of the four sub-blocks of 16 being summed (lane i: sub-block 4k + i of
  // group k); Q2_K: their minimums times dmin too.
  const groupScales = f.local(V128), groupMins = f.local(V128);
  // Q4_K, Q5_K: the eight sub-blocks' scales times d (two vectors: sub-blocks 0-3, 4-7), minimums times dmin.
  const scales = [f.local(V128), f.local(V128)], mins = [f.local(V128), f.local(V128)];
  // Masks for decoding the 6-bit scales and minimums (see decodeScales).
  const lowBitsMask = f.local(V128), highNibbleMask = f.local(V128);
  // scaleBytes' byte orders (and the bits its high order keeps), as vectors for the relaxed path's swizzles.
  const lowOrder = f.local(V128), highOrder = f.local(V128), highBitsMask = f.local(V128);
  /**
   * One input (generation): moving pointers into its values, scales and sums; two accumulators (sub-blocks 0-3 and
   * 4-7 of Q4_K/Q5_K, alternate groups of four of Q6_K) and, for Q4_K/Q5_K, the minimums' products (lane i:
   * sub-blocks i and 4 + i).
   */
  const single = {
    xp: f.local(I32),
    dp: f.local(I32),
    cp: f.local(I32),
    acc: [f.local(V128), f.local(V128)],
    minSum: f.local(V128),
  };

  /** The int16 weights `w16[from .. from + count)` times the int16 input values at `xp` + `offset`. */
  const dot16 = (xp: number, offset: number, from: number, count: number): Code => {
    let sum = i32x4Dot(get(w16[from]), vload(get(xp), offset + 16 * from));
    for (let i = from + 1; i < from + count; i++) {
      sum = i32x4Add(sum, i32x4Dot(get(w16[i]), vload(get(xp), offset + 16 * i)));
    }
    return sum;
  };
  /** Widens two vectors of 16 bytes (the block's weights in order) into `w16`, signed or unsigned. */
  const widen = (first: Code, second: Code, signed: boolean): Code[] => {
    const [lo, hi] = signed ? [i16x8ExtendLowS, i16x8ExtendHighS] : [i16x8ExtendLowU, i16x8ExtendHighU];
    return [
      set(w16[1], first),
      set(w16[3], second),
      set(w16[0], lo(get(w16[1]))),
      set(w16[1], hi(get(w16[1]))),
      set(w16[2], lo(get(w16[3]))),
      set(w16[3], hi(get(w16[3]))),
    ];
  };

  /**
   * The 12 scale bytes of a Q4_K/Q5_K super-block (llama.cpp's `get_scale_min_k4`) as `scales` and `mins`: sub-block
   * j < 4 has scale `b[j] & 63` and minimum `b[j + 4] & 63`; j >= 4 has scale `b[j + 4] & 15 | (b[j - 4] >> 6) << 4`
   * and minimum `b[j + 4] >> 4 | (b[j] >> 6) << 4`. Two shuffles put each lane's bytes in place (byte i: scale i,
   * byte 8 + i: minimum i), masks pick the bits, then the bytes are widened to floats and scaled by d and dmin.
   */
  const decodeScales = (pointer = bp, by = { d, dmin }, into = { scales, mins }): Code[] => {
    const [bytes, v] = [q[2], q[3]];
    const floats = (u16: number, half: number, by: number, into: number): Code =>
      set(into, f32x4Mul(f32x4FromI32((half ? i32x4ExtendHighU : i32x4ExtendLowU)(get(u16))), f32x4Splat(get(by))));
    return [
      ...scaleBytes(pointer, bytes, v),
      set(v, i16x8ExtendLowU(get(bytes))),
      set(bytes, i16x8ExtendHighU(get(bytes))),
      floats(v, 0, by.d, into.scales[0]),
      floats(v, 1, by.d, into.scales[1]),
      floats(bytes, 0, by.dmin, into.mins[0]),
      floats(bytes, 1, by.dmin, into.mins[1]),
    ];
  };
  /** The super-block at `pointer`'s scales and minimums as 16 bytes in `into` (see decodeScales), using `v`. */
  const scaleBytes = (pointer: number, into: number, v: number): Code[] => {
    // With relaxed SIMD the byte orders are swizzles by vectors kept in locals: one instruction each, where a
    // shuffle's immediate lanes are rebuilt in registers every time (four more).
    const [byHigh, byLow] = relaxed
      ? [relaxedSwizzle(get(v), get(highOrder)), relaxedSwizzle(get(v), get(lowOrder))]
      : [shuffle8(get(v), zero(), HIGH_ORDER), shuffle8(get(v), get(v), LOW_ORDER)];
    return [
      set(v, vload(get(pointer), 4)),
      set(into, byteBits(byHigh, 2, get(highBitsMask))),
      set(v, byLow),
      set(into, vor(get(into), vor(vand(get(v), get(lowBitsMask)), byteBits(get(v), 4, get(highNibbleMask))))),
    ];
  };
  /**
   * The sixteen 6-bit scales of the Q3_K super-block at `pointer` (12 bytes at byte 96), minus 32, as int8 in `into`:
   * llama.cpp's unpacking, per 32-bit word. Scales 4w .. 4w + 3 are the low nibbles (w = 0, 1) or high nibbles (w = 2,
   * 3) of bytes 0..3 or 4..7, with bits 2w and 2w + 1 of bytes 8..11 on top.
   */
  const decodeScales3 = (pointer: number, into: number): Code[] => {
    const [a0, a1, top] = scaleWords;
    const word = (nibbles: Code, shift: number): Code =>
      or(and(nibbles, i32(0x0f0f0f0f)), shl(and(shrU(get(top), i32(shift)), i32(0x03030303)), i32(4)));
    const words = [
      word(get(a0), 0),
      word(get(a1), 2),
      word(shrU(get(a0), i32(4)), 4),
      word(shrU(get(a1), i32(4)), 6),
    ];
    return [
      set(a0, iload(get(pointer), 96)),
      set(a1, iload(get(pointer), 100)),
      set(top, iload(get(pointer), 104)),
      set(into, words.slice(1).reduce((v, w, i) => i32x4ReplaceLane(v, i + 1, w), i32x4Splat(words[0]))),
      set(into, i8x16Sub(get(into), get(thirtyTwo))),
    ];
  };
  /** Lane `j % 4` of `vectors[j >> 2]` in every lane. */
  const laneOf = (vectors: number[], j: number): Code =>
    shuffle32(get(vectors[j >> 2]), get(vectors[j >> 2]), [j & 3, j & 3, j & 3, j & 3]);

  /**
   * Four inputs folded together: moving pointers into each input's values, and into the four inputs' scales, scaled
   * sums (Q4_K, Q5_K) and half sums (Q6_K) as vectors (XD4, XS4, XH4); one accumulator and one minimum sum (Q4_K,
   * Q5_K), lane i for input i.
   */
  const group = {
    xps: [f.local(I32), f.local(I32), f.local(I32), f.local(I32)],
    dp: f.local(I32),
    sp: f.local(I32),
    hp: f.local(I32),
    sums: [f.local(V128), f.local(V128), f.local(V128), f.local(V128)],
    acc: f.local(V128),
    min: f.local(V128),
  };
  const groupStride = f.local(I32);

  /**
   * One super-block of the row at `bp` against the input of `single`, or (`folded`) against the four inputs of
   * `group`, whose sums are folded into one vector per sub-block so that it is converted and scaled once.
   */
  const superBlockFor = (folded: boolean): Code[] => {
    const code: Code[] = [];
    if (type === "q4_k" || type === "q5_k") {
      // Q4_K: d, dmin, 12 scale bytes, 128 bytes of nibbles. Q5_K: the same with 32 bytes of fifth bits before the
      // nibbles (bit j of byte l: element l of sub-block j).
      const qs = type === "q4_k" ? 16 : 48;
      code.push(set(d, fload(shl(load16u(get(bp)), i32(2)), HALF_TABLE)));
      code.push(set(dmin, fload(shl(load16u(get(bp), 2), i32(2)), HALF_TABLE)));
      code.push(...decodeScales());
      if (type === "q5_k") code.push(set(q[4], vload(get(bp), 16)), set(q[5], vload(get(bp), 32)));
      // One input: its block product of sub-block j goes to sums[j % 4]; each four are folded into one vector.
      const input = single, sums = group.sums;
      for (let pair = 0; pair < 4; pair++) {
        // 32 bytes: sub-block 2·pair in the low nibbles, 2·pair + 1 in the high nibbles.
        code.push(set(q[0], vload(get(bp), qs + 32 * pair)), set(q[1], vload(get(bp), qs + 16 + 32 * pair)));
        for (let half = 0; half < 2; half++) {
          const j = 2 * pair + half;
          const nibble = (v: Code) => byteBits(v, 4 * half, get(low4));
          // Bit j of each qh byte, moved to bit 4.
          const fifthBit = (v: Code) => byteBits(v, j - 4, get(bit4));
          const weights = (i: number) =>
            type === "q4_k" ? nibble(get(q[i])) : vor(nibble(get(q[i])), fifthBit(get(q[4 + i])));
          if (int8x) code.push(set(w8[0], weights(0)), set(w8[1], weights(1)));
          else code.push(...widen(weights(0), weights(1), false));
          /** The decoded sub-block times the input values at `xp` (int16 lanes on the int8 path). */
          const product = (xp: number): Code =>
            int8x
              ? i16x8Add(
                relaxedDot(vload(get(xp), 32 * j), get(w8[0])),
                relaxedDot(vload(get(xp), 32 * j + 16), get(w8[1])),
              )
              : dot16(xp, 64 * j, 0, 4);
          // 5-bit weights could overflow a 16-bit fold: widened first.
          const widened = (sum: Code): Code => int8x && type === "q5_k" ? i32x4ExtaddPairwise(sum) : sum;
          const fold = (): Code[] => int8x && type === "q4_k" ? fold16(sums) : foldFour(sums);
          if (folded) {
            const { xps, dp, sp, acc, min } = group;
            for (let i = 0; i < 4; i++) code.push(set(sums[i], widened(product(xps[i]))));
            code.push(...fold());
            const scaled = f32x4Mul(vload(get(dp), 16 * j), laneOf(scales, j));
            code.push(set(acc, madd(f32x4FromI32(get(sums[0])), scaled, get(acc))));
            // The minimum times the four inputs' dx·Σqx (xs4).
            code.push(set(min, madd(laneOf(mins, j), vload(get(sp), 16 * j), get(min))));
            continue;
          }
          code.push(set(sums[j & 3], widened(product(input.xp))));
          if ((j & 3) !== 3) continue;
          // Sub-blocks 4h .. 4h + 3 folded into one vector (lane i: sub-block 4h + i), scaled by their scales and
          // the input's block scales (consecutive in xd) at once.
          const h = j >> 2;
          code.push(...fold());
          const dx = vload(get(input.dp), 16 * h);
          code.push(
            set(
              input.acc[h],
              f32x4Add(get(input.acc[h]), f32x4Mul(f32x4FromI32(get(sums[0])), f32x4Mul(dx, get(scales[h])))),
            ),
          );
          // The four blocks' -8·Σqx, lane 0 of each xc entry, side by side.
          const sumX = firstLanes([0, 1, 2, 3].map((i) => vload(get(input.cp), 16 * (4 * h + i))));
          code.push(
            set(input.minSum, f32x4Add(get(input.minSum), f32x4Mul(f32x4Mul(dx, get(mins[h])), f32x4FromI32(sumX)))),
          );
        }
      }
    } else {
      // Q6_K, Q3_K and Q2_K: sixteen sub-blocks of 16, each with a scale. Q6_K and Q3_K have signed scales and
      // unsigned levels with an offset (32, 4); Q2_K has unsigned scales and levels and a minimum per sub-block.
      const q3 = type === "q3_k", q2 = type === "q2_k", offset = q3 ? fours : thirtyTwo;
      code.push(set(d, fload(shl(load16u(get(bp), q2 ? 80 : q3 ? 108 : 208), i32(2)), HALF_TABLE)));
      if (q2) code.push(set(dmin, fload(shl(load16u(get(bp), 82), i32(2)), HALF_TABLE)));
      // Q3_K: hmask (32 bytes: bit 4h + plane of byte l is the third bit of element l of that plane's 32).
      if (q3) code.push(...decodeScales3(bp, scales3), set(q[4], vload(get(bp), 0)), set(q[5], vload(get(bp), 16)));
      for (let h = 0; h < 2; h++) {
        if (q3 || q2) {
          // qs: 32 bytes a half, 2 bits a plane (Q2_K's after its 16 scale bytes, Q3_K's after hmask).
          const qs = q2 ? 16 : 32;
          code.push(set(q[0], vload(get(bp), qs + 32 * h)), set(q[1], vload(get(bp), qs + 16 + 32 * h)));
        } else {
          // ql: 64 bytes (planes 0/2 in the first 32, 1/3 in the next; low then high nibbles); qh: 32 bytes, 2 bits
          // a plane.
          for (let i = 0; i < 4; i++) code.push(set(q[i], vload(get(bp), 64 * h + 16 * i)));
          code.push(set(q[4], vload(get(bp), 128 + 32 * h)), set(q[5], vload(get(bp), 144 + 32 * h)));
        }
        for (let plane = 0; plane < 4; plane++) {
          const low = (i: number) => byteBits(get(q[2 * (plane & 1) + i]), 4 * (plane >> 1), get(low4));
          // Bits 2·plane and 2·plane + 1 of each qh byte, moved to bits 4 and 5.
          const high = (i: number) => byteBits(get(q[4 + i]), 2 * plane - 4, get(bits45));
          // Q3_K: bits 2·plane and 2·plane + 1 of qs, and the hmask bit moved to bit 2.
          const levels3 = (i: number) =>
            vor(byteBits(get(q[i]), 2 * plane, get(low2)), byteBits(get(q[4 + i]), 4 * h + plane - 2, get(fours)));
          // The int8 path keeps q unsigned (0..63 or 0..7, the 7-bit operand) and takes offset·Σx off; int16 widens
          // q - offset.
          const levels = (i: number) =>
            q2 ? byteBits(get(q[i]), 2 * plane, get(low2)) : q3 ? levels3(i) : vor(low(i), high(i));
          const block = 4 * h + plane;
          if (int8x) code.push(set(w8[0], levels(0)), set(w8[1], levels(1)));
          else if (q2) code.push(...widen(levels(0), levels(1), false));
          else code.push(...widen(i8x16Sub(levels(0), get(offset)), i8x16Sub(levels(1), get(offset)), true));
          /**
           * Sub-block `half` of the plane times the input at `xp`: on the int8 path Σ x·q - Σ x·32 in int16 lanes
           * (each at most 2·32·127 in magnitude, so four of them fold at 16 bits), else an i32x4.
           */
          const product = (xp: number, half: number): Code => {
            if (!int8x) return dot16(xp, 64 * block, 2 * half, 2);
            const levelSums = relaxedDot(vload(get(xp), 32 * block + 16 * half), get(w8[half]));
            return q2
              ? levelSums
              : i16x8Sub(levelSums, relaxedDot(vload(get(xp), 32 * block + 16 * half), get(offset)));
          };
          const fold = (sums: number[]): Code[] => int8x ? fold16(sums) : foldFour(sums);
          // Bytes 0..15 and 16..31 of the plane are two sub-blocks of 16, each with its own scale: sub-blocks
          // 2·block and 2·block + 1 of the sixteen, taken four at a time (group k: sub-blocks 4k .. 4k + 3).
          for (let half = 0; half < 2; half++) {
            const sub = 2 * block + half, k = sub >> 2, lane = sub & 3;
            if (lane === 0) {
              // The sixteen int8 scales (Q6_K: at byte 192; Q2_K: the low nibbles of bytes 0..15, the minimums the
              // high ones), four of them widened to floats and times d (and dmin).
              const fourOf = (raw: Code) => {
                const wide = (k < 2 ? i16x8ExtendLowS : i16x8ExtendHighS)(raw);
                return f32x4FromI32((k & 1 ? i32x4ExtendHighS : i32x4ExtendLowS)(wide));
              };
              const raw = q2 ? vand(vload(get(bp), 0), get(low4)) : q3 ? get(scales3) : vload(get(bp), 192);
              code.push(set(groupScales, f32x4Mul(fourOf(raw), f32x4Splat(get(d)))));
              if (q2) {
                code.push(
                  set(groupMins, f32x4Mul(fourOf(byteBits(vload(get(bp), 0), 4, get(low4))), f32x4Splat(get(dmin)))),
                );
              }
            }
            if (folded) {
              const { xps, sums, dp, hp, acc } = group;
              if (int8x) {
                // Σ x·q for the unsigned levels, folded (Q6_K: widened after the first step, four lanes of up to
                // 2·63·127 would overflow 16 bits; Q3_K's 2·7·127 do not), minus the four inputs' 32·Σx of this half
                // block (xh4; Q3_K: an eighth of it, 4·Σx).
                for (let i = 0; i < 4; i++) {
                  code.push(set(sums[i], relaxedDot(vload(get(xps[i]), 32 * block + 16 * half), get(w8[half]))));
                }
                const offsetSums = vload(get(hp), 32 * block + 16 * half);
                if (q2) code.push(...fold16(sums));
                else {
                  code.push(
                    ...(q3 ? fold16(sums) : foldWide16(sums)),
                    set(sums[0], i32x4Sub(get(sums[0]), q3 ? i32x4ShrS(offsetSums, i32(3)) : offsetSums)),
                  );
                }
              } else {
                for (let i = 0; i < 4; i++) code.push(set(sums[i], product(xps[i], half)));
                code.push(...fold(sums));
              }
              const scales = f32x4Mul(vload(get(dp), 16 * block), laneOf([groupScales], lane));
              code.push(set(acc, madd(f32x4FromI32(get(sums[0])), scales, get(acc))));
              if (q2) {
                // The minimum times the four inputs' dx·Σq of this half block (xh4 holds 32·Σq: exact over 32).
                const sumsX = f32x4Mul(f32x4FromI32(vload(get(hp), 32 * block + 16 * half)), f32x4Splat(f32(1 / 32)));
                const byMin = f32x4Mul(vload(get(dp), 16 * block), laneOf([groupMins], lane));
                code.push(set(group.min, madd(sumsX, byMin, get(group.min))));
              }
              continue;
            }
            // One input: the four sub-blocks' sums folded into one vector, scaled by their scales and by their
            // blocks' input scales (two sub-blocks per block of 32).
            const input = single, { sums } = group;
            code.push(set(sums[lane], product(input.xp, half)));
            if (lane !== 3) continue;
            code.push(...fold(sums));
            const dx = vload(get(input.dp), 16 * (k >> 1)), first = 2 * (k & 1);
            const dxPairs = shuffle32(dx, dx, [first, first, first + 1, first + 1]);
            const scales = f32x4Mul(get(groupScales), dxPairs);
            code.push(
              set(input.acc[k & 1], f32x4Add(get(input.acc[k & 1]), f32x4Mul(f32x4FromI32(get(sums[0])), scales))),
            );
            if (q2) {
              // The four sub-blocks' minimums times their input sums: the half sums Σq₀, Σq₁ (lanes 1 and 2 of xc) of
              // blocks 2k and 2k + 1, times dx.
              const xc = (i: number) => vload(get(input.cp), 16 * i);
              const sumsX = f32x4FromI32(shuffle32(xc(2 * k), xc(2 * k + 1), [1, 2, 5, 6]));
              code.push(set(input.minSum, madd(sumsX, f32x4Mul(get(groupMins), dxPairs), get(input.minSum))));
            }
          }
        }
      }
    }
    return code;
  };

  /**
   * Four rows' 16 bytes each (in `rows`) transposed into `into` (which may be `rows`): byte 4s + i of `into[s >> 2]`
   * is byte s of row i. Rows 0 and 1 are interleaved byte by byte into `temps` (rows 2 and 3 likewise), then the two
   * by pairs.
   */
  const transposeBytes = (rows: number[], temps: number[], into: number[]): Code[] => {
    const interleave = (a: number, b: number, from: number): Code =>
      shuffle8(get(a), get(b), Array.from({ length: 16 }, (_, i) => from + (i >> 1) + 16 * (i & 1)));
    const pairsOf = (a: number, b: number, from: number): Code =>
      shuffle8(
        get(a),
        get(b),
        Array.from({ length: 16 }, (_, i) => from + 2 * (i >> 2) + (i & 1) + 16 * ((i >> 1) & 1)),
      );
    return [
      set(temps[0], interleave(rows[0], rows[1], 0)),
      set(temps[1], interleave(rows[2], rows[3], 0)),
      set(temps[2], interleave(rows[0], rows[1], 8)),
      set(temps[3], interleave(rows[2], rows[3], 8)),
      set(into[0], pairsOf(temps[0], temps[1], 0)),
      set(into[1], pairsOf(temps[0], temps[1], 8)),
      set(into[2], pairsOf(temps[2], temps[3], 0)),
      set(into[3], pairsOf(temps[2], temps[3], 8)),
    ];
  };

  /**
   * Q4_K/Q5_K generation on the int8 path: four rows against one input, each input sub-block loaded once for the
   * four. Per sub-block the four rows' products are folded into one vector (lane i: row i), so the scales go
   * transposed: the rows' scale bytes are interleaved into one vector per four sub-blocks (byte 4j + i: row i's
   * scale of sub-block j), widened per sub-block to int32 and multiplied in. The input has one scale per super-block
   * (see `quantize`), so its sums stay integers until the super-block's end, where the rows' d and dmin and the input's
   * scale come in; the minimums' term (each row's eight minimums against the input's eight block sums) is one 16-bit
   * dot product per row and super-block.
   */
  const fourRows = {
    pointers: [f.local(I32), f.local(I32), f.local(I32), f.local(I32)],
    xp: f.local(I32),
    dp: f.local(I32),
    cp: f.local(I32),
    // Per row: its 16 scale and minimum bytes (then reused for the transposition).
    bytes: [f.local(V128), f.local(V128), f.local(V128), f.local(V128)],
    // Scratch for the transposition (temps[0] also for dotRows6's offsets).
    temps: [f.local(V128), f.local(V128), f.local(V128), f.local(V128)],
    x: [f.local(V128), f.local(V128)],
    products: [f.local(V128), f.local(V128), f.local(V128), f.local(V128)],
    acc: f.local(V128),
    minSum: f.local(V128),
    // This super-block's int32 sums (lane i: row i), before the scales that only come in at its end.
    blockAcc: f.local(V128),
    blockMin: f.local(V128),
  };
  /**
   * The four-row generation paths' loop: pointers into input t (its values, scales and xc) and into the four rows,
   * accumulators cleared, then `superBlock` once per super-block.
   */
  const fourRowLoop = (rows: number[], t: number, superBlock: Code[]): Code => {
    const { pointers, xp, dp, cp, acc, minSum } = fourRows;
    return [
      ...set(xp, add(get(X), mul(get(t), get(COLS)))),
      ...set(dp, add(get(XD), mul(get(t), shl(get(blocks), i32(5))))),
      ...set(cp, add(get(XC), mul(get(t), shl(get(blocks), i32(7))))),
      ...rows.flatMap((row, i) => set(pointers[i], get(row))),
      ...set(acc, zero()),
      ...set(minSum, zero()),
      ...set(b, i32(0)),
      ...whileLoop(
        ltU(get(b), get(blocks)),
        ...superBlock,
        set(b, add(get(b), i32(1))),
        ...pointers.map((pointer) => set(pointer, add(get(pointer), i32(blockBytes)))),
        set(xp, add(get(xp), i32(256))),
        set(dp, add(get(dp), i32(32))),
        set(cp, add(get(cp), i32(128))),
      ),
    ];
  };
  /** The input's xc entry of block j of the super-block (see `quantize`). */
  const inputSums = (j: number): Code => vload(get(fourRows.cp), 16 * j);
  /**
   * The four rows' halves at byte `at` (d or dmin) as one vector, from the half table: once per super-block, and
   * {@link fourHalves} measured slower here (Q4_K -17-27%, Q6_K -8-19% at one input; these loops spill already).
   */
  const sideBySide = (at: number): Code =>
    f32x4Of(fourRows.pointers.map((pointer) => fload(shl(load16u(get(pointer), at), i32(2)), HALF_TABLE)));
  /** `sums` (int32, lane i: row i) times the rows' halves at byte `at` and the input's scale, added to `into`. */
  const scaledInto = (into: number, sums: number, at: number): Code =>
    set(into, madd(f32x4FromI32(get(sums)), f32x4Mul(sideBySide(at), f32x4Splat(fload(get(fourRows.dp)))), get(into)));
  const dotRows = (rows: number[], t: number, results: number[]): Code => {
    const { pointers, xp, bytes, temps, x, products, acc, minSum } = fourRows;
    const { blockAcc, blockMin } = fourRows;
    const qs = type === "q4_k" ? 16 : 48;
    /** Bytes 4j .. 4j + 3 of `vectors[j >> 2]` (sub-block j of the four rows) as int32. */
    const intsOf = (vectors: number[], j: number): Code => {
      const wide = (j & 2 ? i16x8ExtendHighU : i16x8ExtendLowU)(get(vectors[j >> 2]));
      return (j & 1 ? i32x4ExtendHighU : i32x4ExtendLowU)(wide);
    };
    // The input's eight -8·Σq (lane 0 of each xc entry) as int16: at most 8·32·127, so they fit.
    const fourSums = (j: number) => firstLanes([0, 1, 2, 3].map((i) => inputSums(j + i)));
    const superBlock: Code[] = [
      set(blockAcc, zero()),
      ...pointers.flatMap((pointer, i) => scaleBytes(pointer, bytes[i], temps[0])),
      set(x[0], i16x8Narrow(fourSums(0), fourSums(4))),
      // Each row's minimums (bytes 8-15) against them, folded into one vector (lane i: row i).
      ...bytes.map((v, i) => set(products[i], i32x4Dot(i16x8ExtendHighU(get(v)), get(x[0])))),
      ...foldFour(products),
      set(blockMin, get(products[0])),
      ...transposeBytes(bytes, temps, bytes),
    ];
    const sT = [bytes[0], bytes[1]];
    for (let j = 0; j < 8; j++) {
      const pair = j >> 1, shift = 4 * (j & 1);
      superBlock.push(set(x[0], vload(get(xp), 32 * j)), set(x[1], vload(get(xp), 32 * j + 16)));
      for (let i = 0; i < 4; i++) {
        const weights = (k: number): Code => {
          const nibble = byteBits(vload(get(pointers[i]), qs + 32 * pair + 16 * k), shift, get(low4));
          return type === "q4_k"
            ? nibble
            : vor(nibble, byteBits(vload(get(pointers[i]), 16 + 16 * k), j - 4, get(bit4)));
        };
        const product = i16x8Add(relaxedDot(get(x[0]), weights(0)), relaxedDot(get(x[1]), weights(1)));
        // 5-bit weights could overflow a 16-bit fold: widened first.
        superBlock.push(set(products[i], type === "q5_k" ? i32x4ExtaddPairwise(product) : product));
      }
      superBlock.push(...(type === "q4_k" ? fold16(products) : foldFour(products)));
      // Times the rows' scales of the sub-block (at most 63: the super-block's sums stay below 2^26).
      superBlock.push(set(blockAcc, i32x4Add(get(blockAcc), i32x4Mul(get(products[0]), intsOf(sT, j)))));
    }
    superBlock.push(scaledInto(acc, blockAcc, 0), scaledInto(minSum, blockMin, 2));
    return [
      ...fourRowLoop(rows, t, superBlock),
      // The minimum terms used -8·Σqx: each is -1/8 of its sum.
      ...results.flatMap((result, i) =>
        set(result, fadd(f32x4Lane(get(acc), i), fmul(f32x4Lane(get(minSum), i), f32(0.125))))
      ),
    ];
  };

  /**
   * Q6_K, Q3_K and Q2_K generation on the int8 path: four rows against one input, as dotRows does for Q4_K. Per
   * sub-block of 16 the rows' products (unsigned levels, minus the input's 32·Σx or 4·Σx, made once for the four: that
   * keeps the 16-bit fold from overflowing) are folded into one vector (lane i: row i) and multiplied by the rows'
   * int8 scales, transposed per super-block like dotRows' scale bytes. Q2_K's minimums against the input's sixteen
   * half-block sums are two 16-bit dot products per row and super-block.
   */
  const dotRows6 = (rows: number[], t: number, results: number[]): Code => {
    const { pointers, xp, bytes, temps, x, products, acc, blockAcc, minSum, blockMin } = fourRows;
    /** Bytes 4s .. 4s + 3 of `bytes[s >> 2]` (sub-block s of the four rows: signed scales) as int32. */
    const scalesOf = (s: number): Code => {
      const wide = (s & 2 ? i16x8ExtendHighS : i16x8ExtendLowS)(get(bytes[s >> 2]));
      return (s & 1 ? i32x4ExtendHighS : i32x4ExtendLowS)(wide);
    };
    const q3 = type === "q3_k", q2 = type === "q2_k", offset = q3 ? fours : thirtyTwo;
    const superBlock: Code[] = [set(blockAcc, zero())];
    if (q2) {
      // The input's sixteen half sums (lanes 1 and 2 of each xc entry) as int16, in x[0] (0-7) and x[1] (8-15); each
      // row's minimums (the high nibbles of bytes 0..15) against them, folded into one vector (lane i: row i).
      const halfSums = (j: number) => shuffle32(inputSums(j), inputSums(j + 1), [1, 2, 5, 6]);
      superBlock.push(
        set(x[0], i16x8Narrow(halfSums(0), halfSums(2))),
        set(x[1], i16x8Narrow(halfSums(4), halfSums(6))),
        ...pointers.flatMap((pointer, i) => [
          set(products[i], byteBits(vload(get(pointer)), 4, get(low4))),
          set(
            products[i],
            i32x4Add(
              i32x4Dot(i16x8ExtendLowU(get(products[i])), get(x[0])),
              i32x4Dot(i16x8ExtendHighU(get(products[i])), get(x[1])),
            ),
          ),
        ]),
        ...foldFour(products),
        set(blockMin, get(products[0])),
      );
    }
    superBlock.push(
      // Each row's sixteen scales, transposed: bytes 4s .. 4s + 3 of bytes[s >> 2] are the rows' scales of sub-block s.
      // Q2_K: the low nibbles of bytes 0..15.
      ...pointers.flatMap((pointer, i): Code[] =>
        q2
          ? [set(products[i], vand(vload(get(pointer)), get(low4)))]
          : q3
          ? decodeScales3(pointer, products[i])
          : [set(products[i], vload(get(pointer), 192))]
      ),
      ...transposeBytes(products, temps, bytes),
    );
    for (let h = 0; h < 2; h++) {
      for (let plane = 0; plane < 4; plane++) {
        const block = 4 * h + plane;
        superBlock.push(set(x[0], vload(get(xp), 32 * block)), set(x[1], vload(get(xp), 32 * block + 16)));
        for (let half = 0; half < 2; half++) {
          // The input's 32·Σx (Q3_K: 4·Σx) of this sub-block, in int16 pairs (the same for the four rows).
          const offsets = temps[0];
          if (!q2) superBlock.push(set(offsets, relaxedDot(get(x[half]), get(offset))));
          for (let i = 0; i < 4; i++) {
            if (q2) {
              // qs at byte 16, 2 bits a plane; no offset.
              const levels = byteBits(vload(get(pointers[i]), 16 + 32 * h + 16 * half), 2 * plane, get(low2));
              superBlock.push(set(products[i], relaxedDot(get(x[half]), levels)));
              continue;
            }
            if (q3) {
              // qs at byte 32, 2 bits a plane; hmask's bit 4h + plane moved to bit 2.
              const low = byteBits(vload(get(pointers[i]), 32 + 32 * h + 16 * half), 2 * plane, get(low2));
              const third = byteBits(vload(get(pointers[i]), 16 * half), 4 * h + plane - 2, get(fours));
              superBlock.push(set(products[i], i16x8Sub(relaxedDot(get(x[half]), vor(low, third)), get(offsets))));
              continue;
            }
            // ql: 64 bytes a half (planes 0/2 in the first 32, 1/3 in the next; low then high nibbles); qh: 32
            // bytes, bits 2·plane and 2·plane + 1 of each.
            const low = byteBits(
              vload(get(pointers[i]), 64 * h + 32 * (plane & 1) + 16 * half),
              4 * (plane >> 1),
              get(low4),
            );
            const high = byteBits(vload(get(pointers[i]), 128 + 32 * h + 16 * half), 2 * plane - 4, get(bits45));
            const levels = vor(low, high);
            superBlock.push(set(products[i], i16x8Sub(relaxedDot(get(x[half]), levels), get(offsets))));
          }
          superBlock.push(...fold16(products));
          // Times the rows' scales of the sub-block (at most 128 in magnitude: the sums stay below 2^28).
          const sub = 2 * block + half;
          superBlock.push(set(blockAcc, i32x4Add(get(blockAcc), i32x4Mul(get(products[0]), scalesOf(sub)))));
        }
      }
    }
    // The rows' d (and Q2_K's dmin), side by side, and the input's scale.
    superBlock.push(scaledInto(acc, blockAcc, q2 ? 80 : q3 ? 108 : 208));
    if (q2) superBlock.push(scaledInto(minSum, blockMin, 82));
    return [
      ...fourRowLoop(rows, t, superBlock),
      ...results.flatMap((result, i) =>
        set(result, q2 ? fsub(f32x4Lane(get(acc), i), f32x4Lane(get(minSum), i)) : f32x4Lane(get(acc), i))
      ),
    ];
  };

  /** The row at `row` against input t, into `results[0]`. */
  const dotOne = (row: number, t: number, results: number[]): Code => [
    ...set(single.xp, add(get(X), mul(get(t), mul(get(COLS), i32(xBytes))))),
    ...set(single.dp, add(get(XD), mul(get(t), shl(get(blocks), i32(5))))),
    ...set(single.cp, add(get(XC), mul(get(t), shl(get(blocks), i32(7))))),
    ...[...single.acc, single.minSum].flatMap((a) => set(a, zero())),
    ...set(bp, get(row)),
    ...set(b, i32(0)),
    ...whileLoop(
      ltU(get(b), get(blocks)),
      ...superBlockFor(false),
      set(b, add(get(b), i32(1))),
      set(bp, add(get(bp), i32(blockBytes))),
      set(single.xp, add(get(single.xp), i32(256 * xBytes))),
      set(single.dp, add(get(single.dp), i32(32))),
      set(single.cp, add(get(single.cp), i32(128))),
    ),
    // Q4_K, Q5_K: the minimums' products used -8·Σqx, so the minimum term is -Σ/8; Q2_K's used Σqx; Q6_K and Q3_K
    // have none.
    ...set(
      results[0],
      type === "q6_k" || type === "q3_k"
        ? hsum2(single.acc[0], single.acc[1])
        : type === "q2_k"
        ? fsub(hsum2(single.acc[0], single.acc[1]), hsum(single.minSum))
        : fadd(hsum2(single.acc[0], single.acc[1]), fmul(hsum(single.minSum), f32(0.125))),
    ),
  ];
  /** The row at `row` against inputs t .. t + 3, folded, into `results`. */
  const dotFolded = (row: number, t: number, results: number[]): Code => [
    ...set(group.xps[0], add(get(X), mul(get(t), mul(get(COLS), i32(xBytes))))),
    ...[1, 2, 3].flatMap((i) => set(group.xps[i], add(get(group.xps[i - 1]), mul(get(COLS), i32(xBytes))))),
    ...set(group.dp, add(get(XD4), mul(shrU(get(t), i32(2)), get(groupStride)))),
    ...set(group.sp, add(get(XS4), mul(shrU(get(t), i32(2)), get(groupStride)))),
    ...set(group.hp, add(get(XH4), mul(shrU(get(t), i32(2)), shl(get(groupStride), i32(1))))),
    ...set(group.acc, zero()),
    ...set(group.min, zero()),
    ...set(bp, get(row)),
    ...set(b, i32(0)),
    ...whileLoop(
      ltU(get(b), get(blocks)),
      ...superBlockFor(true),
      set(b, add(get(b), i32(1))),
      set(bp, add(get(bp), i32(blockBytes))),
      ...group.xps.map((p) => set(p, add(get(p), i32(256 * xBytes)))),
      // Eight blocks of 32 a super-block, 16 bytes each in XD4 and XS4, 32 in XH4.
      set(group.dp, add(get(group.dp), i32(128))),
      set(group.sp, add(get(group.sp), i32(128))),
      set(group.hp, add(get(group.hp), i32(256))),
    ),
    ...results.flatMap((result, i) => set(result, fsub(f32x4Lane(get(group.acc), i), f32x4Lane(get(group.min), i)))),
  ];
  const dot = (k: number, row: number, t: number, results: number[]): Code =>
    k === 4 ? dotFolded(row, t, results) : dotOne(row, t, results);

  /**
   * K-quant prompts on the int8 path: two rows against eight inputs, the inputs in lanes (`XT`, as for Q4_0). Their
   * inputs have one scale per super-block (`quantize`'s span of 8), so a super-block's products are summed in
   * integers and scaled once, by the row's d times the four inputs' scales (XD4). Per sub-block and chunk of four
   * values, one 8-bit dot product of each group's input vector with four of a row's weights splatted; before the
   * int16 sums could overflow, `i32x4.dot_i16x8_s` multiplies them by the sub-block's scale (in both halves of a
   * 32-bit lane) into the row's int32 sums. The terms that do not depend on the levels (Q4_K's, Q5_K's and Q2_K's
   * minimums, Q6_K's offset of 32 and Q3_K's of 4) are the row's minimums or scales against the inputs' half-block
   * sums (XP4, int16 pairs), taken once per super-block before its levels.
   */
  const octet = {
    rows: [f.local(I32), f.local(I32)],
    xt: [f.local(I32), f.local(I32)],
    dp: [f.local(I32), f.local(I32)],
    pp: [f.local(I32), f.local(I32)],
    d: [f.local(F32), f.local(F32)],
    dmin: [f.local(F32), f.local(F32)],
    weights: [[f.local(V128), f.local(V128)], [f.local(V128), f.local(V128)]],
    sums: [f.local(V128), f.local(V128), f.local(V128), f.local(V128)],
    // Q5_K: the sums of a sub-block's first four chunks (eight of its 5-bit products would overflow 16 bits).
    firstSums: [f.local(V128), f.local(V128), f.local(V128), f.local(V128)],
    // The super-block's int32 sums, lane j: input 4g + j of row i (index 2i + g).
    acc: [f.local(V128), f.local(V128), f.local(V128), f.local(V128)],
    x: [f.local(V128), f.local(V128)],
    splat: f.local(V128),
    qs: [f.local(I32), f.local(I32)],
    qh: [f.local(I32), f.local(I32)],
    half: f.local(I32),
    laneScale: f.local(V128),
    // Per row, its sub-blocks' scales as int16 pairs (lane j of vector v: sub-block 4v + j's), and the current
    // half's (two vectors: sub-blocks 0-7 of Q6_K's, Q3_K's and Q2_K's sixteen; one: 0-3 of Q4_K's and Q5_K's eight).
    scalePairs: [[0, 1, 2, 3].map(() => f.local(V128)), [0, 1, 2, 3].map(() => f.local(V128))],
    current: [[f.local(V128), f.local(V128)], [f.local(V128), f.local(V128)]],
    // Per row, its minimums or scales as int16 (8 a vector, see levelFree), for the level-free terms.
    terms: [[f.local(V128), f.local(V128)], [f.local(V128), f.local(V128)]],
    fifthBits: [[f.local(V128), f.local(V128)], [f.local(V128), f.local(V128)]],
  };
  /**
   * The eight-input paths' loop: pointers into the two groups' interleaved inputs, scales (XD4) and half sums (XP4)
   * and into the two rows, results cleared, then per super-block `superBlock`, `half` twice (pointers moved on by
   * `half`), and its int32 sums (`octet.acc`) scaled into the results.
   */
  const octetLoop = (rows: number[], t: number, outs: number[], superBlock: Code[], half: Code[]): Code[] => [
    ...twoGroups(octet.xt, add(get(XT), mul(get(t), get(COLS))), shl(get(COLS), i32(2))),
    ...twoGroups(octet.dp, add(get(XD4), mul(shrU(get(t), i32(2)), get(groupStride))), get(groupStride)),
    ...twoGroups(octet.pp, add(get(XP4), mul(shrU(get(t), i32(2)), get(groupStride))), get(groupStride)),
    ...rows.slice(0, 2).map((row, i) => set(octet.rows[i], get(row))),
    ...outs.map((out) => set(out, zero())),
    set(b, i32(0)),
    whileLoop(
      ltU(get(b), get(blocks)),
      ...superBlock,
      set(octet.half, i32(0)),
      whileLoop(ltU(get(octet.half), i32(2)), ...half),
      // The super-block's sums, times the row's d and the inputs' scales (the same for its eight blocks).
      ...[0, 1].flatMap((i) => [
        set(octet.laneScale, f32x4Splat(get(octet.d[i]))),
        ...[0, 1].map((g) =>
          set(
            outs[2 * i + g],
            madd(
              f32x4FromI32(get(octet.acc[2 * i + g])),
              f32x4Mul(vload(get(octet.dp[g])), get(octet.laneScale)),
              get(outs[2 * i + g]),
            ),
          )
        ),
      ]),
      set(b, add(get(b), i32(1))),
      ...octet.rows.map((pointer) => set(pointer, add(get(pointer), i32(blockBytes)))),
      // Eight blocks of 32 a super-block, 16 bytes each in XD4 and XP4.
      ...[...octet.dp, ...octet.pp].map((pointer) => set(pointer, add(get(pointer), i32(128)))),
    ),
  ];
  /**
   * Both rows' `terms` (int16, 16 per row in two vectors: one per half sum of each block of 32; Q4_K's and Q5_K's per
   * sub-block of 32, twice) against the two groups' sixteen half-block sums, each vector of XP4 loaded once for both:
   * per row and group one int32 vector (lane j: input 4g + j), passed to `use`.
   */
  const levelFree = (use: (i: number, g: number, sums: Code) => Code[]): Code[] =>
    [0, 1].flatMap((g) => {
      const code: Code[] = [], [from, sums] = [octet.x[0], [octet.sums[0], octet.sums[1]]];
      for (let p = 0; p < 8; p++) {
        // Half sums 2p and 2p + 1 of each input, against terms 2p and 2p + 1 (lane p % 4 of terms[i][p >> 2]).
        code.push(set(from, vload(get(octet.pp[g]), 16 * p)));
        for (let i = 0; i < 2; i++) {
          const product = i32x4Dot(get(from), splatLane(octet.terms[i][p >> 2], p & 3));
          code.push(set(sums[i], p === 0 ? product : i32x4Add(get(sums[i]), product)));
        }
      }
      return [...code, ...[0, 1].flatMap((i) => use(i, g, get(sums[i])))];
    });
  /** Row i's minimum term, `sums` times -dmin and the inputs' scales, into its results for group g. */
  const minimumInto = (outs: number[], i: number, g: number, sums: Code): Code[] => [
    set(
      outs[2 * i + g],
      madd(
        f32x4FromI32(sums),
        f32x4Mul(vload(get(octet.dp[g])), f32x4Splat(op(0x8c)(get(octet.dmin[i])))),
        get(outs[2 * i + g]),
      ),
    ),
  ];
  /** int16 lanes 0-3 (`high`: 4-7) of `v`, each as a pair: 32-bit lane j holds lane j (4 + j) twice. */
  const wordPairs = (v: number, high: boolean): Code =>
    shuffle8(
      get(v),
      get(v),
      Array.from({ length: 16 }, (_, i) => 2 * ((i >> 2) + (high ? 4 : 0)) + (i & 1) + (i & 2 ? 16 : 0)),
    );
  const dotOctet = (rows: number[], t: number, outs: number[]): Code => {
    const { xt, sums, firstSums, acc, x, splat, weights, scalePairs, current, terms, fifthBits } = octet;
    const qs = type === "q4_k" ? 16 : 48;
    // Per super-block: each row's scales and minimums, their minimum terms, then two halves of four sub-blocks (one
    // loop step each, so the loop's code stays within the CPU's decoded-instruction cache).
    const superBlock: Code[] = [];
    for (let i = 0; i < 2; i++) {
      const pointer = octet.rows[i], [bytes, v] = [octet.splat, octet.laneScale];
      superBlock.push(
        set(octet.d[i], fload(shl(load16u(get(pointer)), i32(2)), HALF_TABLE)),
        set(octet.dmin[i], fload(shl(load16u(get(pointer), 2), i32(2)), HALF_TABLE)),
        // Bytes 0-7: the eight scales; 8-15: the eight minimums (see decodeScales).
        ...scaleBytes(pointer, bytes, v),
        set(v, i16x8ExtendLowU(get(bytes))),
        set(scalePairs[i][0], wordPairs(v, false)),
        set(scalePairs[i][1], wordPairs(v, true)),
        set(current[i][0], get(scalePairs[i][0])),
        set(v, i16x8ExtendHighU(get(bytes))),
        set(terms[i][0], wordPairs(v, false)),
        set(terms[i][1], wordPairs(v, true)),
        ...(type === "q5_k" ? [0, 1].map((v) => set(fifthBits[i][v], vload(get(pointer), 16 + 16 * v))) : []),
        set(octet.qs[i], add(get(pointer), i32(qs))),
      );
    }
    superBlock.push(...levelFree((i, g, sums) => minimumInto(outs, i, g, sums)), ...acc.map((sum) => set(sum, zero())));
    const half: Code[] = [];
    for (let j = 0; j < 4; j++) {
      // Sub-block j of the half: the low (even j) or high nibbles of 32 bytes, and Q5_K's bit j of its fifth bits
      // (shifted down by four for the second half).
      const pair = j >> 1, shift = 4 * (j & 1);
      for (let i = 0; i < 2; i++) {
        for (let v = 0; v < 2; v++) {
          const nibble = byteBits(vload(get(octet.qs[i]), 32 * pair + 16 * v), shift, get(low4));
          half.push(
            set(
              weights[i][v],
              type === "q4_k" ? nibble : vor(nibble, byteBits(get(fifthBits[i][v]), j - 4, get(bit4))),
            ),
          );
        }
      }
      for (let c = 0; c < 8; c++) {
        for (let g = 0; g < 2; g++) half.push(set(x[g], vload(get(xt[g]), 128 * j + 16 * c)));
        for (let i = 0; i < 2; i++) {
          half.push(set(splat, splatLane(weights[i][c >> 2], c & 3)));
          for (let g = 0; g < 2; g++) {
            const product = relaxedDot(get(x[g]), get(splat));
            const sum = sums[2 * i + g];
            half.push(set(sum, c === 0 || (type === "q5_k" && c === 4) ? product : i16x8Add(get(sum), product)));
          }
        }
        if (type === "q5_k" && c === 3) half.push(...sums.map((sum, k) => set(firstSums[k], get(sum))));
      }
      // Times the sub-block's scale (at most 63), into int32.
      for (let i = 0; i < 2; i++) {
        half.push(set(octet.laneScale, splatLane(current[i][0], j)));
        for (let g = 0; g < 2; g++) {
          const k = 2 * i + g;
          const scaled = (from: number) => i32x4Dot(get(from), get(octet.laneScale));
          const products = type === "q5_k" ? i32x4Add(scaled(sums[k]), scaled(firstSums[k])) : scaled(sums[k]);
          half.push(set(acc[k], i32x4Add(get(acc[k]), products)));
        }
      }
    }
    // On to the second half: the next 64 bytes of nibbles, four blocks of inputs (512 bytes of each group's), the
    // upper scales, the fifth bits' upper four.
    half.push(
      ...octet.qs.map((p) => set(p, add(get(p), i32(64)))),
      ...xt.map((p) => set(p, add(get(p), i32(512)))),
      ...[0, 1].flatMap((i) => [
        set(current[i][0], get(scalePairs[i][1])),
        ...(type === "q5_k" ? [0, 1].map((v) => set(fifthBits[i][v], i16x8ShrU(get(fifthBits[i][v]), i32(4)))) : []),
      ]),
      set(octet.half, add(get(octet.half), i32(1))),
    );
    return octetLoop(rows, t, outs, superBlock, half).flat();
  };
  /**
   * Q6_K, Q3_K and Q2_K prompts on the int8 path, the same way: per block of 32 (two sub-blocks of 16 with their own
   * scales), the unsigned levels (Q6_K's 0..63) against the inputs in lanes, two chunks at a time in int16 (two
   * products of up to 2·63·127 fit, four would not), then times the sub-block's scale into int32. The super-block's
   * sums start from minus 32 (Q3_K: 4) times the scales against the half-block sums; Q2_K's minimums against the
   * same sums are taken off its results.
   */
  const dotOctet6 = (rows: number[], t: number, outs: number[]): Code => {
    const { xt, sums, acc, x, splat, weights, scalePairs, current, terms } = octet;
    const q3 = type === "q3_k", q2 = type === "q2_k";
    const superBlock: Code[] = [];
    const dAt = q2 ? 80 : q3 ? 108 : 208;
    /** Sixteen int8 values (Q2_K's unsigned) as int16 in row i's `terms`. */
    const widened = (i: number, raw: Code): Code[] => [
      set(octet.laneScale, raw),
      set(terms[i][0], (q2 ? i16x8ExtendLowU : i16x8ExtendLowS)(get(octet.laneScale))),
      set(terms[i][1], (q2 ? i16x8ExtendHighU : i16x8ExtendHighS)(get(octet.laneScale))),
    ];
    for (let i = 0; i < 2; i++) {
      const pointer = octet.rows[i];
      superBlock.push(set(octet.d[i], fload(shl(load16u(get(pointer), dAt), i32(2)), HALF_TABLE)));
      // The sixteen int8 scales: Q6_K's at byte 192, Q3_K's unpacked (into laneScale), Q2_K's the low nibbles of
      // bytes 0..15 (its minimums the high ones).
      if (q3) superBlock.push(...decodeScales3(pointer, octet.laneScale));
      const raw = q2 ? vand(vload(get(pointer)), get(low4)) : q3 ? get(octet.laneScale) : vload(get(pointer), 192);
      superBlock.push(...widened(i, raw));
      for (let v = 0; v < 4; v++) superBlock.push(set(scalePairs[i][v], wordPairs(terms[i][v >> 1], (v & 1) === 1)));
      superBlock.push(set(current[i][0], get(scalePairs[i][0])), set(current[i][1], get(scalePairs[i][1])));
      if (q2) {
        superBlock.push(
          set(octet.dmin[i], fload(shl(load16u(get(pointer), 82), i32(2)), HALF_TABLE)),
          ...widened(i, byteBits(vload(get(pointer)), 4, get(low4))),
        );
      }
      superBlock.push(
        // Q3_K: qs at 32 (32 bytes a half), hmask at 0 (the same 32 bytes for both halves, bit 4·half + plane).
        // Q2_K: qs at 16.
        set(octet.qs[i], q2 ? add(get(pointer), i32(16)) : q3 ? add(get(pointer), i32(32)) : get(pointer)),
        set(octet.qh[i], q3 ? get(pointer) : add(get(pointer), i32(128))),
      );
    }
    superBlock.push(
      ...(q2
        // The minimums against the half sums, taken off the results; the levels' sums start from zero.
        ? [...levelFree((i, g, sums) => minimumInto(outs, i, g, sums)), ...acc.map((sum) => set(sum, zero()))]
        // The levels' sums start from minus the offset (32, Q3_K's 4) times Σ scale·Σx over the sub-blocks.
        : levelFree((i, g, sums) => [set(acc[2 * i + g], i32x4Sub(zero(), i32x4Shl(sums, i32(q3 ? 2 : 5))))])),
    );
    const half: Code[] = [];
    for (let plane = 0; plane < 4; plane++) {
      // Block `plane` of the half: ql's low or high nibbles (planes 0/2 in its first 32 bytes, 1/3 in the next), qh's
      // bits 2·plane and 2·plane + 1 (qh: 32 bytes a half, at 128). Q3_K: qs's bits 2·plane and 2·plane + 1, and
      // hmask's bit 4·half + plane (a shift by the loop's half) moved to bit 2.
      for (let i = 0; i < 2; i++) {
        for (let v = 0; v < 2; v++) {
          if (q2) {
            half.push(set(weights[i][v], byteBits(vload(get(octet.qs[i]), 16 * v), 2 * plane, get(low2))));
            continue;
          }
          if (q3) {
            const low = byteBits(vload(get(octet.qs[i]), 16 * v), 2 * plane, get(low2));
            const bit = i16x8ShrU(vload(get(octet.qh[i]), 16 * v), add(shl(get(octet.half), i32(2)), i32(plane)));
            half.push(set(weights[i][v], vor(low, i16x8Shl(vand(bit, get(ones8)), i32(2)))));
            continue;
          }
          const low = byteBits(vload(get(octet.qs[i]), 32 * (plane & 1) + 16 * v), 4 * (plane >> 1), get(low4));
          const high = byteBits(vload(get(octet.qh[i]), 16 * v), 2 * plane - 4, get(bits45));
          half.push(set(weights[i][v], vor(low, high)));
        }
      }
      for (let c = 0; c < 8; c++) {
        for (let g = 0; g < 2; g++) half.push(set(x[g], vload(get(xt[g]), 128 * plane + 16 * c)));
        for (let i = 0; i < 2; i++) {
          half.push(set(splat, splatLane(weights[i][c >> 2], c & 3)));
          for (let g = 0; g < 2; g++) {
            const product = relaxedDot(get(x[g]), get(splat));
            const sum = sums[2 * i + g];
            half.push(set(sum, c % 2 === 0 ? product : i16x8Add(get(sum), product)));
          }
        }
        if (c % 2 === 0) continue;
        // Two chunks summed: times the scale of sub-block 2·plane + (c >> 2) of the half's eight, into int32.
        const sub = 2 * plane + (c >> 2);
        for (let i = 0; i < 2; i++) {
          half.push(set(octet.laneScale, splatLane(current[i][sub >> 2], sub & 3)));
          for (let g = 0; g < 2; g++) {
            const k = 2 * i + g;
            half.push(set(acc[k], i32x4Add(get(acc[k]), i32x4Dot(get(sums[k]), get(octet.laneScale)))));
          }
        }
      }
    }
    // On to the second half: 64 bytes of ql, 32 of qh (both from qs), four blocks of inputs (512 bytes of each
    // group's), sub-blocks 8 .. 15's scales.
    half.push(
      ...octet.qs.map((p) => set(p, add(get(p), i32(q3 || q2 ? 32 : 64)))),
      ...(q3 || q2 ? [] : octet.qh.map((p) => set(p, add(get(p), i32(32))))),
      ...xt.map((p) => set(p, add(get(p), i32(512)))),
      ...[0, 1].flatMap((i) => [set(current[i][0], get(scalePairs[i][2])), set(current[i][1], get(scalePairs[i][3]))]),
      set(octet.half, add(get(octet.half), i32(1))),
    );
    return octetLoop(rows, t, outs, superBlock, half).flat();
  };
  return f.encode([
    ...set(low4, i8x16Splat(0x0f)),
    ...set(bits45, i8x16Splat(0x30)),
    ...set(bit4, i8x16Splat(0x10)),
    ...set(thirtyTwo, i8x16Splat(32)),
    ...set(low2, i8x16Splat(3)),
    ...set(ones8, i8x16Splat(1)),
    ...set(fours, i8x16Splat(4)),
    ...set(lowBitsMask, bytesConst([63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0])),
    ...set(highNibbleMask, bytesConst([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15])),
    ...set(lowOrder, bytesConst(LOW_ORDER)),
    ...set(highOrder, bytesConst(HIGH_ORDER.map((lane) => lane & 15))),
    ...set(highBitsMask, bytesConst(HIGH_ORDER.map((lane) => lane < 16 ? 0x30 : 0))),
    // Super-blocks per row (cols / 256), and the bytes per group of four inputs in XD4/XC4 (16 per block of 32).
    ...set(blocks, shrU(get(COLS), i32(8))),
    ...set(groupStride, shl(get(blocks), i32(7))),
    ...rowsByInputs(
      f,
      mul(get(blocks), i32(blockBytes)),
      dot,
      int8x ? (type === "q4_k" || type === "q5_k" ? dotRows : dotRows6) : undefined,
      undefined,
      int8x ? (type === "q4_k" || type === "q5_k" ? dotOctet : dotOctet6) : undefined,
    ),
  ]);
}

/**
 * 1.5·2^23 and its float bits: for an integer-valued float |n| < 2^22, the bits of `n + MAGIC` are
 * `MAGIC_BITS + n`, and for any |x| < 2^22 those of `x + MAGIC` hold x rounded to the nearest integer.
 */
const MAGIC = 1.5 * 2 ** 23, MAGIC_BITS = 0x4b400000;

/**
 * `quantize(x, blocks, q16, q8, xd, xc, span)`: the inputs' blocks of 32
 * floats at `x` become what the quantized kernels read, as llama.cpp's
 * `quantize_row_q8_0` (`span` 1) or, with one scale per 256 values,
 * `quantize_row_q8_K` (`span` 8, for the K-quants): d = max|x| / 127 over the
 * span's blocks, q = x / d rounded (ties to even here, away from zero there:
 * they differ only on exact halves), stored as int16 at `q16` and int8 at
 * `q8`, d at `xd` (once per block of 32, the same for a span's), and
 * `[-8·Σq, Σq₀, Σq₁, 0]` at `xc` (Σq₀, Σq₁: the sums of the first and second
 * 16). `blocks` is a multiple of `span`.
 */
function quantizeFunction(): Code {
  const f = new Fn(7);
  const [XP, BLOCKS, Q16, Q8, D, C, SPAN] = f.parameters();
  const b = f.local(I32), m = f.local(V128), id = f.local(F32), d = f.local(F32), sum = f.local(V128);
  const halves = f.local(V128);
  const ids = f.local(V128), magic = f.local(V128), magicBits = f.local(V128);
  // The span's blocks still to quantize with the current d; a pointer and a count for finding the span's maximum.
  const spanLeft = f.local(I32), p = f.local(I32), k = f.local(I32);
  const v = Array.from({ length: 8 }, () => f.local(V128));
  const q = Array.from({ length: 8 }, () => f.local(V128));
  const lane = (x: Code, i: number): Code => [...x, 0xfd, 0x1f, i];
  // max|x| as a tree of pseudo-maxima (one instruction each, where f32x4.max and f32.max order NaNs and zeros in
  // several: the magnitudes have neither sign to order, and a NaN input gives unusable values either way), block by
  // block over the span, then across the lanes.
  const magnitudes = (from: number, count: number): Code =>
    count === 1
      ? f32x4Abs(get(v[from]))
      : f32x4Pmax(magnitudes(from, count / 2), magnitudes(from + count / 2, count / 2));
  const spanScale = block(
    brIf(0, get(spanLeft)),
    set(m, zero()),
    set(p, get(XP)),
    set(k, i32(0)),
    whileLoop(
      ltU(get(k), get(SPAN)),
      ...v.map((vector, i) => set(vector, vload(get(p), 16 * i))),
      set(m, f32x4Pmax(get(m), magnitudes(0, 8))),
      set(p, add(get(p), i32(128))),
      set(k, add(get(k), i32(1))),
    ),
    set(m, f32x4Pmax(get(m), shuffle32(get(m), get(m), [2, 3, 0, 1]))),
    set(m, f32x4Pmax(get(m), shuffle32(get(m), get(m), [1, 0, 3, 2]))),
    set(d, fdiv(lane(get(m), 0), f32(127))),
    // id = d ? 1 / d : 0
    set(id, [...fdiv(f32(1), get(d)), ...f32(0), ...fne(get(d), f32(0)), 0x1b]),
    set(ids, f32x4Splat(get(id))),
    set(spanLeft, get(SPAN)),
  );
  const body: Code[] = [spanScale, set(spanLeft, sub(get(spanLeft), i32(1)))];
  for (let i = 0; i < 8; i++) body.push(set(v[i], vload(get(XP), 16 * i)));
  // Rounded to the nearest integer (ties to even) by adding 1.5·2^23, whose float bits then end in it: cheaper than
  // nearest and a saturating conversion, and exact as |x·id| <= 127.
  for (let i = 0; i < 8; i++) {
    body.push(set(q[i], i32x4Sub(f32x4Add(f32x4Mul(get(v[i]), get(ids)), get(magic)), get(magicBits))));
  }
  // Σq of each half (16 values): the halves' vector sums, then both folded at once into [Σ₀, Σ₁, Σ₀, Σ₁].
  const vectorSum = (from: number): Code =>
    i32x4Add(i32x4Add(get(q[from]), get(q[from + 1])), i32x4Add(get(q[from + 2]), get(q[from + 3])));
  body.push(set(sum, vectorSum(0)), set(halves, vectorSum(4)));
  body.push(set(sum, fold(sum, halves, INTERLEAVED)));
  body.push(set(halves, i32x4Add(get(sum), shuffle32(get(sum), get(sum), [2, 3, 0, 1]))));
  for (let i = 0; i < 4; i++) body.push(vstore(get(Q16), 16 * i, i16x8Narrow(get(q[2 * i]), get(q[2 * i + 1]))));
  for (let i = 0; i < 2; i++) {
    const low = i16x8Narrow(get(q[4 * i]), get(q[4 * i + 1])), high = i16x8Narrow(get(q[4 * i + 2]), get(q[4 * i + 3]));
    body.push(vstore(get(Q8), 16 * i, i8x16Narrow(low, high)));
  }
  body.push(fstore(get(D), get(d)));
  const total = add(i32Lane(get(halves), 0), i32Lane(get(halves), 1));
  body.push(vstore(get(C), 0, shuffle32(i32x4ReplaceLane0(zero(), mul(total, i32(-8))), get(halves), [0, 4, 5, 3])));
  for (const [pointer, step] of [[XP, 128], [Q16, 64], [Q8, 32], [D, 4], [C, 16]]) {
    body.push(set(pointer, add(get(pointer), i32(step))));
  }
  body.push(set(b, add(get(b), i32(1))));
  return f.encode([
    ...set(magic, f32x4Splat(f32(MAGIC))),
    ...set(magicBits, i32x4Splat(i32(MAGIC_BITS))),
    ...whileLoop(ltU(get(b), get(BLOCKS)), ...body),
  ]);
}

/**
 * `regroup(xd, xc, q8, q16, blocks, xd4, xc4, xs4, xh4, xt8, xt16, xp4)`: one group of four inputs' quantized blocks
 * (as `quantize` left them: `blocks` per input, input after input) laid out for the kernels' four- and eight-input
 * paths. Per block: the four scales as one vector (`xd4`), the four `-8·Σq` (`xc4`), the four `d·Σq` (`xs4`, float),
 * the four `32·Σq` of the first halves then of the second halves (`xh4`, int32), the half sums as int16 pairs
 * (`xp4`: input j's Σq₀ and Σq₁ in 32-bit lane j); and, unless the address is 0, the int8 values interleaved four
 * bytes at a time (`xt8`: 32-bit word 4c + j is input j's word c) and the int16 values two at a time (`xt16`). Each
 * is a 4x4 transposition of 32-bit lanes.
 */
function regroupFunction(): Code {
  const f = new Fn(12);
  const [XDP, XCP, Q8P, Q16P, BLOCKS, XD4P, XC4P, XS4P, XH4P, XT8P, XT16P, XP4P] = f.parameters();
  const b = f.local(I32), scales = f.local(V128);
  const rows = [f.local(V128), f.local(V128), f.local(V128), f.local(V128)];
  const temps = [f.local(V128), f.local(V128), f.local(V128), f.local(V128)];
  /** Byte offsets of inputs 1, 2 and 3 from input 0, for each array of per-input blocks. */
  const offsets = (bytesPerBlock: number) =>
    [f.local(I32), f.local(I32), f.local(I32)].map((local, i) => ({
      local,
      init: set(local, mul(get(BLOCKS), i32((i + 1) * bytesPerBlock))),
    }));
  const [dOffsets, cOffsets, q8Offsets, q16Offsets] = [4, 16, 32, 64].map(offsets);
  const inputAt = (pointer: number, inputOffsets: { local: number }[], j: number): Code =>
    j === 0 ? get(pointer) : add(get(pointer), get(inputOffsets[j - 1].local));
  /** `rows[j]` = the vector at `at(j)` for each input j, then transposed: `rows[k]` lane j is input j's lane k. */
  const transposed = (at: (j: number) => Code): Code[] => [
    ...rows.map((row, j) => set(row, vload(at(j)))),
    set(temps[0], shuffle32(get(rows[0]), get(rows[1]), [0, 4, 1, 5])),
    set(temps[1], shuffle32(get(rows[2]), get(rows[3]), [0, 4, 1, 5])),
    set(temps[2], shuffle32(get(rows[0]), get(rows[1]), [2, 6, 3, 7])),
    set(temps[3], shuffle32(get(rows[2]), get(rows[3]), [2, 6, 3, 7])),
    set(rows[0], shuffle32(get(temps[0]), get(temps[1]), [0, 1, 4, 5])),
    set(rows[1], shuffle32(get(temps[0]), get(temps[1]), [2, 3, 6, 7])),
    set(rows[2], shuffle32(get(temps[2]), get(temps[3]), [0, 1, 4, 5])),
    set(rows[3], shuffle32(get(temps[2]), get(temps[3]), [2, 3, 6, 7])),
  ];
  /** The values of block b (`vectors` of 16 bytes per input) interleaved into `into`. */
  const interleaved = (from: number, inputOffsets: { local: number }[], into: number, vectors: number): Code =>
    block(
      brIf(0, op(0x45)(get(into))),
      ...Array.from({ length: vectors }, (_, u) =>
        [
          ...transposed((j) => add(inputAt(from, inputOffsets, j), i32(16 * u))),
          ...rows.map((row, k) => vstore(get(into), 64 * u + 16 * k, get(row))),
        ].flat()),
      set(into, add(get(into), i32(64 * vectors))),
    );
  const body = [
    set(scales, f32x4Of([0, 1, 2, 3].map((j) => fload(inputAt(XDP, dOffsets, j))))),
    vstore(get(XD4P), 0, get(scales)),
    // Each input's [-8·Σq, Σq₀, Σq₁, 0], transposed: rows 0, 1 and 2 hold the four inputs' of each.
    ...transposed((j) => inputAt(XCP, cOffsets, j)),
    vstore(get(XC4P), 0, get(rows[0])),
    vstore(get(XS4P), 0, f32x4Mul(get(scales), f32x4FromI32(i32x4Add(get(rows[1]), get(rows[2]))))),
    vstore(get(XH4P), 0, i32x4Shl(get(rows[1]), i32(5))),
    vstore(get(XH4P), 16, i32x4Shl(get(rows[2]), i32(5))),
    // At most 16·127 in magnitude: the narrowing keeps them.
    vstore(
      get(XP4P),
      0,
      i16x8Narrow(
        shuffle32(get(rows[1]), get(rows[2]), [0, 4, 1, 5]),
        shuffle32(get(rows[1]), get(rows[2]), [2, 6, 3, 7]),
      ),
    ),
    interleaved(Q8P, q8Offsets, XT8P, 2),
    interleaved(Q16P, q16Offsets, XT16P, 4),
    ...([[XDP, 4], [XCP, 16], [Q8P, 32], [Q16P, 64], [XD4P, 16], [XC4P, 16], [XS4P, 16], [XH4P, 32], [
      XP4P,
      16,
    ]] as const).map((
      [pointer, step],
    ) => set(pointer, add(get(pointer), i32(step)))),
    set(b, add(get(b), i32(1))),
  ];
  return f.encode([
    ...[dOffsets, cOffsets, q8Offsets, q16Offsets].flatMap((each) => each.flatMap(({ init }) => init)),
    ...whileLoop(ltU(get(b), get(BLOCKS)), ...body),
  ]);
}

/** Signature of the exported `attend`; see {@link attendFunction}. */
const Q = 0, KEYS = 1, VALUES = 2, OUT_HEAD = 3, SCORES = 4, POSITIONS = 5, HEAD_SIZE = 6, KV_STRIDE = 7;

/**
 * `attend(q, keys, values, out, scores, positions, headSize, kvStride)`: one
 * head of one query, the same weighted average as `attendTo` in
 * `lib/attention.ts`. Scores `q · key / √headSize` of the first `positions`
 * cached keys (one every `kvStride` bytes from `keys`) go to `scores`; they
 * become `exp(score - max)`; `out` gets `Σ exp · value / Σ exp`. Floats
 * throughout, `headSize` a multiple of 4. With `cacheMemory`, `keys` and
 * `values` are addresses in the second memory (the key/value cache's own).
 */
function attendFunction(relaxed: boolean, cacheMemory: boolean, bf16: boolean): Code {
  const f = new Fn(8);
  const cache = cacheAccess(f, cacheMemory, bf16);
  const madd = (a: Code, b: Code, c: Code): Code => relaxed ? relaxedMadd(a, b, c) : f32x4Add(c, f32x4Mul(a, b));
  const i = f.local(I32), c = f.local(I32), p = f.local(I32);
  const scale = f.local(F32), max = f.local(F32), total = f.local(F32), s = f.local(F32);
  const acc = Array.from({ length: 8 }, () => f.local(V128));
  const e = f.local(V128);
  const { exp, setup } = vectorExp(f);
  const at = (base: Code, index: Code): Code => add(base, shl(index, i32(2)));

  // Pass 1: scores and their maximum, four positions at a time (each query load serves four keys), then the rest.
  // Moving pointers into the query and the keys, and eight dimensions a step where the head size allows.
  const qp = f.local(I32), kps = [f.local(I32), f.local(I32), f.local(I32), f.local(I32)], qEnd = f.local(I32);
  const q1 = f.local(V128), k0 = f.local(V128), k1 = f.local(V128);
  const scoresOf = (count: number): Code[] => {
    const keys = kps.slice(0, count);
    const step = (width: number): Code[] => [
      // bfloat16 keys eight values at a time, each against the two query vectors (loaded once); float32 ones four.
      ...(bf16 && width === 8
        ? [[
          ...set(e, vload(get(qp))),
          ...set(q1, vload(get(qp), 16)),
          ...acc.slice(0, count).flatMap((a, j) => [
            ...cache.loadPair(get(keys[j]), 0, [k0, k1]),
            ...set(a, madd(get(q1), get(k1), madd(get(e), get(k0), get(a)))),
          ]),
        ]]
        : Array.from({ length: width / 4 }, (_, u) => [
          ...set(e, vload(get(qp), 16 * u)),
          ...acc.slice(0, count).map((a, j) => set(a, madd(get(e), cache.load(get(keys[j]), 4 * u), get(a)))).flat(),
        ])),
      set(qp, add(get(qp), i32(4 * width))),
      ...keys.map((kp) => set(kp, add(get(kp), i32(cache.bytes * width)))),
    ];
    const body: Code[] = [
      ...acc.slice(0, count).map((a) => set(a, zero())),
      set(qp, get(Q)),
      ...keys.map((kp, j) => set(kp, add(get(p), mul(get(KV_STRIDE), i32(j))))),
      whileLoop(leU(add(get(qp), i32(32)), get(qEnd)), ...step(8)),
      whileLoop(ltU(get(qp), get(qEnd)), ...step(4)),
    ];
    if (count === 4) {
      // The four sums side by side (folded as the products' integer sums are), scaled, stored, and kept in the
      // running maximum as one vector.
      body.push(
        set(acc[0], fold(acc[0], acc[1], PAIRS, f32x4Add)),
        set(acc[2], fold(acc[2], acc[3], PAIRS, f32x4Add)),
        set(acc[0], f32x4Mul(fold(acc[0], acc[2], LANES, f32x4Add), get(scales))),
        vstore(at(get(SCORES), get(i)), 0, get(acc[0])),
        set(maxes, f32x4Pmax(get(maxes), get(acc[0]))),
      );
    } else {
      body.push(
        set(s, fmul(hsum(acc[0]), get(scale))),
        fstore(at(get(SCORES), get(i)), get(s)),
        set(max, fmax(get(max), get(s))),
      );
    }
    body.push(set(p, add(get(p), mul(get(KV_STRIDE), i32(count)))), set(i, add(get(i), i32(count))));
    return body;
  };
  const scales = f.local(V128), maxes = f.local(V128);
  const scoresPass = [
    ...set(scales, f32x4Splat(get(scale))),
    ...set(maxes, f32x4Splat(f32(-Infinity))),
    ...set(qEnd, at(get(Q), get(HEAD_SIZE))),
    ...set(p, get(KEYS)),
    ...set(i, i32(0)),
    ...whileLoop(leU(add(get(i), i32(4)), get(POSITIONS)), ...scoresOf(4)),
    ...whileLoop(ltU(get(i), get(POSITIONS)), ...scoresOf(1)),
    ...set(
      max,
      fmax(
        get(max),
        fmax(
          fmax(f32x4Lane(get(maxes), 0), f32x4Lane(get(maxes), 1)),
          fmax(f32x4Lane(get(maxes), 2), f32x4Lane(get(maxes), 3)),
        ),
      ),
    ),
  ];

  // Pass 2: exp(score - max) in place, four at a time, and their total.
  const expPass = [
    ...set(acc[0], zero()),
    ...set(i, i32(0)),
    ...whileLoop(
      leU(add(get(i), i32(4)), get(POSITIONS)),
      set(e, exp(f32x4Sub(vload(at(get(SCORES), get(i))), f32x4Splat(get(max))))),
      vstore(at(get(SCORES), get(i)), 0, get(e)),
      set(acc[0], f32x4Add(get(acc[0]), get(e))),
      set(i, add(get(i), i32(4))),
    ),
    ...set(total, hsum(acc[0])),
    ...whileLoop(
      ltU(get(i), get(POSITIONS)),
      set(s, f32x4Lane(exp(f32x4Splat(fsub(fload(at(get(SCORES), get(i))), get(max)))), 0)),
      fstore(at(get(SCORES), get(i)), get(s)),
      set(total, fadd(get(total), get(s))),
      set(i, add(get(i), i32(1))),
    ),
    ...set(s, fdiv(f32(1), get(total))),
  ];

  // Pass 3: the weighted sum of values, 32 (then 4) dimensions at a time so the sums stay in registers.
  const valuesPass = (width: number): Code =>
    whileLoop(
      leU(add(get(c), i32(width)), get(HEAD_SIZE)),
      ...acc.slice(0, width / 4).map((a) => set(a, zero())),
      set(p, add(get(VALUES), shl(get(c), i32(cache.shift)))),
      set(i, i32(0)),
      whileLoop(
        ltU(get(i), get(POSITIONS)),
        set(e, f32x4Splat(fload(at(get(SCORES), get(i))))),
        ...(bf16 && width % 8 === 0
          ? Array.from({ length: width / 8 }, (_, u) => [
            ...cache.loadPair(get(p), 8 * u, [k0, k1]),
            ...set(acc[2 * u], madd(get(e), get(k0), get(acc[2 * u]))),
            ...set(acc[2 * u + 1], madd(get(e), get(k1), get(acc[2 * u + 1]))),
          ])
          : acc.slice(0, width / 4).map((a, u) => set(a, madd(get(e), cache.load(get(p), 4 * u), get(a))))),
        set(p, add(get(p), get(KV_STRIDE))),
        set(i, add(get(i), i32(1))),
      ),
      ...acc.slice(0, width / 4).map((a, u) =>
        vstore(at(get(OUT_HEAD), get(c)), 16 * u, f32x4Mul(get(a), f32x4Splat(get(s))))
      ),
      set(c, add(get(c), i32(width))),
    );

  const values = [...valuesPass(32), ...valuesPass(4)];
  return f.encode([
    ...cache.setup(),
    ...set(scale, fdiv(f32(1), fsqrt(convertU(get(HEAD_SIZE))))),
    ...set(max, f32(-Infinity)),
    ...scoresPass,
    ...setup(),
    ...expPass,
    ...set(c, i32(0)),
    ...values,
  ]);
}

/**
 * `attendFour(q, keys, values, out, scores, positions, headSize, kvStride, qStride, causal)`: `attend` for four
 * queries on one key/value head (query j at `q + j·qStride`, its result at `out + j·qStride`): four consecutive tokens
 * of one head (`causal` 1: query j attends to the first `positions + j` keys) or four heads of one token that share
 * the key/value head (`causal` 0: each attends to the first `positions`). Each key and value load serves the four:
 * the scores go to `scores` position by position as one vector of the four queries' (16 bytes a position; with
 * `causal`, the last three positions' are masked for the queries that do not see them), so the maxima, exps and
 * totals of the four are taken side by side, and the values are summed eight dimensions at a time for the four
 * queries. `headSize` is a multiple of 8.
 */
function attendFourFunction(relaxed: boolean, cacheMemory: boolean, bf16: boolean): Code {
  const f = new Fn(10);
  const Q_STRIDE = 8, CAUSAL = 9;
  const cache = cacheAccess(f, cacheMemory, bf16);
  const madd = (a: Code, b: Code, c: Code): Code => relaxed ? relaxedMadd(a, b, c) : f32x4Add(c, f32x4Mul(a, b));
  const bitselect = simd(0x52);
  const p = f.local(I32), sp = f.local(I32), kp = f.local(I32), d = f.local(I32), c = f.local(I32), last = f.local(I32);
  const acc = Array.from({ length: 8 }, () => f.local(V128));
  const e = f.local(V128), k0 = f.local(V128), k1 = f.local(V128), w = f.local(V128);
  const k0b = f.local(V128), k1b = f.local(V128);
  const scales = f.local(V128), maxes = f.local(V128), totals = f.local(V128), inverse = f.local(V128);
  const qps = [f.local(I32), f.local(I32), f.local(I32), f.local(I32)];
  const { exp, setup } = vectorExp(f);
  /** Lanes j > m all ones: the queries that see position `positions + m`. */
  const seen = (m: number): Code => bytesConst(Array.from({ length: 16 }, (_, i) => ((i >> 2) > m ? 0xff : 0)));
  /** Position `index`'s scores: 16 bytes each. */
  const at = (base: Code, index: Code): Code => add(base, shl(index, i32(4)));

  // Pass 1: the four queries' scores against positions two at a time (then the last odd one), eight dimensions a
  // step: per step each query load serves two keys and each key load four queries.
  const scoresOf = (keys: number): Code[] => {
    /**
     * Eight dimensions, four at a time. bfloat16 keys load eight values at once (k0 and k0b, k1 and k1b); float32
     * ones four at a time, just before use (loading all eight first measured 25% slower there).
     */
    const step = (): Code[] => {
      const products = (u: number, keys0: number, keys1: number) =>
        qps.flatMap((qp, j) => [
          set(e, vload(get(qp), 16 * u)),
          set(acc[2 * j], madd(get(e), get(keys0), get(acc[2 * j]))),
          keys === 2 ? set(acc[2 * j + 1], madd(get(e), get(keys1), get(acc[2 * j + 1]))) : [],
        ]);
      if (!bf16) {
        return [0, 1].flatMap((u) => [
          set(k0, cache.load(get(kp), 4 * u)),
          keys === 2 ? set(k1, cache.load(add(get(kp), get(KV_STRIDE)), 4 * u)) : [],
          ...products(u, k0, k1),
        ]);
      }
      return [
        cache.loadPair(get(kp), 0, [k0, k0b]),
        keys === 2 ? cache.loadPair(add(get(kp), get(KV_STRIDE)), 0, [k1, k1b]) : [],
        ...products(0, k0, k1),
        ...products(1, k0b, k1b),
      ];
    };
    /** [Σ acc[m], Σ acc[2 + m], Σ acc[4 + m], Σ acc[6 + m]] times the scale: the queries' scores against key m. */
    const sums = (m: number): Code[] => {
      const [a, b, cc, dd] = [0, 1, 2, 3].map((j) => acc[2 * j + m]);
      return [
        set(a, fold(a, b, PAIRS, f32x4Add)),
        set(cc, fold(cc, dd, PAIRS, f32x4Add)),
        set(a, f32x4Mul(fold(a, cc, LANES, f32x4Add), get(scales))),
        vstore(at(get(SCORES), add(get(p), i32(m))), 0, get(a)),
      ];
    };
    return [
      ...acc.map((a) => set(a, zero())),
      ...qps.map((qp, j) => set(qp, add(get(Q), mul(get(Q_STRIDE), i32(j))))),
      set(d, i32(0)),
      whileLoop(
        ltU(get(d), get(HEAD_SIZE)),
        ...step(),
        ...qps.map((qp) => set(qp, add(get(qp), i32(32)))),
        set(kp, add(get(kp), i32(8 * cache.bytes))),
        set(d, add(get(d), i32(8))),
      ),
      set(kp, sub(get(kp), shl(get(HEAD_SIZE), i32(cache.shift)))),
      ...sums(0),
      ...(keys === 2 ? sums(1) : []),
      set(kp, add(get(kp), mul(get(KV_STRIDE), i32(keys)))),
      set(p, add(get(p), i32(keys))),
    ];
  };
  const minusInfinity = f32x4Splat(f32(-Infinity));
  const scoresPass: Code[] = [
    set(scales, f32x4Splat(fdiv(f32(1), fsqrt(convertU(get(HEAD_SIZE)))))),
    set(last, add(get(POSITIONS), mul(get(CAUSAL), i32(3)))),
    set(kp, get(KEYS)),
    set(p, i32(0)),
    whileLoop(leU(add(get(p), i32(2)), get(last)), ...scoresOf(2)),
    whileLoop(ltU(get(p), get(last)), ...scoresOf(1)),
    // The last three positions, for the queries that do not see them: -∞.
    block(
      brIf(0, op(0x45)(get(CAUSAL))),
      ...[0, 1, 2].map((m) => {
        const address = at(get(SCORES), add(get(POSITIONS), i32(m)));
        return vstore(address, 0, bitselect(vload(address), minusInfinity, seen(m)));
      }),
    ),
    set(maxes, minusInfinity),
    set(p, i32(0)),
    whileLoop(
      ltU(get(p), get(last)),
      set(maxes, f32x4Pmax(get(maxes), vload(at(get(SCORES), get(p))))),
      set(p, add(get(p), i32(1))),
    ),
  ];
  // Pass 2: exp(score - max) in place and the totals.
  const expPass: Code[] = [
    set(totals, zero()),
    set(p, i32(0)),
    whileLoop(
      ltU(get(p), get(last)),
      set(sp, at(get(SCORES), get(p))),
      set(e, exp(f32x4Sub(vload(get(sp)), get(maxes)))),
      vstore(get(sp), 0, get(e)),
      set(totals, f32x4Add(get(totals), get(e))),
      set(p, add(get(p), i32(1))),
    ),
    // exp(-∞ - max) comes out as e^-87 (the exp clamps), below the totals' last bit (each is at least 1): the masked
    // weights go back to 0 for the values.
    block(
      brIf(0, op(0x45)(get(CAUSAL))),
      ...[0, 1, 2].map((m) => {
        const address = at(get(SCORES), add(get(POSITIONS), i32(m)));
        return vstore(address, 0, vand(vload(address), seen(m)));
      }),
    ),
    set(inverse, f32x4Div(f32x4Splat(f32(1)), get(totals))),
  ];
  // Pass 3: the weighted sums of values, eight dimensions of the four queries at a time.
  const valuesPass = whileLoop(
    ltU(get(c), get(HEAD_SIZE)),
    ...acc.map((a) => set(a, zero())),
    set(kp, add(get(VALUES), shl(get(c), i32(cache.shift)))),
    set(sp, get(SCORES)),
    set(p, i32(0)),
    whileLoop(
      ltU(get(p), get(last)),
      set(w, vload(get(sp))),
      cache.loadPair(get(kp), 0, [k0, k1]),
      ...[0, 1, 2, 3].flatMap((j) => [
        set(e, splatLane(w, j)),
        set(acc[2 * j], madd(get(e), get(k0), get(acc[2 * j]))),
        set(acc[2 * j + 1], madd(get(e), get(k1), get(acc[2 * j + 1]))),
      ]),
      set(kp, add(get(kp), get(KV_STRIDE))),
      set(sp, add(get(sp), i32(16))),
      set(p, add(get(p), i32(1))),
    ),
    ...[0, 1, 2, 3].flatMap((j) => {
      const address = add(add(get(OUT_HEAD), mul(get(Q_STRIDE), i32(j))), shl(get(c), i32(2)));
      return [
        set(e, splatLane(inverse, j)),
        vstore(address, 0, f32x4Mul(get(acc[2 * j]), get(e))),
        vstore(address, 16, f32x4Mul(get(acc[2 * j + 1]), get(e))),
      ];
    }),
    set(c, add(get(c), i32(8))),
  );
  return f.encode([
    ...cache.setup(),
    ...scoresPass.flat(),
    ...setup(),
    ...expPass.flat(),
    ...set(c, i32(0)),
    ...valuesPass,
  ]);
}

/**
 * `rotateAndCache(q, k, v, count, heads, kvHeads, headSize, cos, sin, keys, values, runBytes)`: RoPE and caching
 * for `count` consecutive tokens, as `Session` does in `lib/transformer.ts`. Each pair `(x[2j], x[2j + 1])` of each
 * head of token i's query (`heads · headSize` floats at `q`, token after token) turns in place by the angle whose
 * cosine and sine are `cos[i · headSize/2 + j]` and `sin[...]`; its key (`kvHeads` heads at `k`) turns the same way,
 * straight into the cache: key head g of token i goes to `keys + g · runBytes + i · headSize · (bytes per cached
 * value)`; its value (at `v`) is copied to the same place from `values`. `headSize` a multiple of 8. In float32
 * without fused multiply-adds, so `x·cos - y·sin` is llama2.c's, rounding for rounding; with `bf16`, the cache
 * gets the keys and values rounded to bfloat16. With `cacheMemory`, `keys` and `values` are addresses in the second
 * memory.
 */
function rotateAndCacheFunction(cacheMemory: boolean, bf16: boolean): Code {
  const f = new Fn(12);
  const [QP, KP, VP, COUNT, HEADS, KV_HEADS, HEAD_SIZE, COS, SIN, KEYS, VALUES, RUN_BYTES] = f.parameters();
  const cache = cacheAccess(f, cacheMemory, bf16), floats = cacheAccess(f, false, false);
  const t = f.local(I32), j = f.local(I32), h = f.local(I32), from = f.local(I32), to = f.local(I32);
  const headBytes = f.local(I32), tableBytes = f.local(I32), keysAt = f.local(I32), valuesAt = f.local(I32);
  const cosines = [f.local(V128), f.local(V128)], sines = [f.local(V128), f.local(V128)];
  const signs = f.local(V128), x = [f.local(V128), f.local(V128)];
  /** `x·cos + swap(x)·(∓sin)`: lane 2m gets `x₀·cos - x₁·sin`, lane 2m + 1 `x₁·cos + x₀·sin`. */
  const turned = (u: number): Code =>
    f32x4Add(
      f32x4Mul(get(x[u]), get(cosines[u])),
      f32x4Mul(shuffle32(get(x[u]), get(x[u]), [1, 0, 3, 2]), get(sines[u])),
    );
  /** Where value `j / 4` (`j` a byte offset among floats) of a head starting at `base` is, written by `access`. */
  const place = (base: number, access: typeof cache): Code =>
    add(get(base), access.bytes === 4 ? get(j) : shrU(get(j), i32(1)));
  /**
   * One token's `headCount` heads from `first` (heads `headBytes` apart) turned into `into` (heads `step` apart,
   * written by `access`): four pairs at a time, their angles' cosines and sines (each twice, the sines signed) made
   * once for every head.
   */
  const rotateHeads = (first: number, into: number, headCount: number, step: Code, access: typeof cache): Code[] => [
    set(j, i32(0)),
    whileLoop(
      ltU(get(j), get(headBytes)),
      set(x[0], vload(add(get(COS), shrU(get(j), i32(1))))),
      set(cosines[0], shuffle32(get(x[0]), get(x[0]), [0, 0, 1, 1])),
      set(cosines[1], shuffle32(get(x[0]), get(x[0]), [2, 2, 3, 3])),
      set(x[0], vload(add(get(SIN), shrU(get(j), i32(1))))),
      set(sines[0], vxor(shuffle32(get(x[0]), get(x[0]), [0, 0, 1, 1]), get(signs))),
      set(sines[1], vxor(shuffle32(get(x[0]), get(x[0]), [2, 2, 3, 3]), get(signs))),
      set(from, add(get(first), get(j))),
      set(to, place(into, access)),
      set(h, i32(0)),
      whileLoop(
        ltU(get(h), get(headCount)),
        ...x.map((xu, u) => set(xu, vload(get(from), 16 * u))),
        access.store8(get(to), 0, turned(0), turned(1)),
        set(from, add(get(from), get(headBytes))),
        set(to, add(get(to), step)),
        set(h, add(get(h), i32(1))),
      ),
      set(j, add(get(j), i32(32))),
    ),
  ];
  /** One token's value heads from `VP` to the cache, eight values at a time. */
  const copyValues = [
    set(h, i32(0)),
    set(from, get(VP)),
    whileLoop(
      ltU(get(h), get(KV_HEADS)),
      set(j, i32(0)),
      whileLoop(
        ltU(get(j), get(headBytes)),
        cache.store8(place(valuesAt, cache), 0, vload(add(get(from), get(j))), vload(add(get(from), get(j)), 16)),
        set(j, add(get(j), i32(32))),
      ),
      set(from, add(get(from), get(headBytes))),
      set(valuesAt, add(get(valuesAt), get(RUN_BYTES))),
      set(h, add(get(h), i32(1))),
    ),
  ];
  const body = whileLoop(
    ltU(get(t), get(COUNT)),
    set(keysAt, add(get(KEYS), mul(get(t), shl(get(HEAD_SIZE), i32(cache.shift))))),
    set(valuesAt, add(get(VALUES), mul(get(t), shl(get(HEAD_SIZE), i32(cache.shift))))),
    ...rotateHeads(QP, QP, HEADS, get(headBytes), floats),
    ...rotateHeads(KP, keysAt, KV_HEADS, get(RUN_BYTES), cache),
    ...copyValues,
    set(QP, add(get(QP), mul(get(HEADS), get(headBytes)))),
    set(KP, add(get(KP), mul(get(KV_HEADS), get(headBytes)))),
    set(VP, add(get(VP), mul(get(KV_HEADS), get(headBytes)))),
    set(COS, add(get(COS), get(tableBytes))),
    set(SIN, add(get(SIN), get(tableBytes))),
    set(t, add(get(t), i32(1))),
  );
  return f.encode([
    ...cache.setup(),
    // -0.0 in the even lanes: xor flips the sign of the sines that multiply x₁ into lane 2m.
    ...set(signs, bytesConst(Array.from({ length: 16 }, (_, i) => (i % 8 === 3 ? 0x80 : 0)))),
    ...set(headBytes, shl(get(HEAD_SIZE), i32(2))),
    ...set(tableBytes, shl(get(HEAD_SIZE), i32(1))),
    ...body,
  ]);
}

/**
 * `swiglu(gate, up, length)`: `gate[i] = silu(gate[i]) · up[i]` with
 * `silu(g) = g / (1 + e^-g)`, eight at a time, then four, then the rest one by one.
 */
function swigluFunction(): Code {
  const f = new Fn(3);
  const [GATE, UP, LENGTH] = [0, 1, 2];
  const i = f.local(I32), g = [f.local(V128), f.local(V128)];
  // Two exp chains: eight values a step, whose polynomials overlap.
  const exps = [vectorExp(f), vectorExp(f)];
  const one = f.local(V128);
  const at = (base: number): Code => add(get(base), shl(get(i), i32(2)));
  const swiglu = (gate: Code, up: Code, exp = exps[0].exp): Code =>
    f32x4Mul(f32x4Div(gate, f32x4Add(get(one), exp(f32x4Sub(zero(), gate)))), up);
  const body = [
    ...set(i, i32(0)),
    ...whileLoop(
      leU(add(get(i), i32(8)), get(LENGTH)),
      ...g.map((gate, j) => set(gate, vload(at(GATE), 16 * j))),
      ...g.map((gate, j) => vstore(at(GATE), 16 * j, swiglu(get(gate), vload(at(UP), 16 * j), exps[j].exp))),
      set(i, add(get(i), i32(8))),
    ),
    ...whileLoop(
      leU(add(get(i), i32(4)), get(LENGTH)),
      set(g[0], vload(at(GATE))),
      vstore(at(GATE), 0, swiglu(get(g[0]), vload(at(UP)))),
      set(i, add(get(i), i32(4))),
    ),
    ...whileLoop(
      ltU(get(i), get(LENGTH)),
      set(g[0], f32x4Splat(fload(at(GATE)))),
      fstore(at(GATE), f32x4Lane(swiglu(get(g[0]), f32x4Splat(fload(at(UP)))), 0)),
      set(i, add(get(i), i32(1))),
    ),
  ];
  return f.encode([...exps.flatMap(({ setup }) => setup()), ...set(one, f32x4Splat(f32(1))), ...body]);
}

/**
 * `rmsnorm(out, x, weight, size, count, eps)`: for each of `count` vectors of
 * `size` floats (a multiple of 4) at `x`, `out = weight · x / rms(x)` with
 * `rms(x) = √(Σ x² / size + eps)`, as `rmsNorm` in `lib/transformer.ts` does,
 * but in float32 (the plain loop sums in float64). `out` may be `x`.
 */
function rmsnormFunction(): Code {
  const f = new Fn(6);
  const [OUT, X, WEIGHT, SIZE, COUNT, EPS] = [0, 1, 2, 3, 4, 5];
  const v = f.local(I32), j = f.local(I32), end = f.local(I32), scale = f.local(V128);
  const sums = [f.local(V128), f.local(V128)], value = f.local(V128);
  const bytes = f.local(I32);
  return f.encode([
    ...set(bytes, shl(get(SIZE), i32(2))),
    ...whileLoop(
      ltU(get(v), get(COUNT)),
      set(end, add(get(X), get(bytes))),
      ...sums.map((sum) => set(sum, zero())),
      set(j, get(X)),
      // Two sums of squares, eight floats a step, then four.
      whileLoop(
        leU(add(get(j), i32(32)), get(end)),
        ...sums.map((sum, u) => [
          ...set(value, vload(get(j), 16 * u)),
          ...set(sum, f32x4Add(get(sum), f32x4Mul(get(value), get(value)))),
        ]),
        set(j, add(get(j), i32(32))),
      ),
      whileLoop(
        ltU(get(j), get(end)),
        set(value, vload(get(j))),
        set(sums[0], f32x4Add(get(sums[0]), f32x4Mul(get(value), get(value)))),
        set(j, add(get(j), i32(16))),
      ),
      set(scale, f32x4Splat(fdiv(f32(1), fsqrt(fadd(fdiv(hsum2(sums[0], sums[1]), convertU(get(SIZE))), get(EPS)))))),
      set(j, i32(0)),
      whileLoop(
        ltU(get(j), get(bytes)),
        vstore(
          add(get(OUT), get(j)),
          0,
          f32x4Mul(vload(add(get(WEIGHT), get(j))), f32x4Mul(get(scale), vload(add(get(X), get(j))))),
        ),
        set(j, add(get(j), i32(16))),
      ),
      set(X, add(get(X), get(bytes))),
      set(OUT, add(get(OUT), get(bytes))),
      set(v, add(get(v), i32(1))),
    ),
  ]);
}

/** `add(x, y, length)`: `x[i] += y[i]` for `i < length`, four at a time, then one by one (the residual connection). */
function addFunction(): Code {
  const f = new Fn(3);
  const [X, Y, LENGTH] = [0, 1, 2];
  const i = f.local(I32);
  const at = (base: number): Code => add(get(base), shl(get(i), i32(2)));
  return f.encode([
    ...whileLoop(
      leU(add(get(i), i32(4)), get(LENGTH)),
      vstore(at(X), 0, f32x4Add(vload(at(X)), vload(at(Y)))),
      set(i, add(get(i), i32(4))),
    ),
    ...whileLoop(
      ltU(get(i), get(LENGTH)),
      fstore(at(X), fadd(fload(at(X)), fload(at(Y)))),
      set(i, add(get(i), i32(1))),
    ),
  ]);
}

/**
 * `e^x` lane by lane for an f32x4 (Cephes' expf: x = n·ln 2 + r, a degree-6
 * polynomial for e^r, 2^n put in the exponent bits), within a few float
 * rounding steps of Math.exp. Inputs are clamped to [-87, 88] so 2^n stays a
 * normal float; attention only asks for x <= 0, where e^-87 is as good as 0.
 * NaN stays NaN.
 *
 * Cheap instructions only, as this runs once per score and per SwiGLU value:
 * `pmin`/`pmax` (one instruction each; `min`/`max` take several for their
 * NaN and -0 rules), and the integer n read from the bits of `n + 1.5·2^23`
 * (exact for |n| < 2^22) instead of a saturating conversion. The constants
 * sit in locals set once by `setup`, not splatted inside the loop.
 */
function vectorExp(f: Fn): { setup: () => Code; exp: (x: Code) => Code } {
  const x = f.local(V128), n = f.local(V128), y = f.local(V128);
  const constants = new Map<number, number>();
  const k = (value: number): Code => {
    if (!constants.has(value)) constants.set(value, f.local(V128));
    return get(constants.get(value)!);
  };
  const exp = (value: Code): Code => [
    ...set(x, f32x4Pmin(f32x4Pmax(value, k(-87)), k(88))),
    ...set(n, f32x4Floor(f32x4Add(f32x4Mul(get(x), k(Math.LOG2E)), k(0.5)))),
    // r = x - n·ln 2, with ln 2 split in two so the first product is exact.
    ...set(x, f32x4Sub(f32x4Sub(get(x), f32x4Mul(get(n), k(0.693359375))), f32x4Mul(get(n), k(-2.12194440e-4)))),
    ...set(y, k(1.9875691500e-4)),
    ...[1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1].flatMap((coefficient) =>
      set(y, f32x4Add(f32x4Mul(get(y), get(x)), k(coefficient)))
    ),
    ...set(y, f32x4Add(f32x4Add(f32x4Mul(f32x4Mul(get(y), get(x)), get(x)), get(x)), k(1))),
    // 2^n: (n + 127) << 23, with n + 127 = bits(n + magic) - bits(magic) + 127.
    ...f32x4Mul(get(y), i32x4Shl(i32x4Sub(f32x4Add(get(n), k(MAGIC)), i32x4Splat(i32(MAGIC_BITS - 127))), i32(23))),
  ];
  // The constants are known once `exp` has been emitted: call `setup` after building the body that uses it.
  const setup = (): Code => [...constants].flatMap(([value, local]) => set(local, f32x4Splat(f32(value))));
  return { setup, exp };
}

/**
 * The module's bytes. `relaxed` selects relaxed-SIMD instructions (fused multiply-add, 8-bit dot products);
 * `cacheMemory` imports a second memory, `env.cache`, that `attend` reads the key/value cache from.
 */
export function buildKernelModule(
  { relaxed, cacheMemory = false }: { relaxed: boolean; cacheMemory?: boolean },
): Uint8Array<ArrayBuffer> {
  const kernels = [
    floatKernel("f32", relaxed),
    floatKernel("f16", relaxed),
    floatKernel("bf16", relaxed),
    quantKernel("q8_0", relaxed),
    quantKernel("q4_0", relaxed),
    quantKernel("q4_1", relaxed),
    quantKernel("q5_0", relaxed),
    quantKernel("q5_1", relaxed),
    kQuantKernel("q2_k", relaxed),
    kQuantKernel("q3_k", relaxed),
    kQuantKernel("q4_k", relaxed),
    kQuantKernel("q5_k", relaxed),
    kQuantKernel("q6_k", relaxed),
  ];
  const kernelType = [0x60, KERNEL_PARAMS, ...Array(KERNEL_PARAMS).fill(I32), 0];
  const quantizeType = [0x60, 7, ...Array(7).fill(I32), 0];
  const attendType = [0x60, 8, ...Array(8).fill(I32), 0];
  const swigluType = [0x60, 3, ...Array(3).fill(I32), 0];
  const rmsnormType = [0x60, 6, ...Array(5).fill(I32), F32, 0];
  const attendFourType = [0x60, 10, ...Array(10).fill(I32), 0];
  const rotateType = [0x60, 12, ...Array(12).fill(I32), 0];
  const regroupType = [0x60, 12, ...Array(12).fill(I32), 0];
  const functions = [
    ...kernels,
    quantizeFunction(),
    attendFunction(relaxed, cacheMemory, false),
    swigluFunction(),
    addFunction(),
    rmsnormFunction(),
    attendFourFunction(relaxed, cacheMemory, false),
    rotateAndCacheFunction(cacheMemory, false),
    regroupFunction(),
    attendFunction(relaxed, cacheMemory, true),
    attendFourFunction(relaxed, cacheMemory, true),
    rotateAndCacheFunction(cacheMemory, true),
  ];
  const main = memoryImport("memory", RESERVED_PAGES);
  const imports = cacheMemory ? [main, memoryImport("cache", 1)] : [main];
  const exports = [
    ...WASM_KERNELS,
    "quantize",
    "attend",
    "swiglu",
    "add",
    "rmsnorm",
    "attendFour",
    "rotateAndCache",
    "regroup",
    // The key/value cache's functions once more, for a bfloat16 cache.
    "attendBf16",
    "attendFourBf16",
    "rotateAndCacheBf16",
  ];
  const types = [
    kernelType,
    quantizeType,
    attendType,
    swigluType,
    rmsnormType,
    attendFourType,
    rotateType,
    regroupType,
  ];
  const functionTypes = [...kernels.map(() => 0), 1, 2, 3, 3, 4, 5, 6, 7, 2, 5, 6];
  return encodeModule(types, imports, functionTypes, exports, functions);
}

/** A module's bytes: its function types, memory imports, each function's type index, exported names and bodies. */
function encodeModule(
  types: Code[],
  imports: Code[],
  functionTypes: number[],
  exports: readonly string[],
  functions: Code[],
): Uint8Array<ArrayBuffer> {
  /** A section: its id, its size, then its entries' count and the entries. */
  const section = (id: number, entries: Code[]): Code => {
    const payload = flatten([uleb(entries.length), ...entries]);
    return [id, ...uleb(payload.length), payload];
  };
  return flatten([
    [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    section(1, types),
    section(2, imports),
    section(3, functionTypes.map((type) => [type])),
    section(7, exports.map((n, i) => [...name(n), 0x00, i])),
    section(10, functions),
  ]);
}

/** A name as the binary format spells it: its UTF-8 length, then its bytes. */
function name(text: string): Code {
  const bytes = new TextEncoder().encode(text);
  return [...uleb(bytes.length), ...bytes];
}

/** The import of a shared memory `env.field` of at least `pages` pages (see RESERVED_PAGES), at most 65536 (4 GiB). */
function memoryImport(field: string, pages: number): Code {
  return [...name("env"), ...name(field), 0x02, 0x03, ...uleb(pages), ...uleb(65536)];
}

/**
 * Whether this engine accepts the relaxed-SIMD instructions the kernels use. A small module says so: building the
 * kernels' one takes a hundred milliseconds or more.
 */
export function relaxedSimdSupported(): boolean {
  const f = new Fn(0);
  const body = f.encode([
    ...relaxedMadd(zero(), zero(), zero()),
    ...relaxedDot(zero(), zero()),
    ...relaxedSwizzle(zero(), zero()),
    ...[0x1a, 0x1a, 0x1a], // drop the three
  ]);
  return WebAssembly.validate(encodeModule([[0x60, 0, 0]], [], [0], [], [body]));
}

/** Whether this engine accepts a second memory (WebAssembly multi-memory), for the key/value cache. */
export function multiMemorySupported(): boolean {
  // A load from memory 1: its memarg's flags carry bit 6, then the memory's index.
  const body = new Fn(0).encode([...i32(0), 0x28, 0x40 | 2, 1, 0, 0x1a]);
  const imports = [memoryImport("memory", 1), memoryImport("cache", 1)];
  return WebAssembly.validate(encodeModule([[0x60, 0, 0]], imports, [0], [], [body]));
}
