// `tensorless bench`, spawned on a tiny model: what it reports and how it fails. Speeds are never asserted
// (machines are noisy); only that every number is there, consistent, and the medians are the runs' medians.
import assert from "node:assert/strict";
import type { BenchResult } from "../lib/commands/bench.ts";
import { TINY_CONFIG, writeTinyModel } from "./fixtures.ts";
import { runCli } from "./spawn.ts";

Deno.test("bench: JSON with medians over runs, a table, one-line errors", async () => {
  const { dir, model } = await writeTinyModel();
  try {
    const json = await runCli([
      "bench",
      "--model",
      model,
      "--kernels",
      "plain,fast",
      "--threads",
      "2",
      "--tokens",
      "8",
      "--prompt-tokens",
      "5",
      "--context",
      "20",
      "--runs",
      "3",
      "--json",
    ]);
    assert.equal(json.code, 0, json.stderr);
    const results: BenchResult[] = JSON.parse(json.stdout);
    assert.deepEqual(results.map((r) => [r.kernels, r.threads]), [["plain", 1], ["fast", 2]]);
    for (const r of results) {
      assert.equal(r.runs?.length, 3);
      assert.equal(r.context, 20);
      const keys = [
        "generateTokensPerSecond",
        "coldGenerateTokensPerSecond",
        "contextGenerateTokensPerSecond",
        "prefillTokensPerSecond",
        "coldTimeToFirstToken",
        "loadSeconds",
        "peakRssBytes",
      ] as const;
      for (const key of keys) {
        const values = r.runs!.map((run) => run[key]).sort((a, b) => a - b);
        assert.equal(r[key], values[1], key);
        assert.ok(values[0] > 0, key);
      }
      for (const run of r.runs!) assert.ok(Math.abs(run.prefillTokensPerSecond * run.timeToFirstToken - 5) < 1e-9);
      assert.equal(r.fileBytes, (await Deno.stat(model)).size);
    }

    /** One run of the plain kernels on the tiny model, 4 tokens generated after a 3-token prompt. */
    const plainRun = (...more: string[]) =>
      runCli([
        "bench",
        "--model",
        model,
        "--kernels",
        "plain",
        "--tokens",
        "4",
        "--prompt-tokens",
        "3",
        "--runs",
        "1",
        ...more,
      ]);
    const table = await plainRun();
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split("\n");
    assert.equal(lines.length, 3);
    assert.match(lines[0], /\| model \| kernels \| thr \| gen tok\/s \| prefill tok\/s \|/);
    assert.match(lines[2], /^\| model\.bin \| plain \| 1 \| [\d.]+ \| [\d.]+ \|/);
    // With --context, a column for generating late in a long conversation.
    const contextTable = await plainRun("--context", "40");
    assert.equal(contextTable.code, 0, contextTable.stderr);
    assert.match(contextTable.stdout, /\| gen tok\/s \| gen @40 tok\/s \| prefill tok\/s \|/);
    assert.match(contextTable.stdout, /^\| model\.bin \| plain \| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/m);
    // 45 cached positions and 4 more tokens do not fit the context of 48.
    const tooLong = await plainRun("--context", "45");
    assert.equal(tooLong.code, 1);
    assert.match(tooLong.stderr, new RegExp(`context \\(${TINY_CONFIG.seqLen}\\)`));

    // The model's context (48) is shorter than 100 tokens: one line, exit 1.
    // (A flag given twice takes its last value.)
    const long = await plainRun("--tokens", "100");
    assert.equal(long.code, 1);
    assert.equal(long.stderr.trim().split("\n").length, 1, long.stderr);
    assert.match(long.stderr, new RegExp(`context \\(${TINY_CONFIG.seqLen}\\)`));
    // A missing model: one line, and nothing on stdout (no half table).
    const missing = await runCli(["bench", "--model", `${dir}/missing.bin`, "--runs", "1"]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stdout, "");
    assert.match(missing.stderr, /^tensorless: .*missing\.bin: no such file or directory\n$/);
    const usage = await runCli(["bench", "--runs", "0"]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--runs/);
    // Random models: an unknown encoding, and Q4_K_M on a shape whose sizes are not multiples of 256.
    const unknownType = await runCli(["bench", "--shape", "15M", "--type", "Q6_K", "--cache", dir]);
    assert.equal(unknownType.code, 2);
    assert.match(unknownType.stderr, /unknown type "Q6_K" \(F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M\)/);
    const kQuant = await runCli(["bench", "--shape", "15M", "--type", "Q4_K_M", "--cache", dir]);
    assert.equal(kQuant.code, 2);
    assert.match(kQuant.stderr, /Q4_K_M needs sizes that are multiples of 256; shape 15M has 288 and 768/);
    assert.deepEqual([...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("random-")), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
