/**
 * The Llama 2 forward pass, top to bottom like the math: embed; for each
 * layer RMSNorm, q/k/v, RoPE, attention (the essay's {@link attendTo}),
 * output projection, RMSNorm, SwiGLU; final norm; logits. A {@link Session}
 * owns the key/value cache, so feeding more tokens later continues where it
 * stopped.
 *
 * @module
 */

import { attendTo } from "./attention.ts";
import { TensorlessError } from "./errors.ts";
import type { Kernels } from "./kernels/kernels.ts";
import type { LlamaConfig, LlamaNumerics, LlamaWeights } from "./model_file.ts";
import { bf16Table, dequantizeRow, floatToBf16 } from "./quant.ts";

/**
 * How the key/value cache holds its vectors: float32, or bfloat16 (a float32's top 16 bits, rounded to nearest
 * even: the precision Llama models are trained and usually run in), which halves its memory and the bytes
 * attention reads.
 */
export type CacheEncoding = "f32" | "bf16";
/** Every {@link CacheEncoding}. */
export const CACHE_ENCODINGS: readonly CacheEncoding[] = ["f32", "bf16"];

/** What a session needs from its model. */
export interface Transformer {
  readonly config: LlamaConfig;
  readonly numerics: LlamaNumerics;
  readonly weights: LlamaWeights;
  readonly kernels: Kernels;
  /** The cache's encoding (default `"f32"`). */
  readonly cacheEncoding?: CacheEncoding;
}

/** A layer's cached keys or values: floats, or bfloat16 bits. */
type CacheArray = Float32Array | Uint16Array;

/** Attention weights of one head for one query position, as {@link attendTo} computed them. */
export interface AttentionRecord {
  /** Layer index, from 0. */
  layer: number;
  /** Query head index, from 0. */
  head: number;
  /** The position of the token doing the attending. */
  position: number;
  /** One weight per cached position `0..position`; they sum to 1. */
  weights: Float32Array;
}

/** Prompts longer than this go through the layers in several batches, to bound scratch memory. */
const MAX_BATCH = 128;

/**
 * One conversation's state: the keys and values of every token fed so far.
 * {@link Session.feed} runs new tokens through the model and returns the
 * logits for the token after the last one; {@link Session.close} gives its
 * memory back when the conversation is over.
 */
export class Session {
  readonly #model: Transformer;
  #position = 0;
  /**
   * Per layer: key and value vectors, head by head: key/value head g at position p is `headSize` floats at
   * `(g * capacity + p) * headSize`, so each head's cache is one contiguous run that attention streams
   * through. Grown as positions fill.
   */
  #keys: CacheArray[];
  #values: CacheArray[];
  /** Whether the cache holds bfloat16 values. */
  readonly #bf16: boolean;
  /**
   * Per layer, a view on each cached value vector (index `kvHead * capacity + position`) for `attendTo`, made on its
   * first use after the cache grows: it reads every value each step, and a fresh view per read is measurable garbage.
   * (The kernels' attention reads the cache directly; making these for every layer up front took 5 ms of a 110M
   * prompt.)
   */
  #valueVectors: Float32Array[][] = [];
  #capacity = 0;
  /**
   * cos/sin of RoPE angles per position and frequency, for the positions the cache has room for (in the kernels'
   * memory, for their RoPE).
   */
  #ropeCos: Float32Array = new Float32Array(0);
  #ropeSin: Float32Array = new Float32Array(0);
  #scratch: Scratch;
  #logits: Float32Array;
  /** 0, 1, 2, ...: the cached positions a query attends to are a prefix of this. */
  #positions: Int32Array = new Int32Array(0);
  /** When set, receives the attention weights of every head at every fed position. */
  onAttention?: (record: AttentionRecord) => void;
  #closed = false;

  /** An empty session; {@link Model.newSession} is the usual way to get one. */
  constructor(model: Transformer) {
    this.#model = model;
    const { config } = model;
    this.#bf16 = model.cacheEncoding === "bf16";
    this.#keys = [];
    this.#values = [];
    this.#scratch = new Scratch(model, 1);
    this.#logits = model.kernels.allocate(config.vocabSize);
  }

  /** How many tokens the cache holds (the position the next token gets). */
  get position(): number {
    return this.#position;
  }

  /** The context length: the most tokens the cache can hold. */
  get contextLength(): number {
    return this.#model.config.seqLen;
  }

