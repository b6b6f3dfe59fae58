/**
 * The project's own test data: small random llama2.c checkpoints and matching
 * llama2.c tokenizer files, written to a temporary folder.
 */

import { encodeLlama2c, type Llama2cEncodeOptions } from "../lib/llama2c.ts";
import type { LlamaConfig } from "../lib/model_file.ts";

/** A small seeded generator (mulberry32), so fixtures are the same on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A tiny GQA model with a vocabulary of 300 (3 specials, 256 bytes, 41 letters and words). */
export const TINY_CONFIG: LlamaConfig = {
  dim: 32,
  hiddenDim: 64,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  vocabSize: 300,
  seqLen: 48,
};

/** Random weights: norms near 1, matrices uniform in ±1/√32 (well conditioned, no NaNs). */
export function randomLlama2c(
  config: LlamaConfig = TINY_CONFIG,
  options: Llama2cEncodeOptions & { seed?: number } = {},
): Uint8Array {
  const random = seededRandom(options.seed ?? 7);
  return encodeLlama2c(config, (name, count) => {
    const values = new Float32Array(count);
    const isNorm = name.endsWith("norm");
    for (let i = 0; i < count; i++) values[i] = isNorm ? 0.8 + 0.4 * random() : (random() * 2 - 1) * 0.35;
    return values;
  }, options);
}

/** A llama2.c tokenizer.bin with `vocabSize` pieces: <unk>, <s>, </s>, 256 byte pieces, then words. */
export function tinyTokenizerBin(vocabSize = TINY_CONFIG.vocabSize): Uint8Array {
  const pieces = ["<unk>", "\n<s>\n", "\n</s>\n"];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  const words = " abcdefghijklmnopqrstuvwxyz.,!?".split("");
  words.push(" t", "th", " th", "he", " the", "in", " a", "an", "on", "er");
  for (let i = 0; pieces.length < vocabSize; i++) pieces.push(words[i] ?? `w${i}`);
  const encoder = new TextEncoder();
  const encoded = pieces.map((p) => encoder.encode(p));
  const size = 4 + encoded.reduce((sum, e) => sum + 8 + e.length, 0);
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  view.setInt32(0, Math.max(...encoded.map((e) => e.length)), true);
  let offset = 4;
  encoded.forEach((e, i) => {
    // Longer pieces score higher, so merges prefer them.
    view.setFloat32(offset, i < 259 ? 0 : -1000 + e.length * 10 - i * 0.01, true);
    view.setInt32(offset + 4, e.length, true);
    bytes.set(e, offset + 8);
    offset += 8 + e.length;
  });
  return bytes;
}

/** Writes a random model and its tokenizer into a new temporary folder. */
export async function writeTinyModel(
  options: Llama2cEncodeOptions & { seed?: number; config?: LlamaConfig } = {},
): Promise<{ dir: string; model: string; tokenizer: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tensorless-test-" });
  const model = `${dir}/model.bin`;
  const tokenizer = `${dir}/tok.bin`;
  await Deno.writeFile(model, randomLlama2c(options.config, options));
  await Deno.writeFile(tokenizer, tinyTokenizerBin(options.config?.vocabSize));
  return { dir, model, tokenizer };
}
