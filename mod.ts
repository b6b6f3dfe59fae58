/**
 * tensorless: Llama 2-family language models in plain TypeScript loops, with no
 * tensor library. Attention is the essay's function {@link attendTo}: a
 * weighted average of values, weighted by `exp(query · key / √d)`.
 *
 * ```ts ignore
 * import { loadModel, Sampler } from "./mod.ts";
 *
 * const model = await loadModel("weights/stories15M.bin", { tokenizer: "weights/tokenizer.bin" });
 * using session = model.newSession();           // owns its KV cache, closed at the end of the block
 * let logits = session.feed(model.tokenizer.encode("Once upon a time", { bos: true }));
 * const sampler = new Sampler({ temperature: 0.8, topP: 0.9, seed: 42 });
 * for (let i = 0; i < 20; i++) {
 *   const id = sampler.sample(logits);
 *   logits = session.feed([id]);
 * }
 * ```
 *
 * @module
 */

export { type AttendOptions, attendTo } from "./lib/attention.ts";
export { defaultCacheEncoding, loadModel, type LoadModelOptions, Model } from "./lib/model.ts";
export { type AttentionRecord, type CacheEncoding, Session } from "./lib/transformer.ts";
export { argmax, Sampler, type SamplerOptions } from "./lib/sampler.ts";
export { generate, type GenerateOptions } from "./lib/generate.ts";
export { type EncodeOptions, loadTokenizer, TokenDecoder, Tokenizer } from "./lib/tokenizer.ts";
export { FileFormatError, TensorlessError } from "./lib/errors.ts";
export type {
  LayerWeights,
  LlamaConfig,
  LlamaNumerics,
  LlamaWeights,
  ModelFile,
  ModelFormat,
} from "./lib/model_file.ts";
export type { AttentionJob, CacheJob, Kernels, MatmulJob, RotateJob } from "./lib/kernels/kernels.ts";
export type { KernelKind } from "./lib/kernels/select.ts";
export type { Matrix, TensorType } from "./lib/tensor.ts";
export type { Vocabulary } from "./lib/vocabulary.ts";
