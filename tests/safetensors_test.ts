// Hugging Face safetensors directories: tensors parse into views, the rotate-half
// layout of q/k is undone exactly, hostile headers give one-line FileFormatErrors.
import assert from "node:assert/strict";
import { loadModel, Sampler } from "../mod.ts";
import { FileFormatError } from "../lib/errors.ts";
import { readFileBytes } from "../lib/file_bytes.ts";
import { PlainKernels } from "../lib/kernels/plain.ts";
import { parseLlama2c } from "../lib/llama2c.ts";
import type { ModelFile } from "../lib/model_file.ts";
import { dequantizeRow } from "../lib/quant.ts";
import { loadSafetensorsDirectory, parseSafetensors } from "../lib/safetensors.ts";
import type { Matrix } from "../lib/tensor.ts";
import { Session } from "../lib/transformer.ts";
import { randomLlama2c, TINY_CONFIG } from "./fixtures.ts";
import { haveShared, parityCases, runParityCase, sharedPath, sharedTest } from "./shared_data.ts";

/** One tensor to write: dtype, shape and its raw bytes. */
interface TensorSpec {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/**
 * A safetensors file. `header` overrides the generated JSON header (a string is
 * written as is); `pad` inserts bytes before each tensor to misalign it.
 */
function safetensorsFile(
  tensors: Record<string, TensorSpec>,
  { header, pad = 0 }: { header?: unknown; pad?: number } = {},
): Uint8Array {
  const entries: Record<string, unknown> = { __metadata__: { format: "pt" } };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (pad) chunks.push(new Uint8Array(pad));
    offset += pad;
    entries[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    chunks.push(t.bytes);
    offset += t.bytes.length;
  }
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header ?? entries),
  );
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

function f32Bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
}

function rowsOf(m: Matrix): Float32Array {
  const out = new Float32Array(m.rows * m.cols);
  for (let r = 0; r < m.rows; r++) dequantizeRow(m, r, out, r * m.cols);
  return out;
}

/** transformers' `permute` (convert_llama_weights_to_hf.py): adjacent pairs → rotate-half rows. */
function permuteToHf(m: Matrix, heads: number): Float32Array {
  const values = rowsOf(m);
  const out = new Float32Array(values.length);
  const headSize = m.rows / heads;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < headSize / 2; j++) {
      for (let i = 0; i < 2; i++) {
        const from = (h * headSize + 2 * j + i) * m.cols;
        const to = (h * headSize + i * (headSize / 2) + j) * m.cols;
        out.set(values.subarray(from, from + m.cols), to);
      }
    }
  }
  return out;
}

const HF_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_act: "silu",
  hidden_size: TINY_CONFIG.dim,
  intermediate_size: TINY_CONFIG.hiddenDim,
  num_hidden_layers: TINY_CONFIG.nLayers,
  num_attention_heads: TINY_CONFIG.nHeads,
  num_key_value_heads: TINY_CONFIG.nKvHeads,
  vocab_size: TINY_CONFIG.vocabSize,
  max_position_embeddings: TINY_CONFIG.seqLen,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
};

/** The tensors of the tiny llama2.c fixture, named and laid out as transformers writes them. */
function hfTensors(model: ModelFile): Record<string, TensorSpec> {
  const { nHeads, nKvHeads } = model.config;
  const matrix = (m: Matrix, values = rowsOf(m)): TensorSpec => ({
    dtype: "F32",
    shape: [m.rows, m.cols],
    bytes: f32Bytes(values),
  });
  const vector = (v: Float32Array): TensorSpec => ({ dtype: "F32", shape: [v.length], bytes: f32Bytes(v) });
  const { weights } = model;
  const tensors: Record<string, TensorSpec> = {
    "model.embed_tokens.weight": matrix(weights.tokenEmbedding),
    "model.norm.weight": vector(weights.finalNorm),
    "lm_head.weight": matrix(weights.classifier),
  };
  weights.layers.forEach((layer, l) => {
    const p = `model.layers.${l}.`;
    tensors[p + "input_layernorm.weight"] = vector(layer.attentionNorm);
    tensors[p + "self_attn.q_proj.weight"] = matrix(layer.wq, permuteToHf(layer.wq, nHeads));
    tensors[p + "self_attn.k_proj.weight"] = matrix(layer.wk, permuteToHf(layer.wk, nKvHeads));
    tensors[p + "self_attn.v_proj.weight"] = matrix(layer.wv);
    tensors[p + "self_attn.o_proj.weight"] = matrix(layer.wo);
    tensors[p + "post_attention_layernorm.weight"] = vector(layer.ffnNorm);
    tensors[p + "mlp.gate_proj.weight"] = matrix(layer.w1);
    tensors[p + "mlp.down_proj.weight"] = matrix(layer.w2);
    tensors[p + "mlp.up_proj.weight"] = matrix(layer.w3);
  });
  return tensors;
}

