/**
 * Hugging Face Llama directories: `config.json` plus weights in safetensors
 * files (`model.safetensors`, or shards listed in `model.safetensors.index.json`).
 *
 * A safetensors file is a little-endian u64 header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`),
 * then the data section. Everything in the header is untrusted and checked
 * before use. Weights are views on the file's bytes; HF stores the query and
 * key projections in the "rotate-half" RoPE layout, which is converted here
 * (in place) to the adjacent-pairs layout the forward pass uses.
 *
 * @module
 */

import { ByteReader, type Placement } from "./byte_reader.ts";
import { FileFormatError } from "./errors.ts";
import { describeOpenError, readFileBytes, tensorReads } from "./file_bytes.ts";
import {
  type LayerWeights,
  type LlamaConfig,
  type LlamaNumerics,
  type ModelFile,
  type ModelReadOptions,
  readingOf,
} from "./model_file.ts";
import { dequantizeRow } from "./quant.ts";
import type { Matrix, TensorType } from "./tensor.ts";

/** Largest safetensors JSON header accepted (the format's own reference reader uses the same cap). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Largest `config.json`, index or tokenizer config read into memory. */
const MAX_JSON_FILE_BYTES = 50_000_000;

/** Bytes per element of every dtype the safetensors format defines, so any valid header can be checked. */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  U16: 2,
  I16: 2,
  F16: 2,
  BF16: 2,
  U32: 4,
  I32: 4,
  F32: 4,
  U64: 8,
  I64: 8,
  F64: 8,
};

/** The dtypes weights may have. */
const WEIGHT_DTYPES: readonly string[] = ["F32", "F16", "BF16"];

/** One tensor of a safetensors file: its header entry and a view on its bytes. */
export interface SafetensorsTensor {
  name: string;
  /** The safetensors dtype string, e.g. "F32", "BF16", "I64". */
  dtype: string;
  shape: number[];
  /** The tensor's bytes inside the file's data section (a view, not a copy). */
  data: Uint8Array;
}

/**
 * Parses the header of a safetensors file held in `bytes` and returns its
 * tensors by name. Every offset, shape and dtype is checked against the file.
 *
 * @param bytes the whole file, or only its start when `size` is given (tensor data past it read as zeros)
 * @param path the file's path, for error messages
 * @param size the file's length
 * @param place where each tensor's data goes, for the caller to read (default: views on `bytes`, zeros past it)
 */
export function parseSafetensors(
  bytes: Uint8Array,
  path: string,
  size: number = bytes.byteLength,
  place?: Placement,
): Map<string, SafetensorsTensor> {
  const reader = new ByteReader(bytes, path, 0, size, place);
  const headerLength = reader.u64("header length");
  checkHeaderLength(headerLength, reader.size, path);
  const header = parseJson(reader.utf8(headerLength, "header"), path, "header");
  if (!isObject(header)) throw new FileFormatError(path, "header is not a JSON object");

  const dataStart = 8 + headerLength;
  const dataLength = reader.size - dataStart;
  const tensors = new Map<string, SafetensorsTensor>();
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const fail = (problem: string): never => {
      throw new FileFormatError(path, `tensor ${show(name)}: ${problem}`);
    };
    if (!isObject(entry)) fail("header entry is not an object");
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string") fail("dtype is missing");
    const itemBytes = DTYPE_BYTES[dtype as string];
    if (itemBytes === undefined) fail(`unknown dtype ${show(dtype)}`);
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail("shape must be a list of at most 8 non-negative integers");
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      fail("data_offsets must be two non-negative integers");
    }
    const [begin, end] = offsets as number[];
    if (begin > end || end > dataLength) {
      fail(`data_offsets [${begin}, ${end}] are outside the data section of ${dataLength} bytes`);
    }
    // The element count, checked step by step so it cannot overflow past the bytes that exist.
    let count = (shape as number[]).includes(0) ? 0 : 1;
    for (const d of shape as number[]) {
      if (count > (end - begin) / d) fail(`shape [${shape}] does not fit in ${end - begin} bytes`);
      count *= d;
    }
    if (count * itemBytes !== end - begin) {
      fail(`shape [${shape}] of ${dtype} needs ${count * itemBytes} bytes, data_offsets give ${end - begin}`);
    }
    spans.push({ name, begin, end });
    tensors.set(name, {
      name,
      dtype: dtype as string,
      shape: shape as number[],
      data: reader.at(dataStart + begin, end - begin),
    });
  }
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i].begin < spans[i - 1].end) {
      throw new FileFormatError(path, `tensors ${show(spans[i - 1].name)} and ${show(spans[i].name)} overlap`);
    }
  }
  return tensors;
}

