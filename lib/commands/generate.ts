/**
 * `tensorless generate`: continue a prompt, streaming text to stdout.
 *
 * @module
 */

import { DEFAULT_MODEL, resolveModel } from "../catalog.ts";
import { generate } from "../generate.ts";
import { loadModel } from "../model.ts";
import { type Command, KERNEL_FLAGS, KERNEL_FLAGS_HELP, kernelOptions, numberFlag, parseFlags } from "./command.ts";

const help = `Usage: tensorless generate [--model MODEL] [options]

Continues a prompt and streams the text to stdout (llama2.c's "generate" mode).
Tokens per second go to stderr at the end.

Options:
  -m, --model M          a catalog name (downloaded on first use; see "tensorless models")
                         or a path: llama2.c .bin, GGUF file or Hugging Face directory
                         (default: ${DEFAULT_MODEL})
  -t, --tokenizer PATH   tokenizer.bin or tokenizer.model (when the model has none)
  -p, --prompt TEXT      text to continue (default: empty)
  -n, --steps N          total positions, prompt included, as llama2.c (default 256;
                         at most the context length)
      --temperature T    0 = greedy; default 1.0
      --top-p P          nucleus sampling threshold in (0, 1); 0 or 1 disables (default 0.9)
  -s, --seed S           random seed, a positive integer (default: the current time)
${KERNEL_FLAGS_HELP}
      --dir DIR          models folder for catalog names
  -h, --help             show this help
`;

/** The `generate` command. */
export const command: Command = {
  name: "generate",
  summary: "continue a prompt (llama2.c-compatible sampling)",
  help,
  async run(args) {
    const { values } = parseFlags(args, {
      model: { type: "string", short: "m" },
      tokenizer: { type: "string", short: "t" },
      prompt: { type: "string", short: "p" },
      steps: { type: "string", short: "n" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string", short: "s" },
      dir: { type: "string" },
      ...KERNEL_FLAGS,
    });
    if (values.help) {
      console.log(help);
      return 0;
    }
    const steps = numberFlag("steps", values.steps, 256, { min: 1, integer: true });
    const temperature = numberFlag("temperature", values.temperature, 1, { min: 0 });
    const topP = numberFlag("top-p", values["top-p"], 0.9, { min: 0, max: 1 });
    const seed = numberFlag("seed", values.seed, Math.floor(Date.now() / 1000), {
      min: 1,
      max: Number.MAX_SAFE_INTEGER,
      integer: true,
    });

    const kernels = kernelOptions(values);
    const resolved = await resolveModel(values.model ?? DEFAULT_MODEL, { dir: values.dir });
    const model = await loadModel(resolved.model, { tokenizer: values.tokenizer ?? resolved.tokenizer, ...kernels });
    try {
      const encoder = new TextEncoder();
      let tokens = 0, started = 0, sampled = false;
      for await (
        const piece of generate(model, {
          prompt: values.prompt ?? "",
          steps,
          temperature,
          topP,
          seed,
          onToken: (_, isSampled) => {
            // llama2.c's timer starts after the first position (BOS); so does ours. It counts positions.
            if (tokens++ === 1) started = performance.now();
            sampled ||= isSampled;
          },
        })
      ) {
        await Deno.stdout.write(encoder.encode(piece));
      }
      await Deno.stdout.write(encoder.encode("\n"));
      // A prompt that takes all the steps is only echoed: nothing was computed to report.
      if (tokens > 1 && sampled) {
        const seconds = (performance.now() - started) / 1000;
        console.error(`achieved tok/s: ${((tokens - 1) / seconds).toFixed(2)}`);
      }
    } finally {
      model.close();
    }
    return 0;
  },
};
