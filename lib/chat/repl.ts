/**
 * The chat loop: reads user turns and `:commands`, streams replies.
 *
 * On a terminal it uses node:readline (line editing, history), Ctrl-C stops a
 * reply and Ctrl-C at an empty prompt or Ctrl-D exits. Otherwise (a pipe or a
 * file) each input line is one user turn, only replies go to stdout and
 * everything else to stderr, and it ends at the end of the input.
 *
 * @module
 */

import * as readline from "node:readline";
import process from "node:process";
import { TensorlessError } from "../errors.ts";
import { attentionChart, attentionHtml } from "./attention_view.ts";
import type { Conversation, TurnStats } from "./conversation.ts";
import { loadConversation, saveConversation } from "./conversation_file.ts";

/** Settings of {@link runRepl}. */
export interface ReplOptions {
  /** Name shown in `:help` and stored in saved files. */
  modelName: string;
  /** Print stats on stderr after each reply. */
  verbose?: boolean;
  /** Write a heatmap page of each reply's attention here. */
  attentionOut?: string;
  /** Interactive terminal mode (default: whether stdin is a terminal). */
  interactive?: boolean;
  /** Colour (default: stdout is a terminal and NO_COLOR is unset). */
  color?: boolean;
}

const COMMANDS = `Commands:
  :help            this help
  :reset           forget the conversation (keeps the system prompt)
  :system TEXT     set the system prompt (empty: none); applies from the next turn
  :temp X          sampling temperature (0 = greedy)
  :top-p X         nucleus sampling threshold, 0..1 (0 or 1: off)
  :seed N          restart the random generator from N
  :stats           position / context, tokens prefilled and generated, speed
  :attend          which earlier tokens each layer attended to for the last reply token
  :save FILE       save the conversation and its KV cache
  :load FILE       resume a saved conversation (same model only)
  :quit            leave (also Ctrl-D; Ctrl-C at an empty prompt)`;

