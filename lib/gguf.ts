/**
 * GGUF files (llama.cpp's model format, versions 2 and 3): metadata, tensor
 * directory and tensor data. Weights stay in the file's encoding (F32, F16,
 * BF16 or block-quantized) as views on the file's bytes; nothing is
 * dequantized up front. Every count, length and offset in the file is checked
 * against the file's size before it is used.
 *
 * @module
 */

import { ByteReader, type Placement } from "./byte_reader.ts";
import { FileFormatError } from "./errors.ts";
import { checkConfig } from "./llama2c.ts";
import type { LayerWeights, LlamaConfig, LlamaNumerics, ModelFile } from "./model_file.ts";
import { dequantizeRow } from "./quant.ts";
import type { Matrix, TensorType } from "./tensor.ts";
import { TENSOR_TYPES } from "./tensor.ts";
import { PieceType, type Vocabulary } from "./vocabulary.ts";

/** A metadata value: numbers, strings, booleans, or arrays of them (numeric arrays as typed arrays). */
export type GgufValue =
  | number
  | bigint
  | boolean
  | string
  | GgufValue[]
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array;

/** One tensor of a GGUF file. */
export interface GgufTensor {
  name: string;
  /** ggml type id as stored in the file. */
  typeId: number;
  /** ggml type name (`"Q4_K"`, `"IQ2_XS"`, ...). */
  typeName: string;
  /** The encoding, when tensorless can read it. */
  type?: TensorType;
  /** Dimensions in GGUF order: `shape[0]` is the row length. */
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  byteLength: number;
  /** A view on the file's bytes (no copy). */
  data: Uint8Array;
}

/** A parsed GGUF file. */
export interface GgufFile {
  path: string;
  version: number;
  /** Alignment of tensor data (`general.alignment`, default 32). */
  alignment: number;
  /** Where the tensor data section starts in the file. */
  dataOffset: number;
  metadata: Map<string, GgufValue>;
  /** In file order. */
  tensors: GgufTensor[];
}

/** Block geometry of every ggml type id (ggml.h `enum ggml_type`, `ggml_type_traits`); gaps are removed types. */
const GGML_TYPES: Record<number, { name: string; blockSize: number; blockBytes: number }> = {
  0: { name: "F32", blockSize: 1, blockBytes: 4 },
  1: { name: "F16", blockSize: 1, blockBytes: 2 },
  2: { name: "Q4_0", blockSize: 32, blockBytes: 18 },
  3: { name: "Q4_1", blockSize: 32, blockBytes: 20 },
  6: { name: "Q5_0", blockSize: 32, blockBytes: 22 },
  7: { name: "Q5_1", blockSize: 32, blockBytes: 24 },
  8: { name: "Q8_0", blockSize: 32, blockBytes: 34 },
  9: { name: "Q8_1", blockSize: 32, blockBytes: 36 },
  10: { name: "Q2_K", blockSize: 256, blockBytes: 84 },
  11: { name: "Q3_K", blockSize: 256, blockBytes: 110 },
  12: { name: "Q4_K", blockSize: 256, blockBytes: 144 },
  13: { name: "Q5_K", blockSize: 256, blockBytes: 176 },
  14: { name: "Q6_K", blockSize: 256, blockBytes: 210 },
  15: { name: "Q8_K", blockSize: 256, blockBytes: 292 },
  16: { name: "IQ2_XXS", blockSize: 256, blockBytes: 66 },
  17: { name: "IQ2_XS", blockSize: 256, blockBytes: 74 },
  18: { name: "IQ3_XXS", blockSize: 256, blockBytes: 98 },
  19: { name: "IQ1_S", blockSize: 256, blockBytes: 50 },
  20: { name: "IQ4_NL", blockSize: 32, blockBytes: 18 },
  21: { name: "IQ3_S", blockSize: 256, blockBytes: 110 },
  22: { name: "IQ2_S", blockSize: 256, blockBytes: 82 },
  23: { name: "IQ4_XS", blockSize: 256, blockBytes: 136 },
  24: { name: "I8", blockSize: 1, blockBytes: 1 },
  25: { name: "I16", blockSize: 1, blockBytes: 2 },
  26: { name: "I32", blockSize: 1, blockBytes: 4 },
  27: { name: "I64", blockSize: 1, blockBytes: 8 },
  28: { name: "F64", blockSize: 1, blockBytes: 8 },
  29: { name: "IQ1_M", blockSize: 256, blockBytes: 56 },
  30: { name: "BF16", blockSize: 1, blockBytes: 2 },
  34: { name: "TQ1_0", blockSize: 256, blockBytes: 54 },
  35: { name: "TQ2_0", blockSize: 256, blockBytes: 66 },
  39: { name: "MXFP4", blockSize: 32, blockBytes: 17 },
};

