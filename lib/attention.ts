/**
 * Attention as the essay "You don't need tensors to understand attention"
 * describes it: a weighted average. Each input gets a score, the result is
 * `Σ score(input) · value(input) / Σ score(input)`, and in a transformer
 * `score = exp(query · key / √d)`.
 *
 * @module
 */

/** Optional extras for {@link attendTo}. */
export interface AttendOptions {
  /** Where to write the result (its length is the value length). A new array when omitted. */
  out?: Float32Array;
  /** Receives each input's normalized weight `score(input) / Σ score`, in input order. */
  weights?: Float32Array;
  /** Receives the normalizer: `Σ score(input) = total · exp(maxLogScore)`. */
  totals?: { total: number; maxLogScore: number };
}

/**
 * The weighted average `Σ score(i) · value(i) / Σ score(i)` over `inputs`,
 * where `score(i) = exp(logScore(i))`.
 *
 * Scores are given as logarithms so the sum can keep a running maximum and
 * subtract it before exponentiating (one-pass "online" softmax): exp never
 * overflows, and the result is the same weighted average. A log score of
 * `-Infinity` is a score of 0: that input is ignored.
 *
 * @example The essay's example: how sweet are the nouns?
 * ```ts
 * import { attendTo } from "./attention.ts";
 * import assert from "node:assert/strict";
 *
 * const isNoun: Record<string, number> = { APPLES: 1, ORANGES: 1, AND: 0, FIGS: 1, ARE: 0 };
 * const sweetness: Record<string, number> = { APPLES: 0.6, ORANGES: 0.4, AND: 0, FIGS: 0.9, ARE: 0 };
 * const totals = { total: 0, maxLogScore: 0 };
 * const [answer] = attendTo(Object.keys(isNoun), (w) => Math.log(isNoun[w]), (w) => [sweetness[w]], { totals });
 * assert.ok(Math.abs(answer - 0.6333) < 1e-4); // (0.6 + 0.4 + 0.9) / 3
 * assert.ok(Math.abs(answer * totals.total - 1.9) < 1e-6); // the sum before normalizing
 * ```
 *
 * @param inputs the things to attend to, an array or array-like (in a transformer: the cached positions)
 * @param logScore the logarithm of each input's score (in a transformer: `query · key / √d`)
 * @param value each input's value vector
 * @returns the weighted average of the values (all zeros if every score is 0)
 */
export function attendTo<T>(
  inputs: ArrayLike<T>,
  logScore: (input: T) => number,
  value: (input: T) => ArrayLike<number>,
  options: AttendOptions = {},
): Float32Array {
  let out = options.out;
  out?.fill(0);
  let maxLogScore = -Infinity;
  let total = 0;
  const logScores = options.weights;
  const count = inputs.length;
  for (let index = 0; index < count; index++) {
    const input = inputs[index];
    const s = logScore(input);
    if (logScores) logScores[index] = s;
    if (s === -Infinity) continue;
    const v = value(input);
    if (!out) out = new Float32Array(v.length);
    if (s > maxLogScore) {
      // A new maximum: rescale what has been summed so far to the new reference.
      const rescale = Math.exp(maxLogScore - s);
      total *= rescale;
      multiply(out, rescale);
      maxLogScore = s;
    }
    const score = Math.exp(s - maxLogScore);
    total += score;
    addScaled(out, score, v);
  }
  out ??= new Float32Array(0);
  if (total > 0) divide(out, total);
  if (logScores) {
    for (let i = 0; i < count; i++) logScores[i] = total > 0 ? Math.exp(logScores[i] - maxLogScore) / total : 0;
  }
  if (options.totals) {
    options.totals.total = total;
    options.totals.maxLogScore = maxLogScore;
  }
  return out;
}

// The loops over a vector are small functions of their own: the engine compiles each for one array type.

/** `out[j] *= factor`. */
function multiply(out: Float32Array, factor: number): void {
  for (let j = 0; j < out.length; j++) out[j] *= factor;
}

/** `out[j] /= divisor`. */
function divide(out: Float32Array, divisor: number): void {
  for (let j = 0; j < out.length; j++) out[j] /= divisor;
}

/** `out[j] += factor · v[j]`. */
function addScaled(out: Float32Array, factor: number, v: ArrayLike<number>): void {
  for (let j = 0; j < out.length; j++) out[j] += factor * v[j];
}