/** The tiny fixture as llama2.c parses it, with a separate classifier. */
function tinyReference(): ModelFile {
  return parseLlama2c(randomLlama2c(TINY_CONFIG, { sharedClassifier: false }), "tiny.bin");
}

/** Writes an HF directory; `files` maps file names to JSON objects or bytes. */
async function writeDir(files: Record<string, unknown>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tensorless-st-" });
  for (const [name, content] of Object.entries(files)) {
    const path = `${dir}/${name}`;
    if (content instanceof Uint8Array) await Deno.writeFile(path, content);
    else await Deno.writeTextFile(path, typeof content === "string" ? content : JSON.stringify(content));
  }
  return dir;
}

/** Asserts loading `dir` fails with a one-line FileFormatError matching `pattern`. */
async function assertRejects(dir: string, pattern: RegExp): Promise<void> {
  try {
    await loadSafetensorsDirectory(dir);
  } catch (error) {
    assert.ok(error instanceof FileFormatError, `not a FileFormatError: ${error}`);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes("\n"), `more than one line: ${error.message}`);
    return;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.fail(`loading did not fail (expected ${pattern})`);
}

function assertSameWeights(actual: ModelFile, expected: ModelFile): void {
  const same = (a: Matrix, b: Matrix, what: string) => {
    assert.equal(a.rows, b.rows, what);
    assert.equal(a.cols, b.cols, what);
    assert.deepEqual(rowsOf(a), rowsOf(b), what);
  };
  same(actual.weights.tokenEmbedding, expected.weights.tokenEmbedding, "embedding");
  same(actual.weights.classifier, expected.weights.classifier, "classifier");
  assert.deepEqual(actual.weights.finalNorm, expected.weights.finalNorm);
  actual.weights.layers.forEach((layer, l) => {
    const ref = expected.weights.layers[l];
    for (const key of ["wq", "wk", "wv", "wo", "w1", "w2", "w3"] as const) same(layer[key], ref[key], `${key} ${l}`);
    assert.deepEqual(layer.attentionNorm, ref.attentionNorm);
    assert.deepEqual(layer.ffnNorm, ref.ffnNorm);
  });
}

Deno.test("safetensors: a written HF directory loads to the llama2.c weights, q/k un-permuted", async () => {
  const reference = tinyReference();
  const dir = await writeDir({ "config.json": HF_CONFIG, "model.safetensors": safetensorsFile(hfTensors(reference)) });
  const model = await loadSafetensorsDirectory(dir + "/");
  await Deno.remove(dir, { recursive: true });
  assert.equal(model.format, "safetensors");
  assert.equal(model.path, dir);
  assert.deepEqual(model.config, TINY_CONFIG);
  assert.deepEqual(model.numerics, { normEps: 1e-5, ropeTheta: 10000 });
  assert.deepEqual(model.tensorTypes, { F32: 3 + 9 * TINY_CONFIG.nLayers });
  assert.notEqual(model.weights.classifier, model.weights.tokenEmbedding);
  assertSameWeights(model, reference);
  // Views on the file's bytes, not copies.
  assert.equal(model.weights.layers[0].w1.data.buffer, model.weights.tokenEmbedding.data.buffer);

  // Same logits from both: the forward pass cannot tell them apart.
  const kernels = new PlainKernels();
  const a = new Session({ ...model, kernels }).feed([1, 50, 299, 7]);
  const b = new Session({ ...reference, kernels }).feed([1, 50, 299, 7]);
  assert.deepEqual(a, b);
});

