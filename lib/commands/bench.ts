/**
 * `tensorless bench`: generation and prefill speed, time to first token, load
 * time and peak memory, per kernel path and thread count, on a model file or
 * on a random model of a named shape. Each configuration runs in its own
 * process so its peak RSS is its own.
 *
 * @module
 */

import { FileFormatError, TensorlessError } from "../errors.ts";
import { describeOpenError } from "../file_bytes.ts";
import { createKernels, KERNEL_KINDS, type KernelKind } from "../kernels/select.ts";
import { findTokenizer, kernelMemory, Model, modelBytes, readModelFile } from "../model.ts";
import {
  fillerVocabulary,
  Random,
  RANDOM_MODEL_TYPES,
  randomModelProblem,
  type RandomModelType,
  SHAPES,
  writeRandomModel,
} from "../random_model.ts";
import { Tokenizer } from "../tokenizer.ts";
import type { Session } from "../transformer.ts";
import { type Command, numberFlag, parseFlags, UsageError } from "./command.ts";
import { argmax } from "../sampler.ts";

const help = `Usage: tensorless bench [--model FILE | --shape 15M|42M|110M|1.1B|7B|13B] [options]

Measures generation and prefill tokens/s, time to first token, load time and
peak resident memory, per kernel path and thread count. Token ids are fed
directly (no text), so models without a tokenizer work too. Generation and
the prompt each run twice, a warm-up first, as llama-bench warms up (--json
keeps the warm-ups' numbers: coldGenerateTokensPerSecond, coldTimeToFirstToken).
Each configuration runs in fresh processes, --runs times, in rounds (each
round runs every configuration of a model once); the table shows the median
of each number (--json also lists every run).

Options:
  -m, --model FILE       a model file to measure (llama2.c or GGUF)
      --shape LIST       random models of these shapes, comma-separated (default 15M):
                         15M (288/768/6/6), 42M (512/1376/8/8), 110M (768/2048/12/12),
                         1.1B (2048/5632/22/32, 4 KV heads: TinyLlama), 7B (4096/11008/32/32),
                         13B (5120/13824/40/40), all with vocabulary 32000
      --type LIST        encodings of the random models: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
                         Q5_1, Q4_K_M (default F32; Q4_K_M needs a shape whose sizes are
                         multiples of 256: 110M, 1.1B, 7B, 13B)
      --kernels LIST     kernel paths: plain, wasm, fast (default plain,fast)
      --threads LIST     thread counts for fast (default: 1 and navigator.hardwareConcurrency)
      --tokens N         tokens to generate (default 256)
      --prompt-tokens N  prompt length for the prefill measurement (default 128)
      --context N        also generate with N positions already cached (random keys and
                         values), as late in a long conversation: the "gen @N" column
                         (default 0: not measured); peak RSS then includes that cache
      --runs N           processes per configuration (default 3)
      --cache DIR        where random models are kept (default ~/.cache/tensorless/bench)
      --json             print JSON instead of a table
  -h, --help             show this help
`;

/** One measured configuration. */
export interface BenchResult {
  model: string;
  kernels: string;
  threads: number;
  /** Seconds from nothing to a ready model (kernels, file read, parse). */
  loadSeconds: number;
  /** Generation speed: one token per step, timed after the first (as llama2.c), after a warm-up generation. */
  generateTokensPerSecond: number;
  /** The same for the warm-up, the process's first generation: its code not yet warm. */
  coldGenerateTokensPerSecond: number;
  /** Prompt tokens per second, the prompt fed as one batch (after a warm-up prompt of the same length). */
  prefillTokensPerSecond: number;
  /** Positions cached before {@link BenchResult.contextGenerateTokensPerSecond} was measured (0: not measured). */
  context: number;
  /** Generation speed with `context` positions already in the cache, or 0. */
  contextGenerateTokensPerSecond: number;
  /** Seconds from feeding the prompt to the first token picked. */
  timeToFirstToken: number;
  /** The same for the warm-up prompt, the process's first: its buffers' memory is fresh, its code not yet warm. */
  coldTimeToFirstToken: number;
  /** Peak resident memory of the process (VmHWM), bytes. */
  peakRssBytes: number;
  fileBytes: number;
  /** Every run's numbers when several were made; the fields above are their medians. */
  runs?: BenchResult[];
}

