// `tensorless info`, spawned: the facts of every format, as text and JSON, and one-line errors.
import assert from "node:assert/strict";
import type { ModelInfo } from "../lib/commands/info.ts";
import { TINY_CONFIG, writeTinyModel } from "./fixtures.ts";
import { sharedPath, sharedTest } from "./shared_data.ts";
import { runCli, type RunResult } from "./spawn.ts";

/** Runs `tensorless info ...args`. */
function info(...args: string[]): Promise<RunResult> {
  return runCli(["info", ...args]);
}

/** `info --json` on `model`, parsed. */
async function infoJson(...args: string[]): Promise<ModelInfo> {
  const result = await info(...args, "--json");
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
}

/** Asserts a failed run printed exactly one line on stderr, without a stack trace. */
function assertOneLineError(result: { code: number; stderr: string }, code: number, pattern: RegExp): void {
  assert.equal(result.code, code, result.stderr);
  const lines = result.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `expected one line, got:\n${result.stderr}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(result.stderr, /\s+at\s/);
}

Deno.test("info: --help, a missing model, usage errors", async () => {
  const help = await info("--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: tensorless info --model MODEL/);
  assert.match(help.stdout, /--json/);
  const dir = await Deno.makeTempDir({ prefix: "tensorless-info-" });
  assertOneLineError(await info("--model", `${dir}/missing.bin`), 1, /missing\.bin: no such file or directory/);
  assertOneLineError(await info("--model", dir), 1, /without config\.json/);
  assertOneLineError(await info(), 2, /--model is required/);
  assertOneLineError(await info("--model", "x", "--frobnicate"), 2, /frobnicate.*see --help/);
  await Deno.remove(dir);
});

Deno.test("info: a llama2.c checkpoint, with and without a tokenizer", async () => {
  const { dir, model, tokenizer } = await writeTinyModel({ version: 1 });
  const described = await infoJson("--model", model, "--tokenizer", tokenizer);
  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen } = TINY_CONFIG;
  const kvDim = (dim / nHeads) * nKvHeads;
  assert.equal(described.format, "llama2c-v1");
  assert.deepEqual(described.config, {
    ...TINY_CONFIG,
    headSize: dim / nHeads,
    normEps: 1e-5,
    ropeTheta: 10000,
    sharedClassifier: true,
  });
  const parameters = vocabSize * dim + nLayers * (2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * dim * hiddenDim) +
    dim;
  assert.equal(described.parameters, parameters);
  assert.deepEqual(described.tensorTypes, { F32: 2 + 9 * nLayers });
  assert.deepEqual(described.tokenizer, { vocabSize, bosId: 1, eosId: 2, unkId: 0 });
  assert.equal(described.memory.weights, 4 * parameters);
  assert.equal(described.memory.kvCache, 2 * nLayers * seqLen * kvDim * 4);
  assert.equal(described.memory.cacheEncoding, "f32");
  assert.equal(
    described.memory.total,
    described.memory.weights + described.memory.kvCache + described.memory.activations,
  );
  assert.equal(described.chatTemplate, null);

  const text = await info("--model", model, "--tokenizer", tokenizer);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^format +llama2\.c checkpoint \(version 1\)$/m);
  assert.match(text.stdout, /^kv heads +2 \(grouped-query attention\)$/m);
  assert.match(text.stdout, /^tensor types +F32 x20$/m);
  assert.match(text.stdout, /^vocabulary +300 tokens; bos 1, eos 2, unk 0$/m);
  assert.match(text.stdout, /^memory +[\d.]+ KiB: weights [\d.]+ KiB \+ KV cache 12\.0 KiB \(48 positions, f32\)/m);

  // No tokenizer beside the model and none given: described anyway, saying so.
  await Deno.remove(tokenizer);
  const bare = await info("--model", model);
  assert.equal(bare.code, 0, bare.stderr);
  assert.match(bare.stdout, /^vocabulary +300 tokens; no tokenizer: .*--tokenizer/m);
  // A tokenizer the user names must load.
  assertOneLineError(await info("--model", model, "--tokenizer", tokenizer), 1, /tok\.bin: no such file/);
  await Deno.remove(dir, { recursive: true });
});

const HF_MODELS: [string, string, Record<string, number>][] = [
  ["stories260K-hf-f32", "models/stories260K/tok512.bin", { F32: 47 }],
  ["stories260K-hf-bf16", "models/stories260K/tok512.bin", { BF16: 47 }],
  ["random-gqa-hf-f16", "tokenizers/llama2/tokenizer.bin", { F16: 30 }],
];
for (const [name, tokenizer, tensorTypes] of HF_MODELS) {
  sharedTest(`info: the Hugging Face directory ${name}`, async () => {
    const config = JSON.parse(await Deno.readTextFile(sharedPath(`models/${name}/config.json`)));
    const described = await infoJson("--model", sharedPath(`models/${name}`), "--tokenizer", sharedPath(tokenizer));
    assert.equal(described.format, "safetensors");
    assert.equal(described.config.dim, config.hidden_size);
    assert.equal(described.config.hiddenDim, config.intermediate_size);
    assert.equal(described.config.nKvHeads, config.num_key_value_heads);
    assert.equal(described.config.seqLen, config.max_position_embeddings);
    assert.equal(described.config.sharedClassifier, config.tie_word_embeddings);
    assert.deepEqual(described.tensorTypes, tensorTypes);
    assert.deepEqual(described.tokenizer, { vocabSize: config.vocab_size, bosId: 1, eosId: 2, unkId: 0 });
  });
}

sharedTest("info: a chat template from tokenizer_config.json, and no tokenizer in the directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tensorless-info-" });
  for (const name of ["config.json", "model.safetensors"]) {
    await Deno.symlink(sharedPath(`models/stories260K-hf-f32/${name}`), `${dir}/${name}`);
  }
  const template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}";
  await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ chat_template: template }));
  const text = await info("--model", dir);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^format +Hugging Face directory \(safetensors\)$/m);
  assert.match(text.stdout, /^vocabulary +512 tokens; no tokenizer: /m);
  assert.ok(text.stdout.endsWith("chat template\n  " + template.replaceAll("\n", "\n  ") + "\n"), text.stdout);
  const described = await infoJson("--model", dir);
  assert.equal(described.chatTemplate, template);
  assert.ok("missing" in described.tokenizer);
  await Deno.remove(dir, { recursive: true });
});

sharedTest("info: GGUF files, F32 and quantized, with their own vocabulary", async () => {
  const f32 = await infoJson("--model", sharedPath("models/stories260K/stories260K.gguf"));
  assert.equal(f32.format, "gguf");
  assert.equal(f32.config.dim, 64);
  assert.equal(f32.config.nKvHeads, 4);
  assert.deepEqual(f32.tokenizer, { vocabSize: 512, bosId: 1, eosId: 2, unkId: 0 });
  const layers = f32.config.nLayers;
  const matrices = 2 + 9 * layers + (f32.config.sharedClassifier ? 0 : 1);
  assert.deepEqual(f32.tensorTypes, { F32: matrices });

  const text = await info("--model", sharedPath("models/random-q/random-q-Q4_K_M.gguf"));
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^format +GGUF$/m);
  assert.match(text.stdout, /^tensor types +.*Q4_K x\d+/m);
  assert.match(text.stdout, /^tensor types +.*Q6_K x\d+/m);
  assert.match(text.stdout, /^vocabulary +32000 tokens; bos 1, eos 2, unk 0$/m);
  assert.match(text.stdout, /^rms norm eps +0\.00001$/m);
  // Quantized weights: a bfloat16 cache, two bytes a value (4 KV heads of 32 values, 4 layers, 128 positions).
  assert.match(text.stdout, /KV cache 256\.0 KiB \(128 positions, bf16\)/m);
});
