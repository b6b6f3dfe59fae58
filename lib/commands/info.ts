/**
 * `tensorless info`: what a model file holds and what running it will take:
 * format, architecture and sizes, tensor encodings, vocabulary and special
 * ids, chat template, memory.
 *
 * @module
 */

import { resolveModel } from "../catalog.ts";
import { TensorlessError } from "../errors.ts";
import { defaultCacheEncoding, findTokenizer, readModelFile } from "../model.ts";
import type { ModelFile, ModelFormat } from "../model_file.ts";
import type { Tokenizer } from "../tokenizer.ts";
import type { CacheEncoding } from "../transformer.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";

const help = `Usage: tensorless info --model MODEL [options]

Describes a model: format, architecture and sizes, tensor types, vocabulary
and special token ids, chat template, and the memory it will take (weights,
key/value cache at full context, activations).

Reads only the headers, so it answers at once for a file of any size.

Options:
  -m, --model M          a llama2.c .bin, GGUF file or Hugging Face directory, or
                         a downloaded catalog model (see "tensorless models")
  -t, --tokenizer PATH   tokenizer.bin or tokenizer.model (when the model has none)
      --dir DIR          models folder for catalog names
      --json             print the facts as one JSON object
  -h, --help             show this help
`;

/** Everything `info` reports, as printed by `--json`. */
export interface ModelInfo {
  path: string;
  format: ModelFormat;
  architecture: "llama";
  name: string | null;
  config: {
    dim: number;
    hiddenDim: number;
    nLayers: number;
    nHeads: number;
    nKvHeads: number;
    headSize: number;
    vocabSize: number;
    seqLen: number;
    normEps: number;
    ropeTheta: number;
    sharedClassifier: boolean;
  };
  parameters: number;
  tensorTypes: Record<string, number>;
  /** The vocabulary used with the model, or why there is none. */
  tokenizer: { vocabSize: number; bosId: number; eosId: number; unkId: number } | { missing: string };
  chatTemplate: string | null;
  /**
   * Bytes: weights as held in memory, the key/value cache at full context (in `cacheEncoding`, the default for this
   * file), activations of one token.
   */
  memory: { weights: number; kvCache: number; cacheEncoding: CacheEncoding; activations: number; total: number };
}

/**
 * Gathers the facts `info` prints about a parsed model file.
 *
 * @param file the parsed model
 * @param tokenizer the tokenizer used with it, or the reason there is none
 */
export function describeModel(file: ModelFile, tokenizer: Tokenizer | string): ModelInfo {
  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen } = file.config;
  const headSize = dim / nHeads;
  const kvDim = headSize * nKvHeads;
  const sharedClassifier = file.weights.classifier === file.weights.tokenEmbedding;
  const perLayer = 2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * dim * hiddenDim;
  const parameters = vocabSize * dim * (sharedClassifier ? 1 : 2) + nLayers * perLayer + dim;
  const cacheEncoding = defaultCacheEncoding(file);
  const kvCache = 2 * nLayers * seqLen * kvDim * (cacheEncoding === "bf16" ? 2 : 4);
  // One token's working vectors, attention scores over the full context, logits and the RoPE tables.
  const activations = 4 *
    (4 * dim + 2 * kvDim + 2 * hiddenDim + nHeads * seqLen + vocabSize + seqLen * headSize + seqLen);
  return {
    path: file.path,
    format: file.format,
    architecture: "llama",
    name: file.name ?? null,
    config: {
      dim,
      hiddenDim,
      nLayers,
      nHeads,
      nKvHeads,
      headSize,
      vocabSize,
      seqLen,
      normEps: file.numerics.normEps,
      ropeTheta: file.numerics.ropeTheta,
      sharedClassifier,
    },
    parameters,
    tensorTypes: { ...file.tensorTypes },
    tokenizer: typeof tokenizer === "string" ? { missing: tokenizer } : {
      vocabSize: tokenizer.vocabSize,
      bosId: tokenizer.bosId,
      eosId: tokenizer.eosId,
      unkId: tokenizer.vocabulary.unkId,
    },
    chatTemplate: file.chatTemplate ?? null,
    memory: {
      weights: file.weightBytes,
      kvCache,
      cacheEncoding,
      activations,
      total: file.weightBytes + kvCache + activations,
    },
  };
}