Deno.test("safetensors: shards, tied embeddings, misaligned tensors and tokenizer_config's chat template", async () => {
  const reference = tinyReference();
  const tensors = hfTensors(reference);
  delete tensors["lm_head.weight"];
  const names = Object.keys(tensors);
  const first = Object.fromEntries(names.slice(0, 10).map((n) => [n, tensors[n]]));
  const second = Object.fromEntries(names.slice(10).map((n) => [n, tensors[n]]));
  const weightMap = Object.fromEntries(names.map((n, i) => [n, i < 10 ? "a.safetensors" : "b.safetensors"]));
  const dir = await writeDir({
    "config.json": { ...HF_CONFIG, tie_word_embeddings: true },
    "a.safetensors": safetensorsFile(first, { pad: 1 }),
    "b.safetensors": safetensorsFile(second, { pad: 2 }),
    "model.safetensors.index.json": { metadata: {}, weight_map: weightMap },
    "tokenizer_config.json": { chat_template: "{{ messages }}" },
  });
  const model = await loadSafetensorsDirectory(dir);
  await Deno.remove(dir, { recursive: true });
  assert.equal(model.weights.classifier, model.weights.tokenEmbedding);
  assert.equal(model.chatTemplate, "{{ messages }}");
  assert.deepEqual(model.tensorTypes, { F32: 2 + 9 * TINY_CONFIG.nLayers });
  assertSameWeights(model, {
    ...reference,
    weights: { ...reference.weights, classifier: reference.weights.tokenEmbedding },
  });
});

Deno.test("safetensors: shards too large for one piece of memory are read tensor by tensor, to the same weights", async () => {
  const reference = tinyReference();
  const tensors = hfTensors(reference);
  const names = Object.keys(tensors);
  const shard = (from: number, to: number) => Object.fromEntries(names.slice(from, to).map((n) => [n, tensors[n]]));
  const dir = await writeDir({
    "config.json": HF_CONFIG,
    "a.safetensors": safetensorsFile(shard(0, 10), { pad: 1 }),
    "b.safetensors": safetensorsFile(shard(10, names.length), { pad: 2 }),
    "model.safetensors.index.json": {
      weight_map: Object.fromEntries(names.map((n, i) => [n, i < 10 ? "a.safetensors" : "b.safetensors"])),
    },
  });
  const pieces: ArrayBuffer[] = [];
  const model = await loadSafetensorsDirectory(dir, {
    allocate: () => assert.fail("a file read whole"),
    maxAllocate: 100,
    allocateTensor: (byteLength) => {
      const bytes = new Uint8Array(byteLength);
      pieces.push(bytes.buffer);
      return bytes;
    },
  });
  await Deno.remove(dir, { recursive: true });
  assertSameWeights(model, reference);
  assert.equal(pieces.length, names.length);
  for (const w of [model.weights.tokenEmbedding, model.weights.layers[1].wq, model.weights.layers[1].w2]) {
    assert.ok(pieces.includes(w.data.buffer as ArrayBuffer));
  }
});

Deno.test("safetensors: files and misaligned copies go into memory from the given allocator", async () => {
  const reference = tinyReference();
  const dir = await writeDir({
    "config.json": HF_CONFIG,
    "model.safetensors": safetensorsFile(hfTensors(reference), { pad: 2 }),
  });
  const buffers: ArrayBuffer[] = [];
  const model = await loadSafetensorsDirectory(dir, {
    allocate: (byteLength) => {
      const bytes = new Uint8Array(byteLength + 8);
      buffers.push(bytes.buffer);
      return bytes.subarray(8);
    },
  });
  await Deno.remove(dir, { recursive: true });
  assert.ok(buffers.length > 1, "the file and the misaligned F32 tensors");
  for (const w of [model.weights.tokenEmbedding, model.weights.layers[1].wk, model.weights.layers[1].w2]) {
    assert.ok(buffers.includes(w.data.buffer as ArrayBuffer));
  }
  assertSameWeights(model, reference);
});

