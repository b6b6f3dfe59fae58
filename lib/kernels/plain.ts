/**
 * The reference kernels: plain loops, one thread. Every faster path is tested
 * against these, and `--kernels plain` always selects them.
 *
 * @module
 */

import type { Kernels, MatmulJob } from "./kernels.ts";
import { dotRow } from "../quant.ts";
import { f32View } from "../tensor.ts";

/** Matrix products as plain loops over rows. */
export class PlainKernels implements Kernels {
  readonly name = "plain";

  matmul(x: Float32Array, n: number, jobs: MatmulJob[]): void {
    for (const { w, out } of jobs) {
      if (w.type === "F32") {
        matmulF32(out, f32View(w), w.rows, w.cols, x, n);
      } else {
        // Row by row, each row against every input while it is in cache.
        for (let r = 0; r < w.rows; r++) {
          for (let t = 0; t < n; t++) out[t * w.rows + r] = dotRow(w, r, x, t * w.cols);
        }
      }
    }
  }

  allocate(length: number): Float32Array {
    return new Float32Array(length);
  }

  close(): void {}
}

/**
 * `out[t*rows + r] = Σ_c w[r*cols + c] * x[t*cols + c]`. Two rows at a time
 * share each input load, with two partial sums per row: about twice the speed
 * of one row with one sum, whose additions wait on each other. Each pair of
 * rows meets every input while it is in cache.
 */
function matmulF32(out: Float32Array, w: Float32Array, rows: number, cols: number, x: Float32Array, n: number): void {
  const even = cols & ~1;
  let r = 0;
  for (; r + 1 < rows; r += 2) {
    const a = r * cols, b = a + cols;
    for (let t = 0; t < n; t++) {
      const xt = n === 1 ? x : x.subarray(t * cols, (t + 1) * cols);
      let a0 = 0, a1 = 0, b0 = 0, b1 = 0;
      for (let c = 0; c < even; c += 2) {
        const x0 = xt[c], x1 = xt[c + 1];
        a0 += w[a + c] * x0;
        a1 += w[a + c + 1] * x1;
        b0 += w[b + c] * x0;
        b1 += w[b + c + 1] * x1;
      }
      if (even < cols) {
        a0 += w[a + even] * xt[even];
        b0 += w[b + even] * xt[even];
      }
      out[t * rows + r] = a0 + a1;
      out[t * rows + r + 1] = b0 + b1;
    }
  }
  if (r < rows) {
    // The odd last row.
    const a = r * cols;
    for (let t = 0; t < n; t++) {
      let sum = 0;
      for (let c = 0; c < cols; c++) sum += w[a + c] * x[t * cols + c];
      out[t * rows + r] = sum;
    }
  }
}
