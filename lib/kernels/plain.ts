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
        const weights = f32View(w);
        for (let t = 0; t < n; t++) matvecF32(out, t * w.rows, weights, w.rows, w.cols, x, t * w.cols);
      } else {
        for (let t = 0; t < n; t++) {
          for (let r = 0; r < w.rows; r++) out[t * w.rows + r] = dotRow(w, r, x, t * w.cols);
        }
      }
    }
  }

  allocate(length: number): Float32Array {
    return new Float32Array(length);
  }

  close(): void {}
}

/** `out[outOffset + r] = Σ_c w[r*cols + c] * x[xOffset + c]`, four partial sums per row. */
function matvecF32(
  out: Float32Array,
  outOffset: number,
  w: Float32Array,
  rows: number,
  cols: number,
  x: Float32Array,
  xOffset: number,
): void {
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let c = 0;
    for (; c + 3 < cols; c += 4) {
      s0 += w[base + c] * x[xOffset + c];
      s1 += w[base + c + 1] * x[xOffset + c + 1];
      s2 += w[base + c + 2] * x[xOffset + c + 2];
      s3 += w[base + c + 3] * x[xOffset + c + 3];
    }
    for (; c < cols; c++) s0 += w[base + c] * x[xOffset + c];
    out[outOffset + r] = s0 + s1 + s2 + s3;
  }
}
