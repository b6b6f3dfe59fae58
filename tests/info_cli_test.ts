// `tensorless info`, spawned: the facts of every format, as text and JSON, and one-line errors.
import assert from "node:assert/strict";
import type { ModelInfo } from "../lib/commands/info.ts";
import type { LlamaConfig } from "../lib/model_file.ts";
import { TINY_CONFIG, writeTinyModel } from "./fixtures.ts";
import { f32, floats, str, u32, writeGguf } from "./gguf_writer.ts";
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

Deno.test("info: a downloaded catalog model by name, with its tokenizer; a missing one is not downloaded", async () => {
  const { dir, model, tokenizer } = await writeTinyModel();
  try {
    const catalog = `${dir}/catalog.json`;
    // Port 9 (discard) on this machine: a download attempt would fail loudly, not fetch anything.
    const file = (name: string) => ({ name, url: `http://127.0.0.1:9/${name}`, size: null, sha256: null });
    await Deno.writeTextFile(
      catalog,
      JSON.stringify({
        models: {
          tiny: {
            description: "test",
            template: "raw",
            model: "model.bin",
            tokenizer: "tok.bin",
            files: [file("model.bin"), file("tok.bin")],
          },
        },
      }),
    );
    const env = { TENSORLESS_CATALOG: catalog };
    const named = await runCli(["info", "--model", "tiny", "--dir", dir, "--json"], { env });
    assert.equal(named.code, 0, named.stderr);
    const described: ModelInfo = JSON.parse(named.stdout);
    assert.equal(described.path, model);
    assert.deepEqual(described.tokenizer, { vocabSize: TINY_CONFIG.vocabSize, bosId: 1, eosId: 2, unkId: 0 });

    await Deno.remove(tokenizer);
    assertOneLineError(
      await runCli(["info", "--model", "tiny", "--dir", dir], { env }),
      1,
      /^tensorless: tiny is not downloaded to .* \(tensorless pull tiny\)$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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

/** Llama 2 70B's shape, with a separate classifier: 69B parameters, 276 GB as float32, more than any test machine's memory. */
const HUGE: LlamaConfig = {
  dim: 8192,
  hiddenDim: 28672,
  nLayers: 80,
  nHeads: 64,
  nKvHeads: 8,
  vocabSize: 32000,
  seqLen: 4096,
};

/** HUGE's tensors in file order: GGUF name, Hugging Face name, rows, columns (1 row: a norm vector). */
function hugeTensors(): [string, string, number, number][] {
  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize } = HUGE;
  const kvDim = (dim / nHeads) * nKvHeads;
  const tensors: [string, string, number, number][] = [["token_embd", "model.embed_tokens", vocabSize, dim]];
  for (let l = 0; l < nLayers; l++) {
    const [g, h] = [`blk.${l}.`, `model.layers.${l}.`];
    tensors.push(
      [g + "attn_norm", h + "input_layernorm", 1, dim],
      [g + "attn_q", h + "self_attn.q_proj", dim, dim],
      [g + "attn_k", h + "self_attn.k_proj", kvDim, dim],
      [g + "attn_v", h + "self_attn.v_proj", kvDim, dim],
      [g + "attn_output", h + "self_attn.o_proj", dim, dim],
      [g + "ffn_norm", h + "post_attention_layernorm", 1, dim],
      [g + "ffn_gate", h + "mlp.gate_proj", hiddenDim, dim],
      [g + "ffn_down", h + "mlp.down_proj", dim, hiddenDim],
      [g + "ffn_up", h + "mlp.up_proj", hiddenDim, dim],
    );
  }
  tensors.push(["output_norm", "model.norm", 1, dim], ["output", "lm_head", vocabSize, dim]);
  return tensors;
}

/** Writes `head` to `path` and extends the file with a hole to `size` bytes (no disk space taken). */
async function writeSparse(path: string, head: Uint8Array, size: number): Promise<void> {
  await Deno.writeFile(path, head);
  await Deno.truncate(path, size);
}

Deno.test("info: reads only headers, so models larger than memory are described (sparse files)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tensorless-info-" });
  try {
    const tensors = hugeTensors();
    const parameters = tensors.reduce((sum, [, , rows, cols]) => sum + rows * cols, 0);
    const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen } = HUGE;
    const expectConfig = (described: ModelInfo) => {
      assert.equal(described.config.dim, dim);
      assert.equal(described.config.nLayers, nLayers);
      assert.equal(described.config.nKvHeads, nKvHeads);
      assert.equal(described.config.sharedClassifier, false);
      assert.equal(described.parameters, parameters);
    };

    // llama2.c version 1: the 256-byte header, then the floats.
    const header = new DataView(new ArrayBuffer(256));
    [0x616b3432, 1, dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen]
      .forEach((value, i) => header.setInt32(4 * i, value, true));
    await writeSparse(`${dir}/huge.bin`, new Uint8Array(header.buffer), 256 + 4 * parameters);
    const llama2c = await infoJson("--model", `${dir}/huge.bin`);
    expectConfig(llama2c);
    assert.equal(llama2c.memory.weights, 4 * parameters);

    // GGUF, float32, with a header longer than the first read of it (4 MiB), which ends inside an array of numbers.
    const gguf = writeGguf(
      [
        ["general.architecture", str("llama")],
        ["general.name", str("huge")],
        ["general.description", str("x".repeat((4 << 20) - 1000))],
        ["general.numbers", floats(new Float32Array(100_000))],
        ["llama.embedding_length", u32(dim)],
        ["llama.feed_forward_length", u32(hiddenDim)],
        ["llama.block_count", u32(nLayers)],
        ["llama.attention.head_count", u32(nHeads)],
        ["llama.attention.head_count_kv", u32(nKvHeads)],
        ["llama.context_length", u32(seqLen)],
        ["llama.attention.layer_norm_rms_epsilon", f32(1e-5)],
      ],
      tensors.map(([name, , rows, cols]) => ({
        name: name + ".weight",
        type: "F32",
        shape: rows === 1 ? [cols] : [cols, rows],
        data: 4 * rows * cols,
      })),
    );
    await writeSparse(`${dir}/huge.gguf`, gguf, gguf.length + 4 * parameters);
    const described = await infoJson("--model", `${dir}/huge.gguf`);
    expectConfig(described);
    assert.equal(described.name, "huge");
    assert.deepEqual(described.tensorTypes, { F32: tensors.length });
    assert.equal(described.memory.weights, 4 * parameters);

    // A Hugging Face directory, bfloat16.
    const entries: Record<string, unknown> = {};
    let offset = 0;
    for (const [, name, rows, cols] of tensors) {
      const shape = rows === 1 ? [cols] : [rows, cols];
      entries[name + ".weight"] = { dtype: "BF16", shape, data_offsets: [offset, offset + 2 * rows * cols] };
      offset += 2 * rows * cols;
    }
    const json = new TextEncoder().encode(JSON.stringify(entries));
    const safetensors = new Uint8Array(8 + json.length);
    new DataView(safetensors.buffer).setBigUint64(0, BigInt(json.length), true);
    safetensors.set(json, 8);
    await Deno.mkdir(`${dir}/huge-hf`);
    await Deno.writeTextFile(
      `${dir}/huge-hf/config.json`,
      JSON.stringify({
        model_type: "llama",
        hidden_size: dim,
        intermediate_size: hiddenDim,
        num_hidden_layers: nLayers,
        num_attention_heads: nHeads,
        num_key_value_heads: nKvHeads,
        vocab_size: vocabSize,
        max_position_embeddings: seqLen,
        rms_norm_eps: 1e-5,
      }),
    );
    await writeSparse(`${dir}/huge-hf/model.safetensors`, safetensors, safetensors.length + 2 * parameters);
    const hf = await infoJson("--model", `${dir}/huge-hf`);
    expectConfig(hf);
    assert.deepEqual(hf.tensorTypes, { BF16: tensors.length });
    assert.equal(hf.memory.weights, 2 * parameters);

    // Running one is another matter: one line saying so.
    assertOneLineError(
      await runCli(["generate", "--model", `${dir}/huge.gguf`, "--kernels", "plain"]),
      1,
      /huge\.gguf: .*do not fit in memory/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
