/**
 * llama2.c checkpoints: the legacy format (version 0: a 7-int header, then
 * float32 weights) and versioned format 1 (magic "ak42", 256-byte header,
 * norms first). Weights become views on the file's bytes.
 *
 * @module
 */

import { ByteReader, type Placement } from "./byte_reader.ts";
import type { LayerWeights, LlamaConfig, ModelFile } from "./model_file.ts";
import { f32Matrix } from "./tensor.ts";

/** The int32 magic of versioned llama2.c checkpoints ("ak42" read little-endian). */
export const LLAMA2C_MAGIC = 0x616b3432;

/** Whether `head` (the first bytes of a file) starts with the versioned llama2.c magic. */
export function isVersionedLlama2c(head: Uint8Array): boolean {
  return head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === LLAMA2C_MAGIC;
}

/**
 * Parses a llama2.c checkpoint held in `bytes` (4-byte aligned).
 *
 * @param bytes the file, or only its start when `size` is given (weights past it read as zeros)
 * @param path the file's path, for error messages
 * @param size the file's length
 * @param place where each tensor's data goes, for the caller to read (default: views on `bytes`, zeros past it)
 */
export function parseLlama2c(
  bytes: Uint8Array,
  path: string,
  size: number = bytes.byteLength,
  place?: Placement,
): ModelFile {
  const reader = new ByteReader(bytes, path, 0, size, place);
  let format: ModelFile["format"] = "llama2c-v0";
  let headerBytes = 28;
  if (isVersionedLlama2c(bytes)) {
    reader.u32("magic");
    const version = reader.i32("version");
    if (version === 2) {
      reader.fail("llama2.c version 2 (int8-quantized) checkpoints are not supported; use version 0 or 1");
    }
    if (version !== 1) reader.fail(`unknown llama2.c checkpoint version ${version}`);
    format = "llama2c-v1";
    headerBytes = 256;
  }
  const fields = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = fields.map((name) => reader.i32(name));
  // Version 0 marks a separate classifier with a negative vocabulary size; version 1 has a flag byte.
  const sharedClassifier = format === "llama2c-v0" ? rawVocab > 0 : reader.u8("shared_classifier") === 1;
  const vocabSize = Math.abs(rawVocab);
  const config: LlamaConfig = { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen };
  checkConfig(config, reader);

  const headSize = dim / nHeads;
  const kvDim = nKvHeads * headSize;
  const sizes = {
    embedding: vocabSize * dim,
    norms: nLayers * dim,
    wq: nLayers * dim * dim,
    wkv: nLayers * dim * kvDim,
    wo: nLayers * dim * dim,
    ffn: nLayers * dim * hiddenDim,
  };
  // Version 0 keeps two unused RoPE tables (freq_cis_real, freq_cis_imag) before the classifier.
  const ropeTables = format === "llama2c-v0" ? seqLen * headSize : 0;
  const floats = sizes.embedding + 2 * sizes.norms + dim + sizes.wq + 2 * sizes.wkv + sizes.wo + 3 * sizes.ffn +
    ropeTables + (sharedClassifier ? 0 : sizes.embedding);
  const expected = headerBytes + 4 * floats;
  if (reader.size < expected) {
    reader.fail(`file is shorter than its header implies: ${expected} bytes needed, ${reader.size} present`);
  }
  if (reader.size > expected) {
    reader.fail(
      `file is ${reader.size - expected} bytes longer than its header implies: not a llama2.c checkpoint?`,
    );
  }

  let offset = headerBytes;
  const take = (count: number) => {
    const bytes = reader.at(offset, count * 4);
    offset += count * 4;
    return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  };
  const perLayer = (count: number) => Array.from({ length: nLayers }, () => take(count));
  const matrices = (rows: number, cols: number) => perLayer(rows * cols).map((v) => f32Matrix(v, rows, cols));

  let embedding, attentionNorms, wq, wk, wv, wo, ffnNorms, w1, w2, w3, finalNorm;
  if (format === "llama2c-v0") {
    embedding = take(sizes.embedding);
    attentionNorms = perLayer(dim);
    wq = matrices(dim, dim);
    wk = matrices(kvDim, dim);
    wv = matrices(kvDim, dim);
    wo = matrices(dim, dim);
    ffnNorms = perLayer(dim);
    w1 = matrices(hiddenDim, dim);
    w2 = matrices(dim, hiddenDim);
    w3 = matrices(hiddenDim, dim);
    finalNorm = take(dim);
    take(ropeTables);
  } else {
    attentionNorms = perLayer(dim);
    ffnNorms = perLayer(dim);
    finalNorm = take(dim);
    embedding = take(sizes.embedding);
    wq = matrices(dim, dim);
    wk = matrices(kvDim, dim);
    wv = matrices(kvDim, dim);
    wo = matrices(dim, dim);
    w1 = matrices(hiddenDim, dim);
    w2 = matrices(dim, hiddenDim);
    w3 = matrices(hiddenDim, dim);
  }
  const tokenEmbedding = f32Matrix(embedding, vocabSize, dim);
  const classifier = sharedClassifier ? tokenEmbedding : f32Matrix(take(sizes.embedding), vocabSize, dim);
  const layers: LayerWeights[] = attentionNorms.map((attentionNorm, l) => ({
    attentionNorm,
    wq: wq[l],
    wk: wk[l],
    wv: wv[l],
    wo: wo[l],
    ffnNorm: ffnNorms[l],
    w1: w1[l],
    w2: w2[l],
    w3: w3[l],
  }));
  return {
    path,
    format,
    config,
    numerics: { normEps: 1e-5, ropeTheta: 10000 },
    weights: { tokenEmbedding, layers, finalNorm, classifier },
    tensorTypes: { F32: 2 + 9 * nLayers + (sharedClassifier ? 0 : 1) },
    weightBytes: 4 * (floats - ropeTables),
  };
}

