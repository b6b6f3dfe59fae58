/**
 * Chat templates: how a conversation becomes the token ids a model was
 * trained on. BOS and EOS are inserted as ids, never parsed from text, so a
 * user typing `</s>` or `[INST]` cannot forge a turn boundary.
 *
 * A template renders the whole conversation; the caller feeds only the part
 * its KV cache does not hold yet. Rendering is prefix-stable: adding a turn
 * (or a reply token) only appends ids, so the cache stays valid.
 *
 * @module
 */

import { TensorlessError } from "../errors.ts";

/** What templates need from a tokenizer. */
export interface TemplateTokenizer {
  /** Text to ids (SentencePiece style: a leading `▁` is added to non-empty text). */
  encode(text: string, options?: { bos?: boolean; eos?: boolean }): number[];
  /** Beginning-of-sequence id (`<s>`). */
  readonly bosId: number;
  /** End-of-sequence id (`</s>`). */
  readonly eosId: number;
}

/** One conversation turn. Replies are kept as the ids the model produced, so re-rendering never re-tokenizes them. */
export type ChatMessage = { role: "user"; text: string } | { role: "assistant"; ids: number[] };

/** Names accepted by `--template`. */
export const TEMPLATE_NAMES = ["llama2", "zephyr", "raw"] as const;
/** A template name. */
export type TemplateName = typeof TEMPLATE_NAMES[number];

/** A chat template bound to a tokenizer. */
export interface ChatTemplate {
  /** Its `--template` name. */
  readonly name: TemplateName;
  /** One line for `:help`. */
  readonly description: string;
  /**
   * All ids of the conversation: system prompt, every turn, and when the last
   * message is the user's, the opening of the assistant's reply. With
   * `openReply`, a final assistant message is left open (no end marker), so
   * generation can continue it.
   */
  render(system: string | undefined, messages: ChatMessage[], options?: { openReply?: boolean }): number[];
  /** Ids that end a reply when sampled. */
  readonly stopIds: ReadonlySet<number>;
}

/** Creates the template `name` for `tokenizer`. */
export function chatTemplate(name: TemplateName, tokenizer: TemplateTokenizer): ChatTemplate {
  switch (name) {
    case "llama2":
      return new Llama2Template(tokenizer);
    case "zephyr":
      return new ZephyrTemplate(tokenizer);
    case "raw":
      return new RawTemplate(tokenizer);
  }
}

/** Whether `name` is a template name. */
export function isTemplateName(name: string): name is TemplateName {
  return (TEMPLATE_NAMES as readonly string[]).includes(name);
}

/**
 * Picks a template: `override` (from `--template`) if given, else what the
 * model file's chat template (GGUF `tokenizer.chat_template`) looks like,
 * else a catalog hint, else the model's name; `raw` when nothing matches.
 */
export function chooseTemplate(
  hints: { override?: string; chatTemplate?: string; catalog?: string; names?: (string | undefined)[] },
): TemplateName {
  if (hints.override !== undefined) {
    if (!isTemplateName(hints.override)) {
      throw new TensorlessError(`unknown template "${hints.override}" (known: ${TEMPLATE_NAMES.join(", ")})`);
    }
    return hints.override;
  }
  const jinja = hints.chatTemplate;
  if (jinja) {
    if (jinja.includes("[INST]")) return "llama2";
    if (jinja.includes("<|user|>") || jinja.includes("<|assistant|>")) return "zephyr";
  }
  if (hints.catalog && isTemplateName(hints.catalog)) return hints.catalog;
  for (const name of hints.names ?? []) {
    if (!name) continue;
    if (/tinyllama.*chat|zephyr/i.test(name)) return "zephyr";
    if (/llama[-_ ]?2.*chat/i.test(name)) return "llama2";
  }
  return "raw";
}

/** Meta's Llama 2 chat format: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s>`. */
class Llama2Template implements ChatTemplate {
  readonly name = "llama2";
  readonly description = "Llama 2 chat: <s>[INST] <<SYS>>…<</SYS>> user [/INST] answer </s>";
  readonly stopIds: ReadonlySet<number>;
  readonly #tokenizer: TemplateTokenizer;

  constructor(tokenizer: TemplateTokenizer) {
    this.#tokenizer = tokenizer;
    this.stopIds = new Set([tokenizer.eosId]);
  }

  render(system: string | undefined, messages: ChatMessage[], options: { openReply?: boolean } = {}): number[] {
    const { bosId, eosId } = this.#tokenizer;
    const ids: number[] = [];
    let first = true;
    messages.forEach((message, i) => {
      if (message.role === "user") {
        const sys = first && system ? `<<SYS>>\n${system.trim()}\n<</SYS>>\n\n` : "";
        ids.push(bosId, ...this.#tokenizer.encode(`[INST] ${sys}${message.text.trim()} [/INST]`));
        first = false;
      } else {
        ids.push(...message.ids);
        if (!(options.openReply && i === messages.length - 1)) ids.push(eosId);
      }
    });
    return ids;
  }
}

/** Zephyr, as TinyLlama-Chat uses it: `<|system|>\n…</s>\n<|user|>\n…</s>\n<|assistant|>\n…</s>`. */
class ZephyrTemplate implements ChatTemplate {
  readonly name = "zephyr";
  readonly description = "Zephyr (TinyLlama chat): <|system|> <|user|> <|assistant|> turns ended by </s>";
  readonly stopIds: ReadonlySet<number>;
  readonly #tokenizer: TemplateTokenizer;

  constructor(tokenizer: TemplateTokenizer) {
    this.#tokenizer = tokenizer;
    this.stopIds = new Set([tokenizer.eosId]);
  }

  render(system: string | undefined, messages: ChatMessage[], options: { openReply?: boolean } = {}): number[] {
    const { bosId, eosId } = this.#tokenizer;
    const encode = (text: string) => this.#tokenizer.encode(text);
    // Text after an end marker starts with "\n", as in the Jinja template.
    const ids: number[] = [bosId];
    let separator = "";
    if (system) {
      ids.push(...encode(`<|system|>\n${system.trim()}`), eosId);
      separator = "\n";
    }
    messages.forEach((message, i) => {
      if (message.role === "user") {
        ids.push(...encode(`${separator}<|user|>\n${message.text.trim()}`), eosId);
        ids.push(...encode("\n<|assistant|>\n"));
      } else {
        ids.push(...message.ids);
        if (!(options.openReply && i === messages.length - 1)) ids.push(eosId);
      }
      separator = "\n";
    });
    return ids;
  }
}

/** Plain continuation for base models: BOS, then each user line and reply in sequence. */
class RawTemplate implements ChatTemplate {
  readonly name = "raw";
  readonly description = "raw: plain continuation of the text so far (for base models such as stories15M)";
  readonly stopIds: ReadonlySet<number>;
  readonly #tokenizer: TemplateTokenizer;

  constructor(tokenizer: TemplateTokenizer) {
    this.#tokenizer = tokenizer;
    // llama2.c's models end a story by starting the next one (BOS).
    this.stopIds = new Set([tokenizer.eosId, tokenizer.bosId]);
  }

  render(system: string | undefined, messages: ChatMessage[]): number[] {
    const ids: number[] = [this.#tokenizer.bosId];
    if (system) ids.push(...this.#tokenizer.encode(system.trim()));
    for (const message of messages) {
      if (message.role === "user") ids.push(...this.#tokenizer.encode(message.text.trim()));
      else ids.push(...message.ids);
    }
    return ids;
  }
}