/** ggml type ids of the encodings tensorless reads. */
export const GGML_TYPE_IDS: Record<TensorType, number> = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30,
};

/** GGUF metadata value type ids. */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** Smallest encoding of one value of each type: lets a count be checked against the bytes left before reading. */
const MIN_VALUE_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

/** Arrays nested deeper than this are refused (no real file nests at all; deep nesting would exhaust the stack). */
const MAX_ARRAY_DEPTH = 8;

/** Smallest tensor directory entry: name length, n_dims, type, offset. */
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8;

/** Whether `bytes` start with the GGUF magic. */
export function isGguf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x47 && bytes[1] === 0x47 && bytes[2] === 0x55 && bytes[3] === 0x46;
}

/**
 * Parses a GGUF file held in `bytes` (as read by `readFileBytes`: its start
 * 8-byte aligned in memory). Tensor data become views on `bytes`.
 *
 * @param bytes the file, or only its start when `size` is given (throws `BeyondHead` if that is too short for
 *   the header and tensor directory; tensor data past it read as zeros)
 * @param path the file's path, for error messages
 * @param size the file's length
 * @param place where each tensor's data goes, for the caller to read (default: views on `bytes`, zeros past it)
 */
export function parseGguf(
  bytes: Uint8Array,
  path: string,
  size: number = bytes.byteLength,
  place?: Placement,
): GgufFile {
  const r: ByteReader = new ByteReader(bytes, path, 0, size, place);
  if (!isGguf(bytes)) r.fail('not a GGUF file (no "GGUF" magic)');
  r.offset = 4;
  const version = r.u32("version");
  if (version === 1) r.fail("GGUF version 1 is not supported (only versions 2 and 3); convert the file again");
  if (version !== 2 && version !== 3) {
    if (version > 0xffff && (version & 0xffff) === 0) r.fail("big-endian GGUF files are not supported");
    r.fail(`GGUF version ${version} is not supported (only versions 2 and 3)`);
  }
  const tensorCount = r.u64("tensor count");
  const kvCount = r.u64("metadata count");
  if (kvCount > r.remaining / (8 + 4 + 1)) r.fail(`metadata count ${kvCount} is larger than the file can hold`);

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = readString(r, `metadata key ${i}`);
    if (metadata.has(key)) r.fail(`metadata key ${quote(key)} appears twice`);
    const type = r.u32(`type of metadata ${quote(key)}`);
    metadata.set(key, readValue(r, view, type, `metadata ${quote(key)}`, 0));
  }

  let alignment = 32;
  const alignValue = metadata.get("general.alignment");
  if (alignValue !== undefined) {
    if (typeof alignValue !== "number" || !Number.isInteger(alignValue) || alignValue <= 0) {
      r.fail(`general.alignment must be a positive integer, got ${describe(alignValue)}`);
    }
    if ((alignValue & (alignValue - 1)) !== 0 || alignValue > 2 ** 30) {
      r.fail(`general.alignment ${alignValue} is not a power of two (at most 2^30)`);
    }
    alignment = alignValue;
  }

  if (tensorCount > r.remaining / MIN_TENSOR_INFO_BYTES) {
    r.fail(`tensor count ${tensorCount} is larger than the file can hold`);
  }
  const infos: { name: string; shape: number[]; typeId: number; relative: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = readString(r, `name of tensor ${i}`);
    if (names.has(name)) r.fail(`tensor ${quote(name)} appears twice`);
    names.add(name);
    const nDims = r.u32(`dimension count of tensor ${quote(name)}`);
    if (nDims > 4) r.fail(`tensor ${quote(name)} has ${nDims} dimensions (at most 4)`);
    const shape: number[] = [];
    for (let d = 0; d < nDims; d++) shape.push(r.u64(`dimension ${d} of tensor ${quote(name)}`));
    const typeId = r.u32(`type of tensor ${quote(name)}`);
    const relative = r.u64(`offset of tensor ${quote(name)}`);
    infos.push({ name, shape, typeId, relative });
  }

  const dataOffset = Math.ceil(r.offset / alignment) * alignment;
  if (infos.length > 0 && dataOffset > r.size) {
    r.fail(`file ends before its tensor data section (at offset ${dataOffset})`);
  }
  const dataBytes = Math.max(0, r.size - dataOffset);

  const tensors: GgufTensor[] = [];
  for (const { name, shape, typeId, relative } of infos) {
    const geometry = GGML_TYPES[typeId];
    if (geometry === undefined) r.fail(`tensor ${quote(name)} has unknown ggml type id ${typeId}`);
    let count = 1;
    for (const dim of shape) {
      if (dim !== 0 && count > Number.MAX_SAFE_INTEGER / dim) {
        r.fail(`tensor ${quote(name)} shape [${shape}] is too large`);
      }
      count *= dim;
    }
    if (shape.length > 0 && shape[0] % geometry.blockSize !== 0) {
      r.fail(`tensor ${quote(name)} rows of ${shape[0]} are not a whole number of ${geometry.name} blocks`);
    }
    const byteLength = (count / geometry.blockSize) * geometry.blockBytes;
    if (relative % alignment !== 0) {
      r.fail(`tensor ${quote(name)} offset ${relative} is not a multiple of ${alignment}`);
    }
    if (relative > dataBytes || byteLength > dataBytes - relative) {
      r.fail(`tensor ${quote(name)} (${byteLength} bytes at data offset ${relative}) extends past the end of the file`);
    }
    const offset = dataOffset + relative;
    // Typed-array views need element-aligned data; the data section's alignment gives it in any real file.
    const elementBytes = geometry.blockSize === 1 ? geometry.blockBytes : 1;
    if ((bytes.byteOffset + offset) % elementBytes !== 0) {
      r.fail(`tensor ${quote(name)} data is not ${elementBytes}-byte aligned`);
    }
    const type = geometry.name in TENSOR_TYPES ? geometry.name as TensorType : undefined;
    tensors.push({
      name,
      typeId,
      typeName: geometry.name,
      type,
      shape,
      offset,
      byteLength,
      data: r.at(offset, byteLength),
    });
  }

  const byOffset = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const previous = byOffset[i - 1];
    if (previous.offset + previous.byteLength > byOffset[i].offset) {
      r.fail(`tensors ${quote(previous.name)} and ${quote(byOffset[i].name)} overlap`);
    }
  }
  return { path, version, alignment, dataOffset, metadata, tensors };
}