/**
 * Loads a Hugging Face Llama directory (`config.json`, `model.safetensors` or
 * sharded weights listed in `model.safetensors.index.json`). The tokenizer is
 * not read here: `loadModel` looks for `tokenizer.model` in the directory.
 *
 * @param dir the directory
 * @param options where the files are read to and by how many threads, or that only their headers are
 */
export async function loadSafetensorsDirectory(dir: string, options: ModelReadOptions = {}): Promise<ModelFile> {
  dir = dir.replace(/(.)\/+$/, "$1");
  const configPath = `${dir}/config.json`;
  if (!await isFile(configPath)) {
    throw new FileFormatError(dir, "is a directory without config.json (not a Hugging Face model directory)");
  }
  const json = await readJsonFile(configPath);
  const { config, numerics, tied } = parseConfig(json, configPath);
  const tensors = await readWeights(dir, options);
  const chatTemplate = await readChatTemplate(dir);

  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize } = config;
  const kvDim = (dim / nHeads) * nKvHeads;
  const tensorTypes: Partial<Record<TensorType, number>> = {};
  let weightBytes = 0;
  const take = (name: string, rows: number, cols: number): Matrix => {
    const matrix = toMatrix(tensors, name, [rows, cols], dir, options.allocate);
    tensorTypes[matrix.type] = (tensorTypes[matrix.type] ?? 0) + 1;
    weightBytes += matrix.data.byteLength;
    return matrix;
  };
  const vector = (name: string): Float32Array => {
    const matrix = take(name, 1, dim);
    const values = new Float32Array(dim);
    dequantizeRow(matrix, 0, values);
    return values;
  };

  const tokenEmbedding = take("model.embed_tokens.weight", vocabSize, dim);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < nLayers; l++) {
    const p = `model.layers.${l}.`;
    const wq = take(p + "self_attn.q_proj.weight", dim, dim);
    const wk = take(p + "self_attn.k_proj.weight", kvDim, dim);
    // Without the weights read there is nothing to move (and zeros need no moving).
    if (!options.headerOnly) {
      unpermuteRotateHalf(wq, nHeads);
      unpermuteRotateHalf(wk, nKvHeads);
    }
    layers.push({
      attentionNorm: vector(p + "input_layernorm.weight"),
      wq,
      wk,
      wv: take(p + "self_attn.v_proj.weight", kvDim, dim),
      wo: take(p + "self_attn.o_proj.weight", dim, dim),
      ffnNorm: vector(p + "post_attention_layernorm.weight"),
      w1: take(p + "mlp.gate_proj.weight", hiddenDim, dim),
      w2: take(p + "mlp.down_proj.weight", dim, hiddenDim),
      w3: take(p + "mlp.up_proj.weight", hiddenDim, dim),
    });
  }
  const finalNorm = vector("model.norm.weight");
  let classifier = tokenEmbedding;
  // As in transformers: tied embeddings ignore any stored lm_head; untied ones need it.
  if (!tied) classifier = take("lm_head.weight", vocabSize, dim);

  const name = typeof json._name_or_path === "string" && json._name_or_path !== "" ? json._name_or_path : undefined;
  return {
    path: dir,
    format: "safetensors",
    config,
    numerics,
    weights: { tokenEmbedding, layers, finalNorm, classifier },
    ...(chatTemplate !== undefined ? { chatTemplate } : {}),
    ...(name !== undefined ? { name } : {}),
    tensorTypes,
    weightBytes,
  };
}