const FORMAT_NAMES: Record<ModelFormat, string> = {
  "llama2c-v0": "llama2.c checkpoint (legacy version 0)",
  "llama2c-v1": "llama2.c checkpoint (version 1)",
  "gguf": "GGUF",
  "safetensors": "Hugging Face directory (safetensors)",
};

/** The human-readable report. */
export function formatInfo(info: ModelInfo): string {
  const c = info.config;
  const lines = [
    `model          ${info.path}`,
    `format         ${FORMAT_NAMES[info.format]}`,
    ...(info.name ? [`name           ${info.name}`] : []),
    `architecture   ${info.architecture}`,
    `parameters     ${count(info.parameters)}`,
    `dim            ${c.dim}`,
    `hidden dim     ${c.hiddenDim}`,
    `layers         ${c.nLayers}`,
    `heads          ${c.nHeads} (head size ${c.headSize})`,
    `kv heads       ${c.nKvHeads}${c.nKvHeads < c.nHeads ? " (grouped-query attention)" : ""}`,
    `context        ${c.seqLen} tokens`,
    // GGUF stores epsilon as float32: show 1e-5, not 0.000009999999747378752.
    `rms norm eps   ${Number(c.normEps.toPrecision(6))}`,
    `rope theta     ${c.ropeTheta}`,
    `classifier     ${c.sharedClassifier ? "shared with the token embedding" : "separate"}`,
    `tensor types   ${Object.entries(info.tensorTypes).map(([type, n]) => `${type} x${n}`).join(", ")}`,
  ];
  const t = info.tokenizer;
  lines.push(
    "missing" in t
      ? `vocabulary     ${c.vocabSize} tokens; no tokenizer: ${t.missing}`
      : `vocabulary     ${t.vocabSize} tokens; bos ${t.bosId}, eos ${t.eosId}, unk ${t.unkId}`,
  );
  const m = info.memory;
  lines.push(
    `memory         ${bytes(m.total)}: weights ${bytes(m.weights)} + KV cache ${bytes(m.kvCache)} ` +
      `(${c.seqLen} positions, ${m.cacheEncoding}) + activations ${bytes(m.activations)}`,
  );
  if (info.chatTemplate === null) lines.push("chat template  none");
  else lines.push("chat template", ...info.chatTemplate.split("\n").map((line) => `  ${line}`));
  return lines.join("\n");
}

/** 1536 → "1.5 KiB". */
function bytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[unit]}`;
}

/** 6738415616 → "6.74B". */
function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** The `info` command. */
export const command: Command = {
  name: "info",
  summary: "describe a model: format, sizes, tensor types, vocabulary, memory",
  help,
  async run(args) {
    const { values } = parseFlags(args, {
      model: { type: "string", short: "m" },
      tokenizer: { type: "string", short: "t" },
      dir: { type: "string" },
      json: { type: "boolean" },
    });
    if (values.help) {
      console.log(help);
      return 0;
    }
    if (!values.model) throw new UsageError("--model is required");
    const resolved = await resolveModel(values.model, { dir: values.dir, download: false });
    const file = await readModelFile(resolved.model, { headerOnly: true });
    const tokenizerPath = values.tokenizer ?? resolved.tokenizer;
    let tokenizer: Tokenizer | string;
    try {
      tokenizer = await findTokenizer(file, tokenizerPath);
    } catch (error) {
      // A tokenizer the user named must load; otherwise say why there is none and describe the rest.
      if (tokenizerPath !== undefined || !(error instanceof TensorlessError)) throw error;
      tokenizer = error.message;
    }
    const info = describeModel(file, tokenizer);
    console.log(values.json ? JSON.stringify(info, null, 2) : formatInfo(info));
    return 0;
  },
};