function readString(r: ByteReader, what: string): string {
  const length = r.u64(`length of ${what}`);
  return r.utf8(length, what);
}

function readValue(r: ByteReader, view: DataView, type: number, label: string, depth: number): GgufValue {
  switch (type) {
    case GgufValueType.UINT8:
      return r.u8(label);
    case GgufValueType.INT8:
      return r.i8(label);
    case GgufValueType.UINT16:
      return r.u16(label);
    case GgufValueType.INT16:
      return r.i16(label);
    case GgufValueType.UINT32:
      return r.u32(label);
    case GgufValueType.INT32:
      return r.i32(label);
    case GgufValueType.FLOAT32:
      return r.f32(label);
    case GgufValueType.BOOL:
      return r.u8(label) !== 0;
    case GgufValueType.STRING:
      return readString(r, label);
    case GgufValueType.UINT64:
    case GgufValueType.INT64: {
      r.need(8, label);
      const big = type === GgufValueType.UINT64 ? view.getBigUint64(r.offset, true) : view.getBigInt64(r.offset, true);
      r.offset += 8;
      // Beyond 2^53 a number would lose digits: keep those as bigint.
      return big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(big) : big;
    }
    case GgufValueType.FLOAT64:
      return r.f64(label);
    case GgufValueType.ARRAY:
      return readArray(r, view, label, depth);
    default:
      return r.fail(`${label} has unknown value type ${type}`);
  }
}

