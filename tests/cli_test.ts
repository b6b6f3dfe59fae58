// The real CLI, spawned: llama2.c's printed text, and one-line errors for bad input.
import assert from "node:assert/strict";
import { haveShared, parityCases, sharedPath, sharedTest } from "./shared_data.ts";
import { randomLlama2c, TINY_CONFIG, writeTinyModel } from "./fixtures.ts";
import { runCli } from "./spawn.ts";

/** Asserts a failed run printed exactly one line on stderr, without a stack trace. */
function assertOneLineError(result: { code: number; stderr: string }, code: number, pattern: RegExp) {
  assert.equal(result.code, code, result.stderr);
  const lines = result.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `expected one line, got:\n${result.stderr}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(result.stderr, /\s+at\s/);
}

const storiesCases = parityCases("cases.json").filter((c) =>
  c.model.endsWith("stories260K.bin") && ["greedy-once-upon", "sampled-cat"].includes(c.name)
);
for (const c of storiesCases) {
  sharedTest(`generate prints llama2.c's text: ${c.name}`, async () => {
    const args = ["generate", "--model", sharedPath(c.model), "--tokenizer", sharedPath(c.tokenizer)];
    args.push("--prompt", c.prompt, "--steps", String(c.steps), "--temperature", String(c.temperature));
    if (c.topp !== undefined) args.push("--top-p", String(c.topp));
    if (c.seed !== undefined) args.push("--seed", String(c.seed));
    // Sampling compares probabilities with a random draw, so it gets the reference kernels; greedy the default.
    if (c.temperature > 0) args.push("--kernels", "plain");
    const result = await runCli(args);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, c.expected + "\n");
    assert.match(result.stderr, /tok\/s/);
  });
}
if (!haveShared) sharedTest("generate prints llama2.c's text", () => {});

Deno.test("--help works for the CLI and the generate command", async () => {
  const top = await runCli(["--help"]);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /Usage: tensorless <command>/);
  const generate = await runCli(["generate", "--help"]);
  assert.equal(generate.code, 0);
  assert.match(generate.stdout, /--steps/);
});

Deno.test("bad input: one line on stderr naming the problem, exit 1 (2 for usage)", async () => {
  const { dir, model, tokenizer } = await writeTinyModel();
  const write = async (name: string, bytes: Uint8Array) => {
    await Deno.writeFile(`${dir}/${name}`, bytes);
    return `${dir}/${name}`;
  };
  const generate = (...args: string[]) => runCli(["generate", ...args]);

  assertOneLineError(await generate("--model", `${dir}/missing.bin`), 1, /missing\.bin: no such file/);
  assertOneLineError(await generate("--model", model, "--tokenizer", `${dir}/nope`), 1, /nope: no such file/);
  const v1 = randomLlama2c(TINY_CONFIG, { version: 1 });
  new DataView(v1.buffer).setInt32(4, 7, true);
  assertOneLineError(await generate("--model", await write("v7.bin", v1)), 1, /v7\.bin: unknown llama2.c .*version 7/);
  const good = randomLlama2c();
  assertOneLineError(
    await generate("--model", await write("short.bin", good.subarray(0, 1000)), "--tokenizer", tokenizer),
    1,
    /short\.bin: file is shorter than its header implies/,
  );
  const garbage = new Uint8Array(64).fill(0xff);
  assertOneLineError(await generate("--model", await write("junk.bin", garbage)), 1, /junk\.bin: /);
  // A tokenizer with a different vocabulary size than the model's.
  const other = await writeTinyModel({ config: { ...TINY_CONFIG, vocabSize: 320 } });
  assertOneLineError(
    await generate("--model", model, "--tokenizer", other.tokenizer),
    1,
    /tok\.bin: tokenizer has 320 pieces, the model expects 300/,
  );
  assertOneLineError(
    await generate("--model", model, "--tokenizer", tokenizer, "--prompt", "abc ".repeat(40)),
    1,
    /prompt is \d+ tokens, longer than the model's context of 48/,
  );
  assertOneLineError(await generate("--model", model, "--frobnicate"), 2, /frobnicate.*see --help/);
  assertOneLineError(await generate("--model", model, "--steps", "many"), 2, /--steps must be an integer/);
  assertOneLineError(
    await generate("--model", model, "--kernels", "gpu"),
    2,
    /--kernels must be one of plain, wasm, fast/,
  );
  assertOneLineError(await generate("--model", model, "--cache", "f16"), 2, /--cache must be one of f32, bf16/);
  assertOneLineError(await runCli(["launch"]), 2, /unknown command "launch"/);
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(other.dir, { recursive: true });
});

Deno.test("generate on a fresh random model streams text and reports tok/s", async () => {
  const { dir, model, tokenizer } = await writeTinyModel();
  const result = await runCli(["generate", "-m", model, "-t", tokenizer, "-p", "the", "-n", "20", "--seed", "3"]);
  assert.equal(result.code, 0, result.stderr);
  assert.ok(result.stdout.startsWith("the"), result.stdout);
  assert.match(result.stderr, /achieved tok\/s: [\d.]+/);
  // A prompt longer than the steps is only echoed, with no rate.
  const echoed = await runCli(["generate", "-m", model, "-t", tokenizer, "-p", "the the the the", "-n", "2"]);
  assert.equal(echoed.code, 0, echoed.stderr);
  assert.doesNotMatch(echoed.stderr, /achieved/);
  // Greedy with a bfloat16 cache on a float32 model: another cache, the same command line otherwise.
  const greedy = ["generate", "-m", model, "-t", tokenizer, "-p", "the", "-n", "20", "--temperature", "0"];
  for (const cache of ["f32", "bf16"]) {
    const run = await runCli([...greedy, "--cache", cache]);
    assert.equal(run.code, 0, run.stderr);
    assert.ok(run.stdout.startsWith("the"), run.stdout);
  }
  await Deno.remove(dir, { recursive: true });
});