/** Runs the loop until the input ends or `:quit`; resolves to the exit status. */
export async function runRepl(conversation: Conversation, options: ReplOptions): Promise<number> {
  const interactive = options.interactive ?? Deno.stdin.isTerminal();
  const color = options.color ?? (Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR"));
  const encoder = new TextEncoder();
  const out = (text: string) => writeAll(Deno.stdout, encoder.encode(text));
  const err = (text: string) => writeAll(Deno.stderr, encoder.encode(text));
  // Command output is a result on a terminal; with piped input stdout carries replies only.
  const info = (text: string) => interactive ? out(text + "\n") : err(text + "\n");

  const lines = new LineQueue();
  const rl = readline.createInterface({
    input: process.stdin,
    output: interactive ? process.stdout : undefined,
    terminal: interactive,
    historySize: 500,
    prompt: color ? "\x1b[1m> \x1b[0m" : "> ",
  });
  rl.on("line", (line: string) => lines.push(line));
  rl.on("close", () => lines.end());

  let generating = false;
  const onInterrupt = () => {
    if (generating) conversation.interrupt();
    else lines.end(true); // Ctrl-C at the prompt: leave, even with input still queued.
  };
  rl.on("SIGINT", onInterrupt);
  const signalListener = () => onInterrupt();
  Deno.addSignalListener("SIGINT", signalListener);

  if (interactive) {
    await err(
      `chatting with ${options.modelName} (template: ${conversation.template.name}). ` +
        `Type :help for commands, Ctrl-D to leave.\n`,
    );
  }
  try {
    while (true) {
      if (interactive) rl.prompt();
      const line = await lines.next();
      if (line === undefined) break;
      const text = line.trim();
      if (text.startsWith(":")) {
        const quit = await runCommand(text, conversation, options, info, color);
        if (quit) break;
        continue;
      }
      if (text === "" && interactive) continue;
      generating = true;
      let stats: TurnStats | undefined;
      let wrote = false;
      try {
        const reply = conversation.reply(text);
        while (true) {
          const step = await reply.next();
          if (step.done) {
            stats = step.value;
            break;
          }
          wrote = true;
          await out(step.value);
        }
      } catch (error) {
        if (!(error instanceof TensorlessError)) throw error;
        await err(`${wrote ? "\n" : ""}${error.message}\n`);
        continue;
      } finally {
        generating = false;
      }
      await out("\n");
      if (stats.stop === "interrupted") await err("(reply stopped)\n");
      if (options.verbose) await err(formatStats(stats) + "\n");
      if (options.attentionOut && conversation.replyAttention) {
        await writeAttentionPage(options.attentionOut, conversation, options.modelName);
        if (options.verbose) await err(`attention of the reply written to ${options.attentionOut}\n`);
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", signalListener);
    rl.close();
  }
  if (interactive) await out("\n");
  return 0;
}

/** Runs one `:command`; resolves to true when the loop should end. */
async function runCommand(
  line: string,
  conversation: Conversation,
  options: ReplOptions,
  info: (text: string) => Promise<void>,
  color: boolean,
): Promise<boolean> {
  const space = line.indexOf(" ");
  const name = (space < 0 ? line : line.slice(0, space)).toLowerCase();
  const argument = space < 0 ? "" : line.slice(space + 1).trim();
  const number = (what: string, min: number, max: number, integer = false) => {
    const n = Number(argument);
    if (argument === "" || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new TensorlessError(`${name} needs ${what}`);
    }
    return n;
  };
  try {
    switch (name) {
      case ":help":
      case ":h":
      case ":?":
        await info(
          `model: ${options.modelName}; template: ${conversation.template.description}\n${COMMANDS}`,
        );
        return false;
      case ":quit":
      case ":q":
      case ":exit":
        return true;
      case ":reset":
        conversation.reset();
        await info("conversation cleared");
        return false;
      case ":system":
        conversation.system = argument || undefined;
        await info(argument ? "system prompt set; it applies from the next turn" : "system prompt removed");
        return false;
      case ":temp":
      case ":temperature":
        conversation.sampler.temperature = number("a number >= 0", 0, Infinity);
        await info(`temperature ${conversation.sampler.temperature}`);
        return false;
      case ":top-p":
      case ":topp":
        conversation.sampler.topP = number("a number between 0 and 1", 0, 1);
        await info(`top-p ${conversation.sampler.topP}`);
        return false;
      case ":seed":
        conversation.sampler.reseed(number("a positive integer", 1, Number.MAX_SAFE_INTEGER, true));
        await info(`seed ${argument}`);
        return false;
      case ":stats": {
        const stats = conversation.lastStats;
        const position = conversation.session.position;
        await info(
          stats
            ? formatStats({ ...stats, position })
            : `position ${position}/${conversation.model.config.seqLen} (no reply yet)`,
        );
        return false;
      }
      case ":attend": {
        const attention = conversation.lastAttention;
        if (!attention || attention.records.length === 0 || conversation.lastStats === undefined) {
          await info("no reply yet: :attend shows the attention of the last reply token");
          return false;
        }
        const piece = (id: number) => conversation.model.tokenizer.piece(id);
        await info(attentionChart(attention, conversation.cachedIds, conversation.model.config, piece, { color }));
        return false;
      }
      case ":save":
        if (!argument) throw new TensorlessError(":save needs a file name");
        await saveConversation(argument, conversation, options.modelName);
        await info(`saved ${conversation.session.position} tokens of conversation to ${argument}`);
        return false;
      case ":load": {
        if (!argument) throw new TensorlessError(":load needs a file name");
        await loadConversation(argument, conversation);
        const turns = conversation.messages.filter((m) => m.role === "user").length;
        await info(`loaded ${turns} turn(s), ${conversation.session.position} tokens, from ${argument}`);
        return false;
      }
      default:
        await info(`unknown command ${name} (type :help for the list)`);
        return false;
    }
  } catch (error) {
    if (!(error instanceof TensorlessError)) throw error;
    await writeAll(Deno.stderr, new TextEncoder().encode(error.message + "\n"));
    return false;
  }
}

/** One line of turn figures, as `:stats` and `--verbose` print them. */
export function formatStats(stats: TurnStats): string {
  const parts = [
    `position ${stats.position}/${stats.contextLength}`,
    `prefilled ${stats.prefilled} tokens`,
    `generated ${stats.generated} tokens`,
    `first token after ${stats.timeToFirstTokenMs.toFixed(0)} ms`,
    `${stats.tokensPerSecond.toFixed(1)} tokens/s`,
  ];
  if (stats.stop !== "end") parts.push(`stopped: ${stats.stop}`);
  if (stats.droppedTurns > 0) parts.push(`dropped ${stats.droppedTurns} old turn(s)`);
  return `[${parts.join(" · ")}]`;
}

async function writeAttentionPage(path: string, conversation: Conversation, modelName: string): Promise<void> {
  const attention = conversation.replyAttention!;
  const piece = (id: number) => conversation.model.tokenizer.piece(id);
  const html = attentionHtml(attention, piece, conversation.model.config, `attention of a reply by ${modelName}`);
  const temporary = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeTextFile(temporary, html);
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw new TensorlessError(
      `${path}: cannot write: ${error instanceof Error ? error.message.split("\n")[0] : error}`,
    );
  }
}

async function writeAll(stream: { write(bytes: Uint8Array): Promise<number> }, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await stream.write(bytes.subarray(done));
}

/** Lines from readline, awaited one at a time; `undefined` once the input has ended. */
class LineQueue {
  #lines: string[] = [];
  #ended = false;
  #waiting: ((line: string | undefined) => void) | undefined;

  push(line: string): void {
    if (this.#waiting) {
      const resolve = this.#waiting;
      this.#waiting = undefined;
      resolve(line);
    } else {
      this.#lines.push(line);
    }
  }

  /** No more lines will come; `discard` also drops those not read yet. */
  end(discard = false): void {
    this.#ended = true;
    if (discard) this.#lines = [];
    if (this.#waiting) {
      const resolve = this.#waiting;
      this.#waiting = undefined;
      resolve(undefined);
    }
  }

  next(): Promise<string | undefined> {
    if (this.#lines.length > 0) return Promise.resolve(this.#lines.shift());
    if (this.#ended) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiting = resolve);
  }
}