interface ChildRequest {
  model: string;
  kernels: KernelKind;
  threads: number;
  tokens: number;
  promptTokens: number;
  context: number;
}

/** The `bench` command. */
export const command: Command = {
  name: "bench",
  summary: "measure speed and memory per kernel path and thread count",
  help,
  async run(args) {
    const { values } = parseFlags(args, {
      model: { type: "string", short: "m" },
      shape: { type: "string" },
      type: { type: "string" },
      kernels: { type: "string" },
      threads: { type: "string" },
      tokens: { type: "string" },
      "prompt-tokens": { type: "string" },
      context: { type: "string" },
      runs: { type: "string" },
      cache: { type: "string" },
      json: { type: "boolean" },
    });
    if (values.help) {
      console.log(help);
      return 0;
    }
    const tokens = numberFlag("tokens", values.tokens, 256, { min: 2, integer: true });
    const promptTokens = numberFlag("prompt-tokens", values["prompt-tokens"], 128, { min: 1, integer: true });
    const context = numberFlag("context", values.context, 0, { min: 0, integer: true });
    const runs = numberFlag("runs", values.runs, 3, { min: 1, max: 100, integer: true });
    const kinds = list(values.kernels ?? "plain,fast").map((k) => {
      if (!KERNEL_KINDS.includes(k as KernelKind)) throw new UsageError(`unknown kernels "${k}"`);
      return k as KernelKind;
    });
    const cores = navigator.hardwareConcurrency ?? 1;
    const threadCounts = list(values.threads ?? [...new Set([1, cores])].join(",")).map((t) =>
      numberFlag("threads", t, 1, { min: 1, max: 256, integer: true })
    );

    const models: string[] = [];
    if (values.model) {
      if (values.shape || values.type) throw new UsageError("--model and --shape/--type exclude each other");
      // A missing file is reported before the table starts, so no half table is left on stdout.
      try {
        await Deno.stat(values.model);
      } catch (error) {
        throw new FileFormatError(values.model, describeOpenError(error));
      }
      models.push(values.model);
    } else {
      const cache = values.cache ?? defaultCache();
      await Deno.mkdir(cache, { recursive: true });
      for (const shape of list(values.shape ?? "15M")) {
        if (!(shape in SHAPES)) throw new UsageError(`unknown shape "${shape}" (${Object.keys(SHAPES).join(", ")})`);
        for (const type of list(values.type ?? "F32")) {
          if (!RANDOM_MODEL_TYPES.includes(type as RandomModelType)) {
            throw new UsageError(`unknown type "${type}" (${RANDOM_MODEL_TYPES.join(", ")})`);
          }
          const problem = randomModelProblem(SHAPES[shape], type as RandomModelType, `shape ${shape}`);
          if (problem) throw new UsageError(problem);
          models.push(await randomModel(cache, shape, type as RandomModelType));
        }
      }
    }

    const results: BenchResult[] = [];
    if (!values.json) console.log(tableHeader(context));
    for (const model of models) {
      const configurations = kinds.flatMap((kernels) =>
        (kernels === "fast" ? threadCounts : [1]).map((threads) => ({
          model,
          kernels,
          threads,
          tokens,
          promptTokens,
          context,
        }))
      );
      // Round by round, every configuration once per round: a machine that speeds up or slows down meanwhile
      // shifts them all alike, so their medians stay comparable.
      const each: BenchResult[][] = configurations.map(() => []);
      for (let run = 0; run < runs; run++) {
        for (const [i, request] of configurations.entries()) each[i].push(await runChild(request));
      }
      for (const runsOfOne of each) {
        const result = runs === 1 ? runsOfOne[0] : medianOf(runsOfOne);
        results.push(result);
        if (!values.json) console.log(tableRow(result));
      }
    }
    if (values.json) console.log(JSON.stringify(results, null, 2));
    return 0;
  },
};

