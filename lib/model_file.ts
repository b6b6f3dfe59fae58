/**
 * What every loader produces: the hyperparameters and weights of one Llama
 * model, whatever file format they came from. The forward pass reads only this.
 *
 * @module
 */

import type { ReadOptions } from "./file_bytes.ts";
import type { Matrix, TensorType } from "./tensor.ts";
import type { Vocabulary } from "./vocabulary.ts";

/** Hyperparameters of a Llama 2-family transformer. */
export interface LlamaConfig {
  /** Width of the residual stream (embedding length). */
  dim: number;
  /** Width of the SwiGLU feed-forward layer. */
  hiddenDim: number;
  /** Transformer layers. */
  nLayers: number;
  /** Query heads; `dim / nHeads` is the head size. */
  nHeads: number;
  /** Key/value heads (grouped-query attention when fewer than `nHeads`). */
  nKvHeads: number;
  /** Tokens in the vocabulary (rows of the embedding and the classifier). */
  vocabSize: number;
  /** Context length: the most positions a session can hold. */
  seqLen: number;
}

/** Numerical settings that vary between formats and models. */
export interface LlamaNumerics {
  /** RMSNorm epsilon (1e-5 for llama2.c files). */
  normEps: number;
  /** RoPE base frequency (10000 for Llama 2). */
  ropeTheta: number;
}

/** Weights of one transformer layer. Matrices are `out x in`, as in `y = W x`. */
export interface LayerWeights {
  /** RMSNorm weights before attention (`dim`). */
  attentionNorm: Float32Array;
  /** Query projection, `dim x dim`. */
  wq: Matrix;
  /** Key projection, `kvDim x dim`. */
  wk: Matrix;
  /** Value projection, `kvDim x dim`. */
  wv: Matrix;
  /** Attention output projection, `dim x dim`. */
  wo: Matrix;
  /** RMSNorm weights before the feed-forward layer (`dim`). */
  ffnNorm: Float32Array;
  /** Gate projection (SwiGLU's silu branch). */
  w1: Matrix;
  /** Down projection. */
  w2: Matrix;
  /** Up projection. */
  w3: Matrix;
}

/** All weights. Query/key rows use the adjacent-pairs RoPE layout (llama2.c, GGUF); loaders convert others. */
export interface LlamaWeights {
  /** `vocabSize x dim`. */
  tokenEmbedding: Matrix;
  /** The transformer layers, first to last. */
  layers: LayerWeights[];
  /** RMSNorm weights before the classifier (`dim`). */
  finalNorm: Float32Array;
  /** `vocabSize x dim`; the same object as `tokenEmbedding` when shared. */
  classifier: Matrix;
}

/** File formats `loadModel` recognises. */
export type ModelFormat = "llama2c-v0" | "llama2c-v1" | "gguf" | "safetensors";

/** A parsed model file: everything needed to build a {@link Model}, plus facts for `info`. */
export interface ModelFile {
  /** The file or directory it was read from. */
  path: string;
  /** Which format it was recognised as. */
  format: ModelFormat;
  /** Hyperparameters. */
  config: LlamaConfig;
  /** Norm epsilon and RoPE base. */
  numerics: LlamaNumerics;
  /** Every weight, as views on the file's bytes (zeros when read with `headerOnly`). */
  weights: LlamaWeights;
  /** The vocabulary, when the file carries one (GGUF). */
  vocabulary?: Vocabulary;
  /** A chat template string from the file's metadata (GGUF `tokenizer.chat_template`). */
  chatTemplate?: string;
  /** A model name from the file's metadata, if any. */
  name?: string;
  /** How many weight tensors of each encoding the file holds. */
  tensorTypes: Partial<Record<TensorType, number>>;
  /** Bytes of weight data held in memory. */
  weightBytes: number;
}

/** How a model's file or files are read. */
export interface ModelReadOptions extends ReadOptions {
  /**
   * Read only the headers and tensor directories, to describe the model (`tensorless info`): the weights are zeros
   * that take no memory until touched, and the model must not be run.
   */
  headerOnly?: boolean;
  /**
   * Supplies memory for one tensor, for files of more than `maxAllocate` bytes (which `allocate` cannot hold in one
   * piece): those are read tensor by tensor, each into memory of its own (see `Kernels.allocateTensor`).
   */
  allocateTensor?: (byteLength: number) => Uint8Array;
  /** The largest file `allocate` is given whole, when `allocateTensor` can take larger ones. Default: any. */
  maxAllocate?: number;
}

/**
 * How `options` read a file of `size` bytes: whole, only its header (`headerOnly`), or its header and then tensor by
 * tensor (larger than `maxAllocate`, with `allocateTensor` to take it).
 */
export function readingOf(options: ModelReadOptions, size: number): "whole" | "header" | "tensors" {
  if (options.headerOnly) return "header";
  return options.allocateTensor !== undefined && size > (options.maxAllocate ?? Infinity) ? "tensors" : "whole";
}
