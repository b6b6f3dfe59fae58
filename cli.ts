#!/usr/bin/env -S deno run -A
/**
 * The `tensorless` command line: `tensorless <command> [options]`.
 * Each command lives in `lib/commands/`; this file only dispatches and turns
 * errors into one line on stderr.
 *
 * @module
 */

import { TensorlessError } from "./lib/errors.ts";
import { type Command, UsageError } from "./lib/commands/command.ts";
import { command as bench } from "./lib/commands/bench.ts";
import { command as chat } from "./lib/commands/chat.ts";
import { command as generate } from "./lib/commands/generate.ts";
import { command as info } from "./lib/commands/info.ts";
import { command as models } from "./lib/commands/models.ts";
import { command as pull } from "./lib/commands/pull.ts";

const commands: Command[] = [generate, chat, pull, models, info, bench];

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return `Usage: tensorless <command> [options]

Runs Llama 2-family models in plain TypeScript: llama2.c checkpoints, GGUF and
Hugging Face safetensors.

Commands:
${commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

Run "tensorless <command> --help" for a command's options.
`;
}

/** Runs the CLI with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined) {
    console.error(usage());
    return 2;
  }
  if (name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return 0;
  }
  const command = commands.find((c) => c.name === name);
  try {
    if (!command) throw new UsageError(`unknown command "${name}"`);
    return await command.run(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`tensorless${command ? " " + command.name : ""}: ${error.message} (see --help)`);
      return 2;
    }
    if (error instanceof TensorlessError) {
      console.error(`tensorless: ${error.message}`);
      return 1;
    }
    if (error instanceof Deno.errors.BrokenPipe) return 0;
    throw error;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