function readArray(r: ByteReader, view: DataView, label: string, depth: number): GgufValue {
  if (depth >= MAX_ARRAY_DEPTH) r.fail(`${label} nests arrays more than ${MAX_ARRAY_DEPTH} deep`);
  const type = r.u32(`element type of ${label}`);
  const count = r.u64(`length of ${label}`);
  const minBytes = MIN_VALUE_BYTES[type];
  if (minBytes === undefined) r.fail(`${label} is an array of unknown value type ${type}`);
  if (count > r.remaining / minBytes) {
    r.fail(`${label} claims ${count} elements, more than the ${r.remaining} bytes left can hold`);
  }
  // Elements of a fixed size are read straight from the view below, so all their bytes must be there.
  if (type !== GgufValueType.STRING && type !== GgufValueType.ARRAY) r.need(count * minBytes, label);
  const p = r.offset;
  switch (type) {
    case GgufValueType.UINT8:
      r.offset += count;
      return r.bytes.slice(p, p + count);
    case GgufValueType.INT8: {
      const out = new Int8Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt8(p + i);
      r.offset += count;
      return out;
    }
    case GgufValueType.UINT16:
    case GgufValueType.INT16: {
      const out = type === GgufValueType.UINT16 ? new Uint16Array(count) : new Int16Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getUint16(p + 2 * i, true);
      r.offset += 2 * count;
      return out;
    }
    case GgufValueType.UINT32:
    case GgufValueType.INT32: {
      const out = type === GgufValueType.UINT32 ? new Uint32Array(count) : new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getUint32(p + 4 * i, true);
      r.offset += 4 * count;
      return out;
    }
    case GgufValueType.FLOAT32: {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(p + 4 * i, true);
      r.offset += 4 * count;
      return out;
    }
    case GgufValueType.FLOAT64: {
      const out = new Float64Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(p + 8 * i, true);
      r.offset += 8 * count;
      return out;
    }
    default: {
      const out: GgufValue[] = [];
      for (let i = 0; i < count; i++) out.push(readValue(r, view, type, label, depth + 1));
      return out;
    }
  }
}

/** A key or tensor name for a one-line message: quoted, escaped, and shortened if long. */
function quote(name: string): string {
  return JSON.stringify(name.length > 80 ? name.slice(0, 80) + "…" : name);
}

/** A short description of a metadata value for error messages. */
function describe(value: GgufValue | undefined): string {
  if (value === undefined) return "nothing";
  if (typeof value === "string") return quote(value);
  if (typeof value === "object") return `an array of ${value.length}`;
  return String(value);
}

/** Reads typed metadata values, failing with one line that names the file and key. */
class MetadataReader {
  #gguf: GgufFile;

  constructor(gguf: GgufFile) {
    this.#gguf = gguf;
  }

  fail(problem: string): never {
    throw new FileFormatError(this.#gguf.path, problem);
  }

  get(key: string): GgufValue | undefined {
    return this.#gguf.metadata.get(key);
  }

  string(key: string): string | undefined {
    const value = this.get(key);
    if (value !== undefined && typeof value !== "string") this.fail(`${key} must be a string, got ${describe(value)}`);
    return value;
  }

  /** A non-negative integer of any integer type. */
  integer(key: string): number | undefined {
    const value = this.get(key);
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
      this.fail(`${key} must be a non-negative integer, got ${describe(value)}`);
    }
    return value;
  }

  requiredInteger(key: string): number {
    const value = this.integer(key);
    if (value === undefined) this.fail(`metadata ${key} is missing`);
    return value;
  }

  float(key: string): number | undefined {
    const value = this.get(key);
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isFinite(value)) {
      this.fail(`${key} must be a number, got ${describe(value)}`);
    }
    return value;
  }

  boolean(key: string): boolean | undefined {
    const value = this.get(key);
    if (value !== undefined && typeof value !== "boolean") {
      this.fail(`${key} must be a boolean, got ${describe(value)}`);
    }
    return value;
  }
}

