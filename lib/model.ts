/**
 * Loading a model from any supported file and running it: {@link loadModel}
 * recognises the format by content, pairs the weights with a tokenizer and
 * kernels, and returns a {@link Model} whose sessions generate text.
 *
 * @module
 */

import { FileFormatError, TensorlessError } from "./errors.ts";
import { BeyondHead } from "./byte_reader.ts";
import { describeOpenError, readFileBytes, SHRANK, tensorReads } from "./file_bytes.ts";
import type { Kernels } from "./kernels/kernels.ts";
import { createKernels, type KernelKind } from "./kernels/select.ts";
import { ggufToModelFile, isGguf, parseGguf } from "./gguf.ts";
import { parseLlama2c } from "./llama2c.ts";
import { loadSafetensorsDirectory } from "./safetensors.ts";
import { type LlamaConfig, type ModelFile, type ModelReadOptions, readingOf } from "./model_file.ts";
import { loadTokenizer, Tokenizer } from "./tokenizer.ts";
import { CACHE_ENCODINGS, type CacheEncoding, Session } from "./transformer.ts";

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /**
   * A tokenizer file (llama2.c `tokenizer.bin` or SentencePiece `tokenizer.model`). Optional when the model
   * carries its vocabulary (GGUF) or has a `tokenizer.model` / `tokenizer.bin` beside it.
   */
  tokenizer?: string;
  /**
   * Which matrix kernels to use: `"plain"` loops (the reference, the default), `"wasm"` (WebAssembly SIMD, one
   * thread), `"fast"` (WebAssembly SIMD on a worker pool), or a {@link Kernels} object. With `"wasm"` or
   * `"fast"` call {@link Model.close} when done, so the workers end.
   */
  kernels?: KernelKind | Kernels;
  /** Threads for `"fast"` kernels (default `navigator.hardwareConcurrency`). */
  threads?: number;
  /** How sessions cache keys and values (default: {@link defaultCacheEncoding} of the file). */
  cache?: CacheEncoding;
}

/**
 * The key/value cache's encoding for a model: bfloat16 when its layers' weights are quantized (their results are
 * approximate already: the 8-bit activations of the quantized products move the logits by 2-3% of their largest,
 * bfloat16 keys and values by about 0.3%), float32 otherwise (F32, F16 and BF16 weights, whose results match
 * llama2.c's exactly).
 *
 * @example
 * ```ts ignore
 * import { defaultCacheEncoding, loadModel } from "./mod.ts";
 *
 * const model = await loadModel("weights/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf");
 * console.log(model.cacheEncoding, defaultCacheEncoding(model.file)); // "bf16" "bf16"
 * const exact = await loadModel("weights/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", { cache: "f32" }); // twice the memory
 * ```
 */
export function defaultCacheEncoding(file: ModelFile): CacheEncoding {
  const exact = ["F32", "F16", "BF16"];
  const quantized = file.weights.layers.some((layer) =>
    [layer.wq, layer.wk, layer.wv, layer.wo, layer.w1, layer.w2, layer.w3].some((w) => !exact.includes(w.type))
  );
  return quantized ? "bf16" : "f32";
}

/**
 * A loaded model: its configuration, tokenizer and weights. Create a
 * {@link Session} per conversation with {@link Model.newSession}.
 */
export class Model {
  /** Hyperparameters. */
  readonly config: LlamaConfig;
  /** Turns text into token ids and back. */
  readonly tokenizer: Tokenizer;
  /** The parsed file: format, weights, metadata. */
  readonly file: ModelFile;
  /** The matrix kernels sessions run on. */
  readonly kernels: Kernels;
  /** How sessions cache keys and values. */
  readonly cacheEncoding: CacheEncoding;

  /**
   * Pairs parsed weights with a tokenizer and kernels; {@link loadModel} is the usual way to get a model. The cache
   * encoding defaults to {@link defaultCacheEncoding}'s.
   */
  constructor(file: ModelFile, tokenizer: Tokenizer, kernels: Kernels, cache?: CacheEncoding) {
    this.file = file;
    this.config = file.config;
    this.tokenizer = tokenizer;
    this.kernels = kernels;
    if (cache !== undefined && !CACHE_ENCODINGS.includes(cache)) {
      throw new RangeError(`unknown cache encoding "${cache}" (${CACHE_ENCODINGS.join(" or ")})`);
    }
    this.cacheEncoding = cache ?? defaultCacheEncoding(file);
  }

  /** RMSNorm epsilon and RoPE base, from the file. */
  get numerics(): ModelFile["numerics"] {
    return this.file.numerics;
  }

  /** The weights, as the forward pass reads them. */
  get weights(): ModelFile["weights"] {
    return this.file.weights;
  }

  /** A new session with an empty key/value cache; {@link Session.close} it when done (or declare it with `using`). */
  newSession(): Session {
    return new Session(this);
  }

  /** Releases the kernels' workers, if any. */
  close(): void {
    this.kernels.close();
  }
}