/** The median of every number over several runs of one configuration (the runs themselves kept in `runs`). */
function medianOf(runs: BenchResult[]): BenchResult {
  const median = (pick: (r: BenchResult) => number) => {
    const sorted = runs.map(pick).sort((a, b) => a - b);
    const middle = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  };
  return {
    ...runs[0],
    loadSeconds: median((r) => r.loadSeconds),
    generateTokensPerSecond: median((r) => r.generateTokensPerSecond),
    coldGenerateTokensPerSecond: median((r) => r.coldGenerateTokensPerSecond),
    prefillTokensPerSecond: median((r) => r.prefillTokensPerSecond),
    contextGenerateTokensPerSecond: median((r) => r.contextGenerateTokensPerSecond),
    timeToFirstToken: median((r) => r.timeToFirstToken),
    coldTimeToFirstToken: median((r) => r.coldTimeToFirstToken),
    peakRssBytes: median((r) => r.peakRssBytes),
    runs,
  };
}

function list(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function defaultCache(): string {
  const home = Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "."}/.cache`;
  return `${home}/tensorless/bench`;
}

/** The cached random model of `shape` and `type`, written first if absent. */
async function randomModel(cache: string, shape: string, type: RandomModelType): Promise<string> {
  const path = `${cache}/random-${shape}-${type}.${type === "F32" ? "bin" : "gguf"}`;
  try {
    await Deno.stat(path);
  } catch {
    console.error(`writing ${path} ...`);
    await writeRandomModel(path, SHAPES[shape], type);
  }
  return path;
}

/** Runs one configuration in a fresh process (this module as its main) and reads its JSON result. */
async function runChild(request: ChildRequest): Promise<BenchResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.url, JSON.stringify(request)],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const reply = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    // The child reports a TensorlessError as {"error": message}; anything else is a crash, already on stderr.
    let message = `benchmark of ${request.model} (${request.kernels}) failed`;
    try {
      message = JSON.parse(reply).error ?? message;
    } catch {
      // not JSON: keep the generic message
    }
    throw new TensorlessError(message);
  }
  return JSON.parse(reply);
}

/** Loads a model with its file read straight into the kernels' memory when they offer it. */
async function loadForBench(path: string, kernels: Awaited<ReturnType<typeof createKernels>>): Promise<Model> {
  const file = await readModelFile(path, kernelMemory(kernels));
  let tokenizer: Tokenizer;
  try {
    tokenizer = await findTokenizer(file);
  } catch {
    // Token ids are fed directly; a filler vocabulary only satisfies the Model.
    const { pieces, scores, types } = fillerVocabulary(file.config.vocabSize);
    tokenizer = new Tokenizer({
      pieces,
      scores,
      types: Uint8Array.from(types),
      bosId: 1,
      eosId: 2,
      unkId: 0,
      addDummyPrefix: true,
      byteFallback: true,
      source: "filler",
    });
  }
  return new Model(file, tokenizer, kernels);
}

/** Peak resident memory of this process (Linux), or 0 when unknown. */
function peakRss(): number {
  try {
    const match = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+) kB/);
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Measures one configuration in this process. */
export async function measure(request: ChildRequest): Promise<BenchResult> {
  const started = performance.now();
  const kernels = await createKernels(request.kernels, request.threads, await modelBytes(request.model));
  const model = await loadForBench(request.model, kernels);
  const loadSeconds = (performance.now() - started) / 1000;
  try {
    const { vocabSize, seqLen } = model.config;
    if (request.tokens > seqLen || request.promptTokens + 1 > seqLen || request.context + request.tokens > seqLen) {
      throw new TensorlessError(`the model's context (${seqLen}) is shorter than the benchmark needs`);
    }
    /** Tokens/s generating in `session`, closed after: the first step untimed (llama2.c's convention), then one token per step. */
    const generationRate = (session: Session): number => {
      using generating = session;
      let logits = generating.feed([1]);
      const start = performance.now();
      for (let i = 1; i < request.tokens; i++) logits = generating.feed([argmax(logits)]);
      return (request.tokens - 1) / ((performance.now() - start) / 1000);
    };
    // Twice, as the prompt below: the process's first generation is also the first to run the one-token code, which
    // JavaScript and WebAssembly compile to faster tiers as it runs (its first hundred tokens, 5-15% slower at 15M).
    const coldGenerateTokensPerSecond = generationRate(model.newSession());
    const generateTokensPerSecond = generationRate(model.newSession());

    // Prefill: a random prompt as one batch, twice. The first is a warm-up (as llama-bench runs one): it is the first
    // to touch the prompt-sized buffers' fresh memory and to run the batch code (2-10% slower at 110M); the second is
    // the measurement.
    let seed = 12345;
    const prompt = Array.from({ length: request.promptTokens }, (_, i) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return i === 0 ? 1 : 3 + (seed % (vocabSize - 3));
    });
    const timePrompt = (): number => {
      using prompted = model.newSession();
      const prefillStart = performance.now();
      argmax(prompted.feed(prompt));
      return (performance.now() - prefillStart) / 1000;
    };
    const coldTimeToFirstToken = timePrompt();
    const timeToFirstToken = timePrompt();

    // Late in a long conversation: `context` positions cached first (random keys and values; every layer imports
    // the same array, so it costs one layer's floats), then generation as above.
    let contextGenerateTokensPerSecond = 0;
    if (request.context > 0) {
      const { nLayers, dim, nHeads, nKvHeads } = model.config;
      const random = new Random(7);
      const cached = Float32Array.from({ length: request.context * (dim / nHeads) * nKvHeads }, () => random.next());
      const layers = Array.from({ length: nLayers }, () => cached);
      const long = model.newSession();
      long.importCache({ position: request.context, keys: layers, values: layers });
      contextGenerateTokensPerSecond = generationRate(long);
    }
    return {
      model: request.model,
      kernels: kernels.name,
      threads: request.kernels === "fast" ? request.threads : 1,
      loadSeconds,
      generateTokensPerSecond,
      coldGenerateTokensPerSecond,
      prefillTokensPerSecond: request.promptTokens / timeToFirstToken,
      context: request.context,
      contextGenerateTokensPerSecond,
      timeToFirstToken,
      coldTimeToFirstToken,
      peakRssBytes: peakRss(),
      fileBytes: (await Deno.stat(request.model)).size,
    };
  } finally {
    model.close();
  }
}