Deno.test("safetensors: parseSafetensors checks every header entry", () => {
  const f32 = (n: number) => ({ dtype: "F32", shape: [n], bytes: new Uint8Array(4 * n) });
  const parse = (bytes: Uint8Array) => parseSafetensors(bytes, "x.safetensors");
  const rejects = (bytes: Uint8Array, pattern: RegExp) =>
    assert.throws(() => parse(bytes), (e: unknown) => e instanceof FileFormatError && pattern.test(e.message));

  const good = parse(safetensorsFile({ a: f32(3), b: { dtype: "I64", shape: [2, 1], bytes: new Uint8Array(16) } }));
  assert.deepEqual([...good.keys()], ["a", "b"]);
  assert.deepEqual(good.get("b")?.shape, [2, 1]);
  assert.equal(good.get("a")?.data.byteLength, 12);

  // A file whose header is `entries` followed by 64 zero bytes of data.
  const header = (entries: unknown) => {
    const json = new TextEncoder().encode(typeof entries === "string" ? entries : JSON.stringify(entries));
    const out = new Uint8Array(8 + json.length + 64);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    return out;
  };
  const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ t: { dtype, shape, data_offsets: offsets } });

  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, 1n << 60n, true);
  rejects(huge, /header length .* too large|over the limit/);
  const long = new Uint8Array(16);
  new DataView(long.buffer).setBigUint64(0, 100n, true);
  rejects(long, /header length 100 is more than/);
  rejects(new Uint8Array(5), /file ends early/);
  rejects(header("{not json"), /header is not valid JSON/);
  rejects(header("[1, 2]"), /header is not a JSON object/);
  rejects(header({ t: 5 }), /tensor "t": header entry is not an object/);
  rejects(header(entry("Q9", [1], [0, 1])), /tensor "t": unknown dtype "Q9"/);
  rejects(header(entry("F32", [-1], [0, 4])), /shape must be/);
  rejects(header(entry("F32", [1.5], [0, 4])), /shape must be/);
  rejects(header(entry("F32", [4], [0])), /data_offsets must be/);
  rejects(header(entry("F32", [4], [8, 4])), /outside the data section/);
  rejects(header(entry("F32", [100], [0, 400])), /outside the data section of 64 bytes/);
  rejects(header(entry("F32", [2 ** 40, 2 ** 40, 2 ** 40], [0, 64])), /does not fit in 64 bytes/);
  rejects(header(entry("F32", [2 ** 53, 0], [0, 0])), /shape must be/);
  rejects(header(entry("F32", [3], [0, 16])), /needs 12 bytes, data_offsets give 16/);
  rejects(
    header({
      a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
      b: { dtype: "F32", shape: [4], data_offsets: [12, 28] },
    }),
    /tensors "a" and "b" overlap/,
  );
  // Empty tensors and metadata are fine.
  const empty = { __metadata__: { x: "y" }, e: { dtype: "F32", shape: [5, 0], data_offsets: [0, 0] } };
  assert.equal(parse(header({ ...empty, s: { dtype: "F32", shape: [], data_offsets: [0, 4] } })).size, 2);
});