/** Reads and checks the hyperparameters of `config.json`. */
function parseConfig(
  json: Record<string, unknown>,
  path: string,
): { config: LlamaConfig; numerics: LlamaNumerics; tied: boolean } {
  const fail = (problem: string): never => {
    throw new FileFormatError(path, problem);
  };
  if (json.model_type !== "llama") {
    fail(`model_type ${show(json.model_type ?? null)} is not supported (only "llama")`);
  }
  if (json.hidden_act !== undefined && json.hidden_act !== "silu") {
    fail(`hidden_act ${show(json.hidden_act)} is not supported (only "silu")`);
  }
  if (json.rope_scaling !== undefined && json.rope_scaling !== null) fail("rope_scaling is not supported");
  // Bias vectors would be ignored, giving wrong results: refuse them.
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (json[key] !== undefined && json[key] !== false) fail(`${key} is not supported`);
  }
  const integer = (key: string, fallback?: number): number => {
    const value = json[key] ?? fallback;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0 || value > 2 ** 31) {
      fail(`${key} must be a positive integer, got ${show(value ?? null)}`);
    }
    return value as number;
  };
  const positive = (key: string, fallback: number): number => {
    const value = json[key] ?? fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      fail(`${key} must be a positive number, got ${show(value)}`);
    }
    return value as number;
  };
  const nHeads = integer("num_attention_heads");
  const config: LlamaConfig = {
    dim: integer("hidden_size"),
    hiddenDim: integer("intermediate_size"),
    nLayers: integer("num_hidden_layers"),
    nHeads,
    nKvHeads: integer("num_key_value_heads", nHeads),
    vocabSize: integer("vocab_size"),
    seqLen: integer("max_position_embeddings"),
  };
  const { dim, nKvHeads } = config;
  if (dim % nHeads !== 0) fail(`hidden_size ${dim} is not a multiple of num_attention_heads ${nHeads}`);
  if (nHeads % nKvHeads !== 0) {
    fail(`num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`);
  }
  const headSize = dim / nHeads;
  if (headSize % 2 !== 0) fail(`head size ${headSize} is odd; RoPE needs pairs`);
  if (json.head_dim !== undefined && json.head_dim !== null && json.head_dim !== headSize) {
    fail(`head_dim ${show(json.head_dim)} differs from hidden_size / num_attention_heads = ${headSize}`);
  }
  const tie = json.tie_word_embeddings ?? false;
  if (typeof tie !== "boolean") fail("tie_word_embeddings must be true or false");
  return {
    config,
    // transformers' LlamaConfig defaults: rms_norm_eps 1e-6, rope_theta 10000.
    numerics: { normEps: positive("rms_norm_eps", 1e-6), ropeTheta: positive("rope_theta", 10000) },
    tied: tie as boolean,
  };
}

/** All tensors of the directory's safetensors file(s), by name. */
async function readWeights(dir: string, options: ModelReadOptions): Promise<Map<string, SafetensorsTensor>> {
  const single = `${dir}/model.safetensors`;
  if (await isFile(single)) return await readSafetensorsFile(single, options);
  const indexPath = `${dir}/model.safetensors.index.json`;
  if (!await isFile(indexPath)) {
    throw new FileFormatError(dir, "has no model.safetensors or model.safetensors.index.json");
  }
  const index = await readJsonFile(indexPath);
  const weightMap = index.weight_map;
  if (!isObject(weightMap)) throw new FileFormatError(indexPath, "weight_map is missing or not an object");
  const shardOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // Shards must sit in the directory itself: a name is never a path.
    if (typeof shard !== "string" || shard === "" || shard === "." || shard === ".." || /[/\\]/.test(shard)) {
      throw new FileFormatError(indexPath, `weight_map entry for ${show(name)} is not a file name in the directory`);
    }
    shardOf.set(name, shard);
  }
  const tensors = new Map<string, SafetensorsTensor>();
  for (const shard of new Set(shardOf.values())) {
    const path = `${dir}/${shard}`;
    const shardTensors = await readSafetensorsFile(path, options);
    for (const [name, tensor] of shardTensors) {
      if (shardOf.get(name) === shard) tensors.set(name, tensor);
    }
    for (const [name, owner] of shardOf) {
      if (owner === shard && !shardTensors.has(name)) {
        throw new FileFormatError(path, `has no tensor ${show(name)} although ${indexPath} says it does`);
      }
    }
  }
  return tensors;
}

/** Reads one safetensors file (or its header) so that its data section starts 8-byte aligned in memory. */
async function readSafetensorsFile(path: string, options: ModelReadOptions): Promise<Map<string, SafetensorsTensor>> {
  let size: number;
  try {
    size = (await Deno.stat(path)).size;
  } catch (error) {
    throw new FileFormatError(path, describeOpenError(error));
  }
  const headerLength = new ByteReader(await readFileBytes(path, { headBytes: 8 }), path).u64("header length");
  checkHeaderLength(headerLength, size, path);
  const alignOffset = 8 + headerLength;
  const reading = readingOf(options, size);
  if (reading === "whole") return parseSafetensors(await readFileBytes(path, { ...options, alignOffset }), path);
  // The header alone, and for a file too large for one piece of memory, each tensor into its own.
  const head = await readFileBytes(path, { alignOffset, headBytes: alignOffset });
  const reads = reading === "tensors" ? tensorReads(path, options.allocateTensor!, options.readers) : undefined;
  const tensors = parseSafetensors(head, path, size, reads?.place);
  await reads?.read();
  return tensors;
}

