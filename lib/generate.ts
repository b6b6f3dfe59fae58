/**
 * Text generation with llama2.c's semantics: the prompt (with BOS) is fed as
 * one batch, then tokens are sampled one at a time until `steps` positions
 * are used or the model starts a new sequence (samples BOS).
 *
 * @module
 */

import { TensorlessError } from "./errors.ts";
import type { Model } from "./model.ts";
import { Sampler, type SamplerOptions } from "./sampler.ts";

/** Options of {@link generate}. */
export interface GenerateOptions extends SamplerOptions {
  /** Text to continue. Default: empty (the model starts from BOS alone). */
  prompt?: string;
  /** Total positions, prompt included, as llama2.c's `-n`. Default 256, at most the context length. */
  steps?: number;
  /** Called with every token id: the prompt's (BOS first, `sampled` false) and then each sampled one. */
  onToken?: (id: number, sampled: boolean) => void;
}

/**
 * Streams the prompt and its continuation as text pieces (always whole UTF-8 characters).
 *
 * @example
 * ```ts ignore
 * import { generate, loadModel } from "./mod.ts";
 *
 * const model = await loadModel("weights/stories15M.bin", { tokenizer: "weights/tokenizer.bin" });
 * for await (const piece of generate(model, { prompt: "Once upon a time", steps: 64, temperature: 0 })) {
 *   await Deno.stdout.write(new TextEncoder().encode(piece));
 * }
 * ```
 */
export async function* generate(model: Model, options: GenerateOptions = {}): AsyncGenerator<string> {
  const { tokenizer, config } = model;
  const steps = Math.min(options.steps ?? 256, config.seqLen);
  const promptIds = tokenizer.encode(options.prompt ?? "", { bos: true });
  if (promptIds.length > config.seqLen) {
    throw new TensorlessError(
      `the prompt is ${promptIds.length} tokens, longer than the model's context of ${config.seqLen}`,
    );
  }
  const sampler = new Sampler(options);
  const decoder = tokenizer.decoder();
  // Closed however the loop ends (a consumer's break included), so its cache goes back to the kernels at once.
  using session = model.newSession();
  for (const id of promptIds) {
    options.onToken?.(id, false);
    const text = decoder.push(id);
    if (text) yield text;
  }
  if (steps < promptIds.length) return;
  let logits = session.feed(promptIds);
  for (let position = promptIds.length; position <= steps; position++) {
    const next = sampler.sample(logits);
    options.onToken?.(next, true);
    if (next === tokenizer.bosId) break;
    const text = decoder.push(next);
    if (text) yield text;
    if (position === steps) break;
    logits = session.feed([next]);
  }
  const rest = decoder.flush();
  if (rest) yield rest;
}
