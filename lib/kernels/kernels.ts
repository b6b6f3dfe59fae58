/**
 * The small interface the forward pass computes through: matrix products
 * (every implementation), and optional fast paths for RoPE and caching, attention, RMSNorm,
 * the residual additions and SwiGLU's elementwise step, for which the forward
 * pass keeps the plain loops (and `attendTo`) as the fallback. So the plain
 * loops, WebAssembly SIMD and the worker pool are interchangeable and
 * testable against each other.
 *
 * @module
 */

import type { Matrix } from "../tensor.ts";

/** One product of a batch: `out = w · x` for every input vector. */
export interface MatmulJob {
  /** The weights, `rows x cols`. */
  w: Matrix;
  /** `n * w.rows` floats: the result for input vector t starts at `t * w.rows`. */
  out: Float32Array;
}

/** What attention and RoPE's caching share: `n` new tokens at positions `start ..` and the key/value cache. */
export interface CacheJob {
  /** Queries, `n` vectors of `heads * headSize` floats. */
  q: Float32Array;
  /** Number of new tokens. */
  n: number;
  /** Position of the first new token. */
  start: number;
  /**
   * Key cache, head by head: key head g at position p is `headSize` values at `(g * capacity + p) * headSize`;
   * floats, or bfloat16 values (a float32's top 16 bits) in a Uint16Array.
   */
  keys: Float32Array | Uint16Array;
  /** Value cache, laid out and encoded like `keys`. */
  values: Float32Array | Uint16Array;
  /** Positions each head's run of the cache has room for. */
  capacity: number;
  /** Query heads; a multiple of `kvHeads` (query head h reads key/value head `h / (heads / kvHeads)`). */
  heads: number;
  /** Key/value heads. */
  kvHeads: number;
  /** Floats per head. */
  headSize: number;
}

/**
 * Attention of `n` consecutive query tokens over a key/value cache: for each
 * token t and head h, `out` gets the weighted average that `attendTo` computes
 * with scores `exp(q · key / √headSize)` over cached positions `0 ..= start + t`
 * (queries already rotated, positions `0 .. start + n` of the cache filled).
 */
export interface AttentionJob extends CacheJob {
  /** Results, laid out like `q`. */
  out: Float32Array;
}

/**
 * RoPE and caching of `n` new tokens: each pair `(x[2j], x[2j + 1])` of each head of a token's query and key turns
 * by its position's angle j (`x₀·cos - x₁·sin`, `x₀·sin + x₁·cos`); the queries in place, the keys into the cache at
 * their positions, where the values are copied too.
 */
export interface RotateJob extends CacheJob {
  /** Keys, `n` vectors of `kvHeads * headSize` floats (they may be left unrotated: the cache gets the rotated ones). */
  k: Float32Array;
  /** Values, laid out like `k`. */
  v: Float32Array;
  /** Cosines of the angles: position p's angle j at `p * headSize / 2 + j`. */
  cos: Float32Array;
  /** Sines, laid out like `cos`. */
  sin: Float32Array;
}

/** Matrix products over weights in any {@link Matrix} encoding. */
export interface Kernels {
  /** Short name shown by `--kernels` and the benchmark. */
  readonly name: string;
  /**
   * For each job and each of the `n` input vectors in `x` (vector t is
   * `x[t*cols .. (t+1)*cols)`), computes `out[t*rows + r] = Σ_c w[r, c] · x[t*cols + c]`.
   * All jobs share the same input, so a parallel implementation can hand them
   * out together with one synchronisation.
   */
  matmul(x: Float32Array, n: number, jobs: MatmulJob[]): void;
  /**
   * A zeroed buffer for activations or a key/value cache, in memory these
   * kernels work on directly when they have room (keep the returned array
   * itself alive while using views of it).
   */
  allocate(length: number): Float32Array;
  /**
   * Optional: a zeroed buffer for a key/value cache, in memory that {@link Kernels.attend} reads directly.
   * Without it, caches come from {@link Kernels.allocate}.
   */
  allocateCache?(length: number): Float32Array;
  /**
   * Optional: the same for a cache of bfloat16 values (a float32's top 16 bits). Without it, such caches are
   * ordinary Uint16Arrays.
   */
  allocateBf16Cache?(length: number): Uint16Array;
  /** Optional: gives back an array from {@link Kernels.allocate} or an `allocate…Cache` no longer used. */
  release?(array: Float32Array | Uint16Array): void;
  /**
   * Optional: a fast path for attention. Returns false, having done nothing,
   * when it cannot take this job (e.g. the cache is not in its memory); the
   * caller then runs `attendTo`, the reference.
   */
  attend?(job: AttentionJob): boolean;
  /**
   * Optional: a fast path for RoPE and caching. Returns false, having done nothing, when it cannot take this job;
   * the caller then runs the plain loops.
   */
  rotateAndCache?(job: RotateJob): boolean;
  /**
   * Optional: `byteLength` bytes (8-byte aligned) in memory these kernels
   * read directly, to load a model file into (`readFileBytes(path, { allocate:
   * kernels.allocateBytes, readers: kernels.threads })`). Kernels without it read weights wherever they are.
   */
  allocateBytes?(byteLength: number): Uint8Array;
  /** Optional: the most bytes one {@link Kernels.allocateBytes} call can still give. */
  readonly maxAllocateBytes?: number;
  /**
   * Optional: `byteLength` bytes (64-byte aligned) for one tensor, in memory these kernels read directly, for a
   * model file larger than {@link Kernels.maxAllocateBytes}: such a file is read tensor by tensor into these.
   */
  allocateTensor?(byteLength: number): Uint8Array;
  /** Optional: the threads these kernels run on (1 when absent); a model file is read with as many. */
  readonly threads?: number;
  /**
   * Optional: SwiGLU's elementwise step, `gate[i] = silu(gate[i]) · up[i]`
   * for `i < length`, with `silu(g) = g / (1 + e^-g)`. Returns false, having
   * done nothing, when it cannot (the caller then runs the plain loop).
   */
  swiglu?(gate: Float32Array, up: Float32Array, length: number): boolean;
  /**
   * Optional: the residual connection, `x[i] += y[i]` for `i < length`. Returns false, having done nothing, when it
   * cannot (the caller then runs the plain loop).
   */
  add?(x: Float32Array, y: Float32Array, length: number): boolean;
  /**
   * Optional: RMSNorm of `count` consecutive vectors of `weight.length` floats from `x` into `out` (which may be
   * `x`): `out = weight · x / √(Σ x² / size + eps)`, vector by vector. Returns false, having done nothing, when it
   * cannot (the caller then runs the plain loop).
   */
  rmsNorm?(out: Float32Array, x: Float32Array, weight: Float32Array, count: number, eps: number): boolean;
  /** Releases workers or other resources. The kernels are unusable afterwards. */
  close(): void;
}