/**
 * The model described by a GGUF file of architecture `llama`: configuration,
 * numerics, weights (views on the file's bytes, in their stored encoding),
 * vocabulary, name and chat template.
 */
export function ggufToModelFile(gguf: GgufFile): ModelFile {
  const m: MetadataReader = new MetadataReader(gguf);
  const architecture = m.string("general.architecture");
  if (architecture === undefined) m.fail("metadata general.architecture is missing");
  if (architecture !== "llama") m.fail(`architecture ${quote(architecture)} is not supported (only llama)`);

  const tensors = new Map(gguf.tensors.map((t) => [t.name, t]));
  const embedding = tensors.get("token_embd.weight");
  if (embedding === undefined) m.fail('tensor "token_embd.weight" is missing');
  const dim = m.requiredInteger("llama.embedding_length");
  const nHeads = m.requiredInteger("llama.attention.head_count");
  if (embedding.shape.length !== 2 || embedding.shape[0] !== dim) {
    m.fail(`tensor "token_embd.weight" has shape [${embedding.shape}], expected [${dim}, vocabulary size]`);
  }
  const vocabSize = embedding.shape[1];
  const declaredVocab = m.integer("llama.vocab_size");
  if (declaredVocab !== undefined && declaredVocab !== vocabSize) {
    m.fail(`llama.vocab_size ${declaredVocab} disagrees with token_embd.weight shape [${embedding.shape}]`);
  }
  const config: LlamaConfig = {
    dim,
    hiddenDim: m.requiredInteger("llama.feed_forward_length"),
    nLayers: m.requiredInteger("llama.block_count"),
    nHeads,
    nKvHeads: m.integer("llama.attention.head_count_kv") ?? nHeads,
    vocabSize,
    seqLen: m.requiredInteger("llama.context_length"),
  };
  checkConfig(config, m);
  const headSize = dim / nHeads;
  const ropeDims = m.integer("llama.rope.dimension_count");
  if (ropeDims !== undefined && ropeDims !== headSize) {
    m.fail(`llama.rope.dimension_count ${ropeDims} differs from the head size ${headSize} (partial RoPE unsupported)`);
  }
  const scaling = m.string("llama.rope.scaling.type");
  if (scaling !== undefined && scaling !== "none") m.fail(`RoPE scaling ${quote(scaling)} is not supported`);
  const normEps = m.float("llama.attention.layer_norm_rms_epsilon");
  if (normEps === undefined) m.fail("metadata llama.attention.layer_norm_rms_epsilon is missing");
  const numerics: LlamaNumerics = { normEps, ropeTheta: m.float("llama.rope.freq_base") ?? 10000 };

  const kvDim = config.nKvHeads * headSize;
  const matrix = (name: string, rows: number, cols: number): Matrix => {
    const t = tensors.get(name);
    if (t === undefined) m.fail(`tensor ${quote(name)} is missing`);
    if (t.shape.length !== 2 || t.shape[0] !== cols || t.shape[1] !== rows) {
      m.fail(`tensor ${quote(name)} has shape [${t.shape}], expected [${cols}, ${rows}]`);
    }
    if (t.type === undefined) m.fail(`tensor ${quote(name)} has type ${t.typeName}, which tensorless cannot read`);
    return { type: t.type, rows, cols, data: t.data };
  };
  const vector = (name: string): Float32Array => {
    const t = tensors.get(name);
    if (t === undefined) m.fail(`tensor ${quote(name)} is missing`);
    if (t.shape.length !== 1 || t.shape[0] !== dim) {
      m.fail(`tensor ${quote(name)} has shape [${t.shape}], expected [${dim}]`);
    }
    if (t.type !== "F32" && t.type !== "F16" && t.type !== "BF16") {
      m.fail(`norm tensor ${quote(name)} has type ${t.typeName}; expected F32, F16 or BF16`);
    }
    const out = new Float32Array(dim);
    dequantizeRow({ type: t.type, rows: 1, cols: dim, data: t.data }, 0, out);
    return out;
  };

  const tokenEmbedding = matrix("token_embd.weight", vocabSize, dim);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const p = `blk.${l}.`;
    layers.push({
      attentionNorm: vector(p + "attn_norm.weight"),
      wq: matrix(p + "attn_q.weight", dim, dim),
      wk: matrix(p + "attn_k.weight", kvDim, dim),
      wv: matrix(p + "attn_v.weight", kvDim, dim),
      wo: matrix(p + "attn_output.weight", dim, dim),
      ffnNorm: vector(p + "ffn_norm.weight"),
      w1: matrix(p + "ffn_gate.weight", config.hiddenDim, dim),
      w2: matrix(p + "ffn_down.weight", dim, config.hiddenDim),
      w3: matrix(p + "ffn_up.weight", config.hiddenDim, dim),
    });
  }
  const finalNorm = vector("output_norm.weight");
  const classifier = tensors.has("output.weight") ? matrix("output.weight", vocabSize, dim) : tokenEmbedding;

  const tensorTypes: Partial<Record<TensorType, number>> = {};
  let weightBytes = 0;
  for (const t of gguf.tensors) {
    if (t.type !== undefined) tensorTypes[t.type] = (tensorTypes[t.type] ?? 0) + 1;
    weightBytes += t.byteLength;
  }
  const vocabulary = ggufVocabulary(gguf);
  if (vocabulary !== undefined && vocabulary.pieces.length !== vocabSize) {
    m.fail(`the vocabulary has ${vocabulary.pieces.length} pieces but token_embd.weight has ${vocabSize} rows`);
  }
  return {
    path: gguf.path,
    format: "gguf",
    config,
    numerics,
    weights: { tokenEmbedding, layers, finalNorm, classifier },
    vocabulary,
    chatTemplate: m.string("tokenizer.chat_template"),
    name: m.string("general.name"),
    tensorTypes,
    weightBytes,
  };
}