function checkHeaderLength(headerLength: number, fileSize: number, path: string): void {
  if (headerLength > MAX_HEADER_BYTES) {
    throw new FileFormatError(path, `header length ${headerLength} is over the limit of ${MAX_HEADER_BYTES} bytes`);
  }
  if (headerLength > fileSize - 8) {
    throw new FileFormatError(path, `header length ${headerLength} is more than the file's ${fileSize} bytes hold`);
  }
}

/**
 * The tensor `name` as a Matrix of the given shape (a vector `[cols]` when
 * `rows` is 1). The data stays a view unless it is misaligned for its dtype.
 */
function toMatrix(
  tensors: Map<string, SafetensorsTensor>,
  name: string,
  [rows, cols]: number[],
  dir: string,
  allocate = (byteLength: number): Uint8Array => new Uint8Array(byteLength),
): Matrix {
  const tensor = tensors.get(name);
  if (!tensor) throw new FileFormatError(dir, `tensor "${name}" is missing`);
  const { dtype, shape } = tensor;
  if (!WEIGHT_DTYPES.includes(dtype)) {
    throw new FileFormatError(dir, `tensor "${name}" has dtype ${dtype}; only F32, F16 and BF16 are supported`);
  }
  const fits = rows === 1 ? shape.length === 1 && shape[0] === cols : shape.length === 2 && shape[0] === rows &&
    shape[1] === cols;
  if (!fits) {
    const expected = rows === 1 ? `[${cols}]` : `[${rows}, ${cols}]`;
    throw new FileFormatError(dir, `tensor "${name}" has shape [${shape}], expected ${expected}`);
  }
  let data = tensor.data;
  if (data.byteOffset % DTYPE_BYTES[dtype] !== 0) {
    // Only a misaligned tensor is copied (into the same kind of memory as the file).
    const copy = allocate(data.byteLength).subarray(0, data.byteLength);
    copy.set(data);
    data = copy;
  }
  return { type: dtype as TensorType, rows, cols, data };
}

/**
 * Converts a query or key projection from HF's rotate-half layout to
 * adjacent pairs, in place. transformers' conversion script stores original
 * row `h*hs + 2j + i` (head h, pair j, element i of the pair) at row
 * `h*hs + i*hs/2 + j`; this moves every row back, one head at a time.
 */
export function unpermuteRotateHalf(w: Matrix, heads: number): void {
  const headSize = w.rows / heads;
  const half = headSize / 2;
  const rowLength = w.data.byteLength / w.rows;
  const headBytes = headSize * rowLength;
  const saved = new Uint8Array(headBytes);
  for (let h = 0; h < heads; h++) {
    const head = w.data.subarray(h * headBytes, (h + 1) * headBytes);
    saved.set(head);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < half; j++) {
        const from = (i * half + j) * rowLength;
        head.set(saved.subarray(from, from + rowLength), (2 * j + i) * rowLength);
      }
    }
  }
}

/** The chat template from `tokenizer_config.json`, when the directory has one. */
async function readChatTemplate(dir: string): Promise<string | undefined> {
  const path = `${dir}/tokenizer_config.json`;
  if (!await isFile(path)) return undefined;
  const template = (await readJsonFile(path)).chat_template;
  if (typeof template === "string") return template;
  // Newer files hold a list of named templates; the one called "default" is what apply_chat_template uses.
  if (Array.isArray(template)) {
    const named = template.find((t) => isObject(t) && t.name === "default") as Record<string, unknown> | undefined;
    if (named && typeof named.template === "string") return named.template;
  }
  return undefined;
}

/** Reads a JSON object from a small file, with one-line errors. */
async function readJsonFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    const { size } = await Deno.stat(path);
    if (size > MAX_JSON_FILE_BYTES) throw new FileFormatError(path, `is ${size} bytes, too large for a JSON file`);
    text = new TextDecoder().decode(await Deno.readFile(path));
  } catch (error) {
    if (error instanceof FileFormatError) throw error;
    throw new FileFormatError(path, describeOpenError(error));
  }
  const json = parseJson(text, path, "file");
  if (!isObject(json)) throw new FileFormatError(path, "is not a JSON object");
  return json;
}

function parseJson(text: string, path: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const reason = oneLine(error instanceof Error ? error.message : String(error));
    throw new FileFormatError(path, `${what} is not valid JSON: ${reason}`);
  }
}

/** A value from an untrusted file, quoted for a one-line message (control characters escaped, length capped). */
function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? "a list" : "an object";
  }
  return text.length > 80 ? text.slice(0, 77) + "..." : text;
}

/** The first line of `text`, without control characters (parser messages quote the untrusted input). */
function oneLine(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.split("\n")[0].replace(/[\u0000-\u001f\u007f]/g, "?");
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