/** Rejects hyperparameters no real model has, before any size is computed from them. */
export function checkConfig(config: LlamaConfig, reader: { fail(problem: string): never }): void {
  for (const [name, value] of Object.entries(config)) {
    if (!Number.isSafeInteger(value) || value <= 0) reader.fail(`${name} must be a positive integer, got ${value}`);
  }
  const { dim, nHeads, nKvHeads } = config;
  if (dim % nHeads !== 0) reader.fail(`dim ${dim} is not a multiple of n_heads ${nHeads}`);
  if (nHeads % nKvHeads !== 0) reader.fail(`n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  if ((dim / nHeads) % 2 !== 0) reader.fail(`head size ${dim / nHeads} is odd; RoPE needs pairs`);
}

/** Options of {@link encodeLlama2c}. */
export interface Llama2cEncodeOptions {
  /** 0: legacy layout; 1: "ak42" header, norms first. Default 0. */
  version?: 0 | 1;
  /** Whether the classifier is the embedding table (no separate matrix). Default true. */
  sharedClassifier?: boolean;
}

/**
 * Writes a llama2.c checkpoint. `values(name, count)` supplies each tensor's
 * floats in file order (names: embedding, attention_norm, wq, wk, wv, wo,
 * ffn_norm, w1, w2, w3, final_norm, classifier; per-layer tensors are asked
 * for once with all layers' values). Used to make test and benchmark models.
 */
export function encodeLlama2c(
  config: LlamaConfig,
  values: (name: string, count: number) => Float32Array,
  options: Llama2cEncodeOptions = {},
): Uint8Array {
  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen } = config;
  const version = options.version ?? 0;
  const shared = options.sharedClassifier ?? true;
  const headSize = dim / nHeads;
  const kvDim = headSize * nKvHeads;
  const tensor = (name: string, count: number) => {
    const v = values(name, count);
    if (v.length !== count) throw new RangeError(`${name}: expected ${count} values, got ${v.length}`);
    return v;
  };
  const parts: Float32Array[] = [];
  const embedding = tensor("embedding", vocabSize * dim);
  const attentionNorm = tensor("attention_norm", nLayers * dim);
  const ffnNorm = tensor("ffn_norm", nLayers * dim);
  const finalNorm = tensor("final_norm", dim);
  const projections = [
    tensor("wq", nLayers * dim * dim),
    tensor("wk", nLayers * kvDim * dim),
    tensor("wv", nLayers * kvDim * dim),
    tensor("wo", nLayers * dim * dim),
  ];
  const ffn = [tensor("w1", nLayers * hiddenDim * dim), tensor("w2", nLayers * dim * hiddenDim)];
  const w3 = tensor("w3", nLayers * hiddenDim * dim);
  if (version === 0) {
    parts.push(embedding, attentionNorm, ...projections, ffnNorm, ...ffn, w3, finalNorm);
    parts.push(new Float32Array(seqLen * headSize)); // the unused freq_cis tables
  } else {
    parts.push(attentionNorm, ffnNorm, finalNorm, embedding, ...projections, ...ffn, w3);
  }
  if (!shared) parts.push(tensor("classifier", vocabSize * dim));

  const headerBytes = version === 0 ? 28 : 256;
  const floats = parts.reduce((sum, p) => sum + p.length, 0);
  const bytes = new Uint8Array(headerBytes + 4 * floats);
  const header = new DataView(bytes.buffer);
  let offset = 0;
  if (version === 1) {
    header.setUint32(0, LLAMA2C_MAGIC, true);
    header.setInt32(4, 1, true);
    offset = 8;
  }
  const vocabField = version === 0 && !shared ? -vocabSize : vocabSize;
  for (const value of [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabField, seqLen]) {
    header.setInt32(offset, value, true);
    offset += 4;
  }
  if (version === 1) header.setUint8(offset, shared ? 1 : 0);
  offset = headerBytes;
  for (const part of parts) {
    bytes.set(new Uint8Array(part.buffer, part.byteOffset, part.byteLength), offset);
    offset += part.byteLength;
  }
  return bytes;
}