/**
 * The SentencePiece vocabulary in a GGUF file's metadata (`tokenizer.ggml.*`),
 * or `undefined` when the file has none or uses another tokenizer model than
 * `llama`.
 */
export function ggufVocabulary(gguf: GgufFile): Vocabulary | undefined {
  const m: MetadataReader = new MetadataReader(gguf);
  if (m.string("tokenizer.ggml.model") !== "llama") return undefined;
  const tokens = m.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) {
    m.fail("tokenizer.ggml.tokens must be an array of strings");
  }
  const pieces = tokens as string[];
  const n = pieces.length;
  if (n === 0) m.fail("tokenizer.ggml.tokens is empty");

  const scores = new Float32Array(n);
  const rawScores = m.get("tokenizer.ggml.scores");
  if (rawScores !== undefined) {
    if (!(rawScores instanceof Float32Array) || rawScores.length !== n) {
      m.fail(`tokenizer.ggml.scores must be ${n} float32 values, got ${describe(rawScores)}`);
    }
    scores.set(rawScores);
  }
  const types = new Uint8Array(n).fill(PieceType.NORMAL);
  const rawTypes = m.get("tokenizer.ggml.token_type");
  if (rawTypes !== undefined) {
    if (!(rawTypes instanceof Int32Array || rawTypes instanceof Uint32Array) || rawTypes.length !== n) {
      m.fail(`tokenizer.ggml.token_type must be ${n} integers, got ${describe(rawTypes)}`);
    }
    for (let i = 0; i < n; i++) {
      const type = rawTypes[i];
      if (type < PieceType.NORMAL || type > PieceType.BYTE) m.fail(`token ${i} has unknown token type ${type}`);
      types[i] = type;
    }
  }
  const id = (key: string, fallback: number): number => {
    const value = m.integer(key) ?? fallback;
    if (value >= n) m.fail(`${key} ${value} is not below the vocabulary size ${n}`);
    return value;
  };
  return {
    pieces,
    scores,
    types,
    bosId: id("tokenizer.ggml.bos_token_id", 1),
    eosId: id("tokenizer.ggml.eos_token_id", 2),
    unkId: id("tokenizer.ggml.unknown_token_id", 0),
    addDummyPrefix: m.boolean("tokenizer.ggml.add_space_prefix") ?? true,
    byteFallback: true,
    source: gguf.path,
  };
}