function tableHeader(context: number): string {
  const head = ["model", "kernels", "thr", "gen tok/s", "prefill tok/s", "TTFT s", "load s", "peak RSS", "file"];
  if (context > 0) head.splice(4, 0, `gen @${context} tok/s`);
  return [head.join(" | "), head.map(() => "---").join(" | ")].map((l) => `| ${l} |`).join("\n");
}

function tableRow(r: BenchResult): string {
  const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  const name = r.model.slice(r.model.lastIndexOf("/") + 1);
  return `| ${
    [
      name,
      r.kernels,
      r.threads,
      r.generateTokensPerSecond.toFixed(1),
      ...(r.context > 0 ? [r.contextGenerateTokensPerSecond.toFixed(1)] : []),
      r.prefillTokensPerSecond.toFixed(1),
      r.timeToFirstToken.toFixed(3),
      r.loadSeconds.toFixed(2),
      mb(r.peakRssBytes),
      mb(r.fileBytes),
    ].join(" | ")
  } |`;
}

if (import.meta.main) {
  try {
    console.log(JSON.stringify(await measure(JSON.parse(Deno.args[0]))));
    Deno.exit(0);
  } catch (error) {
    if (!(error instanceof TensorlessError)) throw error;
    console.log(JSON.stringify({ error: error.message }));
    Deno.exit(1);
  }
}