  /**
   * Runs `ids` through the model at the next positions (as one batch per
   * {@link MAX_BATCH} tokens) and returns the logits after the last one.
   * The returned array is reused by the next call: copy it to keep it.
   */
  feed(ids: ArrayLike<number>): Float32Array {
    this.#checkOpen();
    const { vocabSize, seqLen } = this.#model.config;
    if (ids.length === 0) throw new RangeError("feed needs at least one token");
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= vocabSize) {
        throw new RangeError(`token id ${ids[i]} is outside the vocabulary (0..${vocabSize - 1})`);
      }
    }
    if (this.#position + ids.length > seqLen) {
      throw new TensorlessError(
        `context full: ${this.#position} + ${ids.length} tokens exceed the context length of ${seqLen}`,
      );
    }
    this.#reserve(this.#position + ids.length);
    for (let start = 0; start < ids.length; start += MAX_BATCH) {
      const batch = Array.from({ length: Math.min(MAX_BATCH, ids.length - start) }, (_, i) => ids[start + i]);
      this.#forward(batch);
    }
    return this.#logits;
  }

  /** Forgets every token from `position` on, so generation can continue from there. */
  rewind(position: number): void {
    this.#checkOpen();
    if (!Number.isInteger(position) || position < 0 || position > this.#position) {
      throw new RangeError(`cannot rewind to ${position}: the cache holds ${this.#position} tokens`);
    }
    this.#position = position;
  }

  /**
   * The cached keys and values of positions `0..position` (copies, position by position: `kvDim` floats each),
   * e.g. to save a conversation.
   */
  exportCache(): { position: number; keys: Float32Array[]; values: Float32Array[] } {
    this.#checkOpen();
    const positions = this.#position;
    const gather = (cache: CacheArray) => {
      const out = new Float32Array(positions * this.#kvDim);
      this.#eachHeadVector(0, positions, (cacheAt, flatAt, length) => loadCached(cache, cacheAt, out, flatAt, length));
      return out;
    };
    return { position: positions, keys: this.#keys.map(gather), values: this.#values.map(gather) };
  }

  /** Restores a cache made by {@link Session.exportCache} for the same model. */
  importCache(cache: { position: number; keys: Float32Array[]; values: Float32Array[] }): void {
    this.#checkOpen();
    const { nLayers, seqLen } = this.#model.config;
    const length = cache.position * this.#kvDim;
    if (
      !Number.isInteger(cache.position) || cache.position < 0 || cache.position > seqLen ||
      cache.keys.length !== nLayers || cache.values.length !== nLayers ||
      cache.keys.some((k) => k.length !== length) || cache.values.some((v) => v.length !== length)
    ) {
      throw new TensorlessError("the saved cache does not fit this model");
    }
    this.#reserve(cache.position);
    this.#eachHeadVector(0, cache.position, (cacheAt, flatAt, length) => {
      for (let l = 0; l < nLayers; l++) {
        this.#store(this.#keys[l], cacheAt, cache.keys[l], flatAt, length);
        this.#store(this.#values[l], cacheAt, cache.values[l], flatAt, length);
      }
    });
    this.#position = cache.position;
  }

  /**
   * Gives the session's memory (its key/value cache, its buffers and the logits array {@link Session.feed} returned)
   * back to the model's kernels now. The fast kernels keep it in their own memory, which garbage collection may not
   * notice for a long time: a 7B session's cache can be gigabytes. Using the session after, or that logits array, is
   * an error; closing again does nothing. `using session = model.newSession()` closes it at the end of the block.
   *
   * @example Close a session when done with it
   * ```ts ignore
   * using session = model.newSession();
   * const logits = session.feed(model.tokenizer.encode("Once upon a time", { bos: true }));
   * ```
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const { kernels } = this.#model;
    for (const array of [...this.#keys, ...this.#values, this.#ropeCos, this.#ropeSin, this.#logits]) {
      kernels.release?.(array);
    }
    this.#scratch.release(kernels);
    this.#keys = [];
    this.#values = [];
    this.#valueVectors = [];
    this.#capacity = 0;
    this.#position = 0;
  }

  /** {@link Session.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw new TensorlessError("this session is closed");
  }

  /** Copies `length` floats from `from[fromAt ..]` into the cache array at `cacheAt` (rounded, for bfloat16). */
  #store(cache: CacheArray, cacheAt: number, from: Float32Array, fromAt: number, length: number): void {
    if (cache instanceof Float32Array) {
      // A plain loop: for one head's few dozen floats, making a subarray costs more than the copy.
      for (let i = 0; i < length; i++) cache[cacheAt + i] = from[fromAt + i];
    } else {
      for (let i = 0; i < length; i++) cache[cacheAt + i] = floatToBf16(from[fromAt + i]);
    }
  }

  /**
   * The cache's layout in one place: calls `each(cacheAt, flatAt, headSize)` for every key/value head of the
   * `count` positions from `first`: where that head's vector is in the head-by-head cache, and where in a
   * position-by-position array that starts at position `first` (`kvDim` floats per position).
   */
  #eachHeadVector(
    first: number,
    count: number,
    each: (cacheAt: number, flatAt: number, length: number) => void,
  ): void {
    const { nKvHeads } = this.#model.config;
    const headSize = this.#kvDim / nKvHeads;
    for (let p = 0; p < count; p++) {
      for (let g = 0; g < nKvHeads; g++) {
        each((g * this.#capacity + first + p) * headSize, (p * nKvHeads + g) * headSize, headSize);
      }
    }
  }

  get #kvDim(): number {
    const { dim, nHeads, nKvHeads } = this.#model.config;
    return (dim / nHeads) * nKvHeads;
  }

  /**
   * Makes room in the cache for `positions` tokens, doubling its size as
   * needed: memory follows use, not the (file-given) context length.
   */
  #reserve(positions: number): void {
    if (positions <= this.#capacity) return;
    const { nLayers, seqLen } = this.#model.config;
    const capacity = Math.min(seqLen, Math.max(positions, 2 * this.#capacity, 64));
    const kvDim = this.#kvDim;
    const { kernels } = this.#model;
    const { nKvHeads } = this.#model.config;
    const headSize = kvDim / nKvHeads;
    // The kernels' cache memory, where their attention (if any) reads the cache in place. Each head's run moves
    // to its place in the bigger cache.
    const grow = (old: CacheArray | undefined) => {
      const length = capacity * kvDim;
      const bigger = this.#bf16
        ? kernels.allocateBf16Cache?.(length) ?? new Uint16Array(length)
        : kernels.allocateCache?.(length) ?? kernels.allocate(length);
      if (old) {
        for (let g = 0; g < nKvHeads; g++) {
          const from = g * this.#capacity * headSize;
          bigger.set(old.subarray(from, from + this.#position * headSize), g * capacity * headSize);
        }
        kernels.release?.(old);
      }
      return bigger;
    };
    for (let l = 0; l < nLayers; l++) {
      this.#keys[l] = grow(this.#keys[l]);
      this.#values[l] = grow(this.#values[l]);
    }
    this.#capacity = capacity;
    this.#valueVectors = [];
    for (const old of [this.#ropeCos, this.#ropeSin]) kernels.release?.(old);
    [this.#ropeCos, this.#ropeSin] = ropeTables(
      this.#model.config,
      this.#model.numerics.ropeTheta,
      capacity,
      (length) => kernels.allocate(length),
    );
    this.#positions = Int32Array.from({ length: capacity }, (_, i) => i);
  }

  /** The forward pass for `tokens` at positions `this.position ...`; leaves the last token's logits. */
  #forward(tokens: number[]): void {
    const { config, weights, kernels } = this.#model;
    const { dim, hiddenDim, nHeads, nKvHeads } = config;
    const n = tokens.length;
    const headSize = dim / nHeads;
    const kvDim = headSize * nKvHeads;
    const headsPerKv = nHeads / nKvHeads;
    const start = this.#position;
    const capacity = this.#capacity;
    if (this.#scratch.batch < n) {
      this.#scratch.release(kernels);
      this.#scratch = new Scratch(this.#model, n);
    }
    const { x, xb, xb2, q, k, v, hb, hb2 } = this.#scratch;

    // Embed: each token's row of the embedding table.
    for (let t = 0; t < n; t++) dequantizeRow(weights.tokenEmbedding, tokens[t], x, t * dim);

    for (let l = 0; l < weights.layers.length; l++) {
      const layer = weights.layers[l];
      const keyCache = this.#keys[l];
      const valueCache = this.#values[l];

      // Attention: normalize, project to queries, keys and values, rotate (RoPE), cache.
      this.#rmsNorm(xb, x, n, layer.attentionNorm);
      kernels.matmul(xb, n, [{ w: layer.wq, out: q }, { w: layer.wk, out: k }, { w: layer.wv, out: v }]);
      const job = {
        q,
        k,
        v,
        n,
        start,
        keys: keyCache,
        values: valueCache,
        capacity,
        heads: nHeads,
        kvHeads: nKvHeads,
        headSize,
        cos: this.#ropeCos,
        sin: this.#ropeSin,
        out: xb,
      };
      if (!kernels.rotateAndCache?.(job)) {
        for (let t = 0; t < n; t++) {
          this.#rotate(q, t * dim, dim, headSize, start + t);
          this.#rotate(k, t * kvDim, kvDim, headSize, start + t);
        }
        this.#eachHeadVector(start, n, (cacheAt, flatAt, length) => {
          this.#store(keyCache, cacheAt, k, flatAt, length);
          this.#store(valueCache, cacheAt, v, flatAt, length);
        });
      }

      // Each head of each new token attends to every cached position up to its own: with the kernels' fast path
      // when they have one (it computes the same average), else with attendTo, which also reports the weights.
      if (this.onAttention || !kernels.attend?.(job)) {
        const scale = 1 / Math.sqrt(headSize);
        const value = this.#valueReader(l, valueCache, headSize);
        for (let t = 0; t < n; t++) {
          const position = start + t;
          for (let h = 0; h < nHeads; h++) {
            const queryOffset = t * dim + h * headSize;
            const kvHead = Math.floor(h / headsPerKv);
            const headRun = kvHead * capacity;
            const weightsOut = this.onAttention ? new Float32Array(position + 1) : undefined;
            attendTo(
              this.#positions.subarray(0, position + 1),
              (i) => dot(q, queryOffset, keyCache, (headRun + i) * headSize, headSize) * scale,
              (i) => value(headRun + i),
              { out: xb.subarray(queryOffset, queryOffset + headSize), weights: weightsOut },
            );
            if (weightsOut) this.onAttention!({ layer: l, head: h, position, weights: weightsOut });
          }
        }
      }
      kernels.matmul(xb, n, [{ w: layer.wo, out: xb2 }]);
      if (!kernels.add?.(x, xb2, n * dim)) addInto(x, xb2, n * dim);

      // Feed-forward: normalize, SwiGLU (silu(w1 x) * w3 x), project down.
      this.#rmsNorm(xb, x, n, layer.ffnNorm);
      kernels.matmul(xb, n, [{ w: layer.w1, out: hb }, { w: layer.w3, out: hb2 }]);
      if (!kernels.swiglu?.(hb, hb2, n * hiddenDim)) swiglu(hb, hb2, n * hiddenDim);
      kernels.matmul(hb, n, [{ w: layer.w2, out: xb }]);
      if (!kernels.add?.(x, xb, n * dim)) addInto(x, xb, n * dim);
    }

    // Only the last token's logits are needed: the others' next tokens are already known.
    this.#rmsNorm(xb, x.subarray((n - 1) * dim), 1, weights.finalNorm);
    kernels.matmul(xb, 1, [{ w: weights.classifier, out: this.#logits }]);
    this.#position += n;
  }

  /**
   * The cached value vector at index `kvHead * capacity + position` of layer `l`, for `attendTo`: a view on the
   * cache (made once per layer after the cache grows), or, for bfloat16, the vector widened into a scratch array
   * (`attendTo` uses each value before asking for the next).
   */
  #valueReader(l: number, cache: CacheArray, headSize: number): (index: number) => Float32Array {
    if (cache instanceof Float32Array) {
      const vectors = this.#valueVectors[l] ??= Array.from(
        { length: this.#capacity * this.#model.config.nKvHeads },
        (_, i) => cache.subarray(i * headSize, (i + 1) * headSize),
      );
      return (index) => vectors[index];
    }
    const widened = new Float32Array(headSize);
    return (index) => {
      loadCached(cache, index * headSize, widened, 0, headSize);
      return widened;
    };
  }

  /** RMSNorm of `count` vectors of `x` into `out`: with the kernels' fast path when they have one, else plain loops. */
  #rmsNorm(out: Float32Array, x: Float32Array, count: number, weight: Float32Array): void {
    const eps = this.#model.numerics.normEps;
    if (this.#model.kernels.rmsNorm?.(out, x, weight, count, eps)) return;
    for (let t = 0; t < count; t++) rmsNorm(out, x, t * weight.length, weight, eps);
  }

  /** RoPE: rotates each adjacent pair (v[i], v[i+1]) of each head by its position's angle. */
  #rotate(vector: Float32Array, offset: number, length: number, headSize: number, position: number): void {
    const half = headSize / 2;
    const table = position * half;
    const cosines = this.#ropeCos, sines = this.#ropeSin;
    for (let head = offset; head < offset + length; head += headSize) {
      // Pair j of every head turns by the same angle.
      for (let j = 0; j < half; j++) {
        const cos = cosines[table + j], sin = sines[table + j];
        const v0 = vector[head + 2 * j], v1 = vector[head + 2 * j + 1];
        vector[head + 2 * j] = v0 * cos - v1 * sin;
        vector[head + 2 * j + 1] = v0 * sin + v1 * cos;
      }
    }
  }
}

/** Activation buffers for a batch of `batch` tokens. */
class Scratch {
  readonly batch: number;
  readonly x: Float32Array;
  readonly xb: Float32Array;
  readonly xb2: Float32Array;
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly hb: Float32Array;
  readonly hb2: Float32Array;

  constructor({ config, kernels }: Transformer, batch: number) {
    const { dim, hiddenDim, nHeads, nKvHeads } = config;
    const kvDim = (dim / nHeads) * nKvHeads;
    this.batch = batch;
    this.x = kernels.allocate(batch * dim);
    this.xb = kernels.allocate(batch * dim);
    this.xb2 = kernels.allocate(batch * dim);
    this.q = kernels.allocate(batch * dim);
    this.k = kernels.allocate(batch * kvDim);
    this.v = kernels.allocate(batch * kvDim);
    this.hb = kernels.allocate(batch * hiddenDim);
    this.hb2 = kernels.allocate(batch * hiddenDim);
  }

  /** Gives the buffers back to the kernels (when a bigger batch replaces them). */
  release(kernels: Kernels): void {
    for (const buffer of [this.x, this.xb, this.xb2, this.q, this.k, this.v, this.hb, this.hb2]) {
      kernels.release?.(buffer);
    }
  }
}

/**
 * RoPE angles `position · theta^(-2j/headSize)` for the first `positions` positions, rounded to float32 at the
 * same steps as llama2.c so results match it exactly, into two arrays from `allocate` (the kernels' memory).
 */
function ropeTables(
  config: LlamaConfig,
  theta: number,
  positions: number,
  allocate: (length: number) => Float32Array,
): [Float32Array, Float32Array] {
  const f = Math.fround;
  const headSize = config.dim / config.nHeads;
  const half = headSize / 2;
  const cos = allocate(positions * half);
  const sin = allocate(positions * half);
  for (let j = 0; j < half; j++) {
    const frequency = f(1 / f(Math.pow(f(theta), f((2 * j) / headSize))));
    for (let position = 0; position < positions; position++) {
      const angle = f(position * frequency);
      cos[position * half + j] = Math.cos(angle);
      sin[position * half + j] = Math.sin(angle);
    }
  }
  return [cos, sin];
}

/** `out[offset ..] = weight * x[offset ..] / rms(x[offset ..])` over one vector of `weight.length`. */
function rmsNorm(out: Float32Array, x: Float32Array, offset: number, weight: Float32Array, eps: number) {
  const size = weight.length;
  let sumSquares = 0;
  for (let j = 0; j < size; j++) sumSquares += x[offset + j] * x[offset + j];
  const scale = 1 / Math.sqrt(sumSquares / size + eps);
  for (let j = 0; j < size; j++) out[offset + j] = weight[j] * (scale * x[offset + j]);
}

/** Copies `length` cached values from `cache[cacheAt ..]` into `into[intoAt ..]` as floats (widened, for bfloat16). */
function loadCached(cache: CacheArray, cacheAt: number, into: Float32Array, intoAt: number, length: number): void {
  if (cache instanceof Float32Array) {
    into.set(cache.subarray(cacheAt, cacheAt + length), intoAt);
  } else {
    const bf16 = bf16Table();
    for (let i = 0; i < length; i++) into[intoAt + i] = bf16[cache[cacheAt + i]];
  }
}

function dot(a: Float32Array, aOffset: number, b: CacheArray, bOffset: number, length: number): number {
  if (b instanceof Uint16Array) {
    const bf16 = bf16Table();
    let sum = 0;
    for (let i = 0; i < length; i++) sum += a[aOffset + i] * bf16[b[bOffset + i]];
    return sum;
  }
  // Four partial sums: their additions do not wait on each other.
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let i = 0;
  for (; i + 3 < length; i += 4) {
    s0 += a[aOffset + i] * b[bOffset + i];
    s1 += a[aOffset + i + 1] * b[bOffset + i + 1];
    s2 += a[aOffset + i + 2] * b[bOffset + i + 2];
    s3 += a[aOffset + i + 3] * b[bOffset + i + 3];
  }
  for (; i < length; i++) s0 += a[aOffset + i] * b[bOffset + i];
  return s0 + s1 + s2 + s3;
}

/** `gate[i] = silu(gate[i]) · up[i]` with `silu(g) = g / (1 + e^-g)`: SwiGLU after its two products. */
function swiglu(gate: Float32Array, up: Float32Array, length: number): void {
  for (let i = 0; i < length; i++) gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
}

/** `x[i] += y[i]` for the first `length` values: the residual connection. */
function addInto(x: Float32Array, y: Float32Array, length: number): void {
  for (let i = 0; i < length; i++) x[i] += y[i];
}