Deno.test("safetensors: bad directories and configs give one-line errors naming the file", async () => {
  const reference = tinyReference();
  const weights = safetensorsFile(hfTensors(reference));
  const dirWith = (config: unknown, extra: Record<string, unknown> = {}) =>
    writeDir({ "config.json": config, "model.safetensors": weights, ...extra });

  await assertRejects(await writeDir({}), /without config\.json/);
  await assertRejects(await writeDir({ "config.json": HF_CONFIG }), /no model\.safetensors/);
  await assertRejects(await dirWith("{oops"), /config\.json: file is not valid JSON/);
  await assertRejects(await dirWith({ ...HF_CONFIG, model_type: "gpt2" }), /model_type "gpt2" is not supported/);
  await assertRejects(await dirWith({ ...HF_CONFIG, hidden_size: 0 }), /hidden_size must be a positive integer/);
  await assertRejects(await dirWith({ ...HF_CONFIG, vocab_size: "300" }), /vocab_size must be a positive integer/);
  await assertRejects(await dirWith({ ...HF_CONFIG, num_attention_heads: 5 }), /not a multiple of num_attention_heads/);
  await assertRejects(await dirWith({ ...HF_CONFIG, num_key_value_heads: 3 }), /not a multiple of num_key_value_heads/);
  await assertRejects(await dirWith({ ...HF_CONFIG, rms_norm_eps: -1 }), /rms_norm_eps must be a positive number/);
  await assertRejects(await dirWith({ ...HF_CONFIG, rope_scaling: { type: "linear" } }), /rope_scaling/);
  await assertRejects(await dirWith({ ...HF_CONFIG, attention_bias: true }), /attention_bias is not supported/);
  await assertRejects(await dirWith({ ...HF_CONFIG, hidden_act: "gelu" }), /hidden_act "gelu" is not supported/);
  await assertRejects(await dirWith({ ...HF_CONFIG, head_dim: 16 }), /head_dim 16 differs/);
  await assertRejects(await dirWith({ ...HF_CONFIG, vocab_size: 301 }), /embed_tokens\.weight" has shape \[300,32\]/);
  const tied = hfTensors(reference);
  delete tied["lm_head.weight"];
  await assertRejects(
    await writeDir({ "config.json": HF_CONFIG, "model.safetensors": safetensorsFile(tied) }),
    /tensor "lm_head\.weight" is missing/,
  );
  const int8 = { ...hfTensors(reference) };
  const wq = int8["model.layers.1.self_attn.q_proj.weight"];
  int8["model.layers.1.self_attn.q_proj.weight"] = { ...wq, dtype: "I32" };
  await assertRejects(
    await writeDir({ "config.json": HF_CONFIG, "model.safetensors": safetensorsFile(int8) }),
    /q_proj\.weight" has dtype I32; only F32, F16 and BF16/,
  );
  await assertRejects(
    await writeDir({
      "config.json": HF_CONFIG,
      "model.safetensors.index.json": { weight_map: { "model.norm.weight": "../model.safetensors" } },
    }),
    /index\.json: weight_map entry for "model\.norm\.weight" is not a file name/,
  );
  await assertRejects(
    await writeDir({
      "config.json": HF_CONFIG,
      "x.safetensors": safetensorsFile({}),
      "model.safetensors.index.json": { weight_map: { "model.norm.weight": "x.safetensors" } },
    }),
    /x\.safetensors: has no tensor "model\.norm\.weight"/,
  );
  await assertRejects(
    await writeDir({
      "config.json": HF_CONFIG,
      "model.safetensors.index.json": { weight_map: { "model.norm.weight": "gone.safetensors" } },
    }),
    /gone\.safetensors: no such file/,
  );
});

for (const name of ["stories260K-hf-f32", "stories260K-hf-bf16", "random-gqa-hf-f16"]) {
  sharedTest(`safetensors: ../shared/models/${name} loads`, async () => {
    const model = await loadSafetensorsDirectory(sharedPath(`models/${name}`));
    const json = JSON.parse(await Deno.readTextFile(sharedPath(`models/${name}/config.json`)));
    assert.equal(model.config.dim, json.hidden_size);
    assert.equal(model.config.vocabSize, json.vocab_size);
    assert.equal(model.weights.classifier === model.weights.tokenEmbedding, json.tie_word_embeddings);
  });
}

sharedTest("safetensors: stories260K-hf-f32 holds exactly the v0 checkpoint's weights", async () => {
  const path = sharedPath("models/stories260K/stories260K.bin");
  const reference = parseLlama2c(await readFileBytes(path), path);
  assertSameWeights(await loadSafetensorsDirectory(sharedPath("models/stories260K-hf-f32")), reference);
});

sharedTest("safetensors: loadModel finds tokenizer.model in the directory", async () => {
  // A directory of links to the shared files, plus the Llama 2 tokenizer.model.
  const dir = await Deno.makeTempDir({ prefix: "tensorless-st-" });
  for (const name of ["config.json", "model.safetensors"]) {
    await Deno.symlink(sharedPath(`models/random-gqa-hf-f16/${name}`), `${dir}/${name}`);
  }
  await Deno.symlink(sharedPath("tokenizers/llama2/tokenizer.model"), `${dir}/tokenizer.model`);
  const c = parityCases("hf-cases.json").find((c) => c.name === "hf-f16-gqa-untied-greedy")!;
  const model = await loadModel(dir);
  await Deno.remove(dir, { recursive: true });
  assert.equal(model.tokenizer.vocabSize, 32000);
  const ids = model.tokenizer.encode(c.prompt, { bos: true });
  const session = model.newSession();
  let logits = session.feed(ids);
  while (session.position < c.steps) {
    ids.push(new Sampler({ temperature: 0 }).sample(logits));
    logits = session.feed([ids[ids.length - 1]]);
  }
  ids.push(new Sampler({ temperature: 0 }).sample(logits));
  model.close();
  assert.deepEqual(ids, c.expected_ids);
});

for (const c of parityCases("hf-cases.json")) {
  sharedTest(`safetensors parity with llama2.c: ${c.name}`, async () => {
    assert.deepEqual(await runParityCase(c), c.expected_ids);
  });
}
if (!haveShared) sharedTest("safetensors parity with llama2.c", () => {});
