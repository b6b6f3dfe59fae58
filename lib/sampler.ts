/**
 * Choosing the next token from logits, exactly as llama2.c's `run.c` does:
 * greedy at temperature 0, otherwise softmax of `logits / temperature` and one
 * draw from a xorshift generator, with top-p (nucleus) filtering when
 * `0 < topP < 1`. Float32 rounding is reproduced step by step, so the same seed
 * picks the same tokens as llama2.c.
 *
 * @module
 */

const f = Math.fround;

/** Settings of a {@link Sampler}. */
export interface SamplerOptions {
  /** 0 picks the most likely token; higher values flatten the distribution. Default 1. */
  temperature?: number;
  /** Nucleus sampling: draw only from the most likely tokens whose probabilities sum to `topP`. Default 0.9. */
  topP?: number;
  /** Seed of the random generator (an unsigned 64-bit value). Default 1. */
  seed?: number | bigint;
}

const MASK64 = (1n << 64n) - 1n;

/**
 * Picks token ids from logits.
 *
 * @example
 * ```ts
 * import { Sampler } from "./sampler.ts";
 * import assert from "node:assert/strict";
 *
 * const logits = new Float32Array([0.1, 2.5, -1, 0.3]);
 * assert.equal(new Sampler({ temperature: 0 }).sample(logits), 1);
 * const sampler = new Sampler({ temperature: 0.8, topP: 0.9, seed: 42 });
 * const id = sampler.sample(logits);
 * assert.ok(id >= 0 && id < 4);
 * ```
 */
export class Sampler {
  /** 0 picks the most likely token; may be changed between draws. */
  temperature: number;
  /** Nucleus threshold; 0 or >= 1 samples from the whole distribution. May be changed between draws. */
  topP: number;
  #state: bigint;
  #probabilities = new Float32Array(0);
  #order = new Int32Array(0);

  /** A sampler seeded with `options.seed` (default 1, as llama2.c's recorded runs). */
  constructor(options: SamplerOptions = {}) {
    this.temperature = options.temperature ?? 1;
    this.topP = options.topP ?? 0.9;
    if (!(this.temperature >= 0) || !(this.topP >= 0)) throw new RangeError("temperature and topP must be >= 0");
    this.#state = BigInt(options.seed ?? 1) & MASK64;
  }

  /** Restarts the random generator from `seed`. */
  reseed(seed: number | bigint): void {
    this.#state = BigInt(seed) & MASK64;
  }

  /** The next token id. `logits` is left unchanged. */
  sample(logits: Float32Array): number {
    if (this.temperature === 0) return argmax(logits);
    const n = logits.length;
    if (this.#probabilities.length !== n) {
      this.#probabilities = new Float32Array(n);
      this.#order = new Int32Array(n);
    }
    const probabilities = this.#probabilities;
    const temperature = f(this.temperature);
    for (let i = 0; i < n; i++) probabilities[i] = logits[i] / temperature;
    softmax(probabilities);
    const coin = this.#randomFloat();
    const topP = f(this.topP);
    return topP <= 0 || topP >= 1
      ? sampleMultinomial(probabilities, coin)
      : this.#sampleTopP(probabilities, topP, coin);
  }

  /** llama2.c's `random_u32`: xorshift64* keeping the high 32 bits. */
  #randomU32(): number {
    let s = this.#state;
    s ^= s >> 12n;
    s = (s ^ (s << 25n)) & MASK64;
    s ^= s >> 27n;
    this.#state = s;
    return Number(((s * 0x2545F4914F6CDD1Dn) & MASK64) >> 32n);
  }

  /** llama2.c's `random_f32`: a float in [0, 1). */
  #randomFloat(): number {
    return f((this.#randomU32() >>> 8) / 16777216);
  }

  /** Top-p sampling as llama2.c's `sample_topp`. */
  #sampleTopP(probabilities: Float32Array, topP: number, coin: number): number {
    const n = probabilities.length;
    // Tokens below this probability cannot be part of the nucleus, so skip sorting them.
    const cutoff = f(f(1 - topP) / (n - 1));
    const order = this.#order;
    let count = 0;
    for (let i = 0; i < n; i++) if (probabilities[i] >= cutoff) order[count++] = i;
    const candidates = Array.from(order.subarray(0, count));
    // Descending probability; ties keep index order (glibc's qsort is a stable merge sort here).
    candidates.sort((a, b) => probabilities[b] - probabilities[a] || a - b);
    let cumulative = 0;
    let last = count - 1;
    for (let i = 0; i < count; i++) {
      cumulative = f(cumulative + probabilities[candidates[i]]);
      if (cumulative > topP) {
        last = i;
        break;
      }
    }
    const r = f(coin * cumulative);
    let cdf = 0;
    for (let i = 0; i <= last; i++) {
      cdf = f(cdf + probabilities[candidates[i]]);
      if (r < cdf) return candidates[i];
    }
    return candidates[last];
  }
}

/** Index of the largest value (the first one on ties). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** In-place softmax with float32 rounding at each step, as llama2.c's `softmax`. */
function softmax(x: Float32Array): void {
  let max = x[0];
  for (let i = 1; i < x.length; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    x[i] = Math.exp(f(x[i] - max));
    sum = f(sum + x[i]);
  }
  for (let i = 0; i < x.length; i++) x[i] = x[i] / sum;
}

/** llama2.c's `sample_mult`: the first index whose cumulative probability exceeds `coin`. */
function sampleMultinomial(probabilities: Float32Array, coin: number): number {
  let cdf = 0;
  for (let i = 0; i < probabilities.length; i++) {
    cdf = f(cdf + probabilities[i]);
    if (coin < cdf) return i;
  }
  return probabilities.length - 1;
}
