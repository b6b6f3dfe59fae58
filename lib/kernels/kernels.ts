/**
 * The small interface every matrix-product implementation provides. The
 * forward pass calls only this, so the plain loops, WebAssembly SIMD and the
 * worker pool are interchangeable and testable against each other.
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
  /** A zeroed activation buffer these kernels can work on (shared memory when they use workers). */
  allocate(length: number): Float32Array;
  /**
   * Optional: `byteLength` bytes (8-byte aligned) in memory these kernels
   * read directly, to load a model file into (`readFileBytes(path, align,
   * kernels.allocateBytes)`). Kernels without it read weights wherever they are.
   */
  allocateBytes?(byteLength: number): Uint8Array;
  /** Releases workers or other resources. The kernels are unusable afterwards. */
  close(): void;
}