/**
 * Loads a model file or Hugging Face directory.
 *
 * @example
 * ```ts ignore
 * import { loadModel, Sampler } from "./mod.ts";
 *
 * const model = await loadModel("weights/stories15M.bin", { tokenizer: "weights/tokenizer.bin" });
 * const session = model.newSession();
 * const logits = session.feed(model.tokenizer.encode("Once upon a time", { bos: true }));
 * const next = new Sampler({ temperature: 0 }).sample(logits);
 * console.log(model.tokenizer.decode([next]));
 * ```
 *
 * @param path a llama2.c checkpoint, a GGUF file, or a directory with `config.json` and safetensors
 */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
  const given = typeof options.kernels === "object" ? options.kernels : undefined;
  const kind = options.kernels as KernelKind | undefined ?? "plain";
  const kernels = given ?? await createKernels(kind, options.threads, await modelBytes(path));
  try {
    // Read the weights straight into memory the kernels use, when they have such memory.
    const file = await readModelFile(path, kernelMemory(kernels));
    const tokenizer = await findTokenizer(file, options.tokenizer);
    return new Model(file, tokenizer, kernels, options.cache);
  } catch (error) {
    if (!given) kernels.close();
    throw error;
  }
}

/**
 * The first read of a file's header when only the header is wanted: most GGUF headers (vocabulary included) fit,
 * and a longer one is read again, whole.
 */
const HEADER_GUESS = 4 << 20;

/** Parses a model file or directory, recognising the format by its content. */
export async function readModelFile(path: string, options: ModelReadOptions = {}): Promise<ModelFile> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    throw new FileFormatError(path, describeOpenError(error));
  }
  if (info.isDirectory) return await loadSafetensorsDirectory(path, options);
  const size = info.size, reading = readingOf(options, size);
  if (reading === "whole") {
    const bytes = await readFileBytes(path, options);
    return isGguf(bytes) ? ggufToModelFile(parseGguf(bytes, path)) : parseLlama2c(bytes, path);
  }
  // The header alone (grown until it holds the whole tensor directory), then each tensor into its own memory.
  for (let headBytes = HEADER_GUESS;;) {
    const head = await readFileBytes(path, { headBytes });
    const tensors = reading === "tensors" ? tensorReads(path, options.allocateTensor!, options.readers) : undefined;
    try {
      // Parsers place tensors only once their header is read: a BeyondHead comes before any placement.
      const parsed = isGguf(head)
        ? parseGguf(head, path, size, tensors?.place)
        : parseLlama2c(head, path, size, tensors?.place);
      await tensors?.read();
      return "tensors" in parsed ? ggufToModelFile(parsed) : parsed;
    } catch (error) {
      if (!(error instanceof BeyondHead)) throw error;
      // Read more, unless that was all the file now holds.
      if (head.length < headBytes) throw new FileFormatError(path, SHRANK);
      headBytes = Math.max(error.end, 4 * headBytes);
    }
  }
}

/**
 * How to read a model into `kernels`' own memory, when they have some: whole, or tensor by tensor when larger than
 * one piece of it holds.
 */
export function kernelMemory(kernels: Kernels): ModelReadOptions {
  return {
    allocate: kernels.allocateBytes?.bind(kernels),
    readers: kernels.threads,
    allocateTensor: kernels.allocateTensor?.bind(kernels),
    maxAllocate: kernels.maxAllocateBytes,
  };
}

/** Bytes of the model at `path`: the file's size, or a directory's safetensors files' (0 if it cannot be read). */
export async function modelBytes(path: string): Promise<number> {
  try {
    const info = await Deno.stat(path);
    if (!info.isDirectory) return info.size;
    let total = 0;
    for await (const entry of Deno.readDir(path)) {
      if (entry.name.endsWith(".safetensors")) total += (await Deno.stat(`${path}/${entry.name}`)).size;
    }
    return total;
  } catch {
    return 0;
  }
}

/** The tokenizer named by the user, carried by the file, or lying beside it. */
export async function findTokenizer(file: ModelFile, tokenizerPath?: string): Promise<Tokenizer> {
  const { vocabSize } = file.config;
  if (tokenizerPath !== undefined) return await loadTokenizer(tokenizerPath, vocabSize);
  if (file.vocabulary) {
    const tokenizer = new Tokenizer(file.vocabulary);
    if (tokenizer.vocabSize !== vocabSize) {
      throw new FileFormatError(
        file.path,
        `vocabulary has ${tokenizer.vocabSize} pieces, the model expects ${vocabSize}`,
      );
    }
    return tokenizer;
  }
  const folder = file.path.includes("/") ? file.path.slice(0, file.path.lastIndexOf("/") + 1) : "./";
  const candidates = file.format === "safetensors" ? [file.path + "/tokenizer.model"] : [
    folder + "tokenizer.model",
    folder + "tokenizer.bin",
  ];
  for (const candidate of candidates) {
    if (await exists(candidate)) return await loadTokenizer(candidate, vocabSize);
  }
  throw new TensorlessError(`${file.path}: the model has no vocabulary; pass a tokenizer file (--tokenizer)`);
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
