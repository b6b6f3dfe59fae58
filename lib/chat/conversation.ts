/**
 * A conversation with a model that keeps its KV cache between turns: each
 * turn renders the whole transcript with the chat template, keeps the cached
 * prefix that still matches, and feeds only the new ids. Replies stream as
 * text; stopping a reply early leaves the cache holding exactly the kept
 * tokens. When the context is full, the oldest turns are dropped (the system
 * prompt stays) and the rest is read again.
 *
 * @module
 */

import { TensorlessError } from "../errors.ts";
import type { LlamaConfig, ModelFile } from "../model_file.ts";
import { Sampler } from "../sampler.ts";
import type { AttentionRecord, Session } from "../transformer.ts";
import type { ChatMessage, ChatTemplate, TemplateTokenizer } from "./templates.ts";

/** What a conversation needs from a model (a {@link Model} fits). */
export interface ChatModel {
  /** Hyperparameters; `seqLen` bounds the conversation. */
  readonly config: LlamaConfig;
  /** The parsed file (its weights identify the model in saved conversations). */
  readonly file: ModelFile;
  /** Encodes turns, decodes replies as they stream, and names tokens for `:attend`. */
  readonly tokenizer: TemplateTokenizer & {
    decoder(): { push(id: number): string; flush(): string };
    piece(id: number): string;
  };
  /** A fresh KV cache. */
  newSession(): Session;
}

/** Sampling and length settings of a conversation. */
export interface ConversationOptions {
  /** System prompt. */
  system?: string;
  /** Sampling temperature; 0 is greedy. Default 0.8. */
  temperature?: number;
  /** Nucleus sampling threshold. Default 0.9. */
  topP?: number;
  /** Random seed. Default 1. */
  seed?: number;
  /** Most tokens per reply. Default 256. */
  maxTokens?: number;
  /** Receives status messages meant for stderr (context full, turns dropped). */
  onNotice?: (message: string) => void;
}

/** Why a reply ended. */
export type StopReason = "end" | "max-tokens" | "interrupted" | "context-full";

/** Figures about one turn, for `:stats` and `--verbose`. */
export interface TurnStats {
  /** Tokens in the cache after the turn. */
  position: number;
  /** The model's context length. */
  contextLength: number;
  /** Tokens fed before the reply (new turn and template glue, or a re-read after dropping turns). */
  prefilled: number;
  /** Reply tokens. */
  generated: number;
  /** From the start of the turn to the first reply token, in ms. */
  timeToFirstTokenMs: number;
  /** Reply tokens per second after the first. */
  tokensPerSecond: number;
  /** Why the reply ended. */
  stop: StopReason;
  /** Turns (user + reply) dropped to make room. */
  droppedTurns: number;
}

/** Attention weights of one fed token: one record per layer and head. */
export interface TokenAttention {
  /** The token's position (its query attended to positions `0..position`). */
  position: number;
  /** The token's id. */
  id: number;
  /** Weights per layer and head, as the forward pass computed them. */
  records: AttentionRecord[];
}

/** Head-averaged attention of each layer for every token of a reply, for heatmaps. */
export interface ReplyAttention {
  /** The ids in the cache when the reply ended (positions 0..n-1). */
  ids: number[];
  /** Position of the first reply token. */
  start: number;
  /** Per reply token (fed ones), per layer: mean weight over heads for each position `0..position`. */
  rows: { position: number; layers: Float32Array[] }[];
}

/**
 * One conversation: messages, the session holding their KV cache, and a sampler.
 *
 * @example
 * ```ts ignore
 * const conversation = new Conversation(model, chatTemplate("llama2", model.tokenizer), { temperature: 0 });
 * for await (const text of conversation.reply("Hello!")) console.log(text);
 * ```
 */
export class Conversation {
  /** The model talked to. */
  readonly model: ChatModel;
  /** How turns become ids. */
  template: ChatTemplate;
  /** System prompt (applies from the next turn when changed). */
  system: string | undefined;
  /** The turns so far; replies as ids. */
  messages: ChatMessage[] = [];
  /** Picks reply tokens; its settings can change between turns. */
  readonly sampler: Sampler;
  /** Most tokens per reply. */
  maxTokens: number;
  /** When set, the attention of every reply token is kept (for `--attention-out`). */
  recordReplyAttention = false;
  /** Attention weights of the last reply token (undefined before any reply token was fed this turn). */
  lastAttention: TokenAttention | undefined;
  /** The last reply's attention, when {@link Conversation.recordReplyAttention} is on. */
  replyAttention: ReplyAttention | undefined;
  /** Figures of the last turn. */
  lastStats: TurnStats | undefined;
  /** The ids the session's cache holds, position by position. */
  #cached: number[] = [];
  #session: Session;
  #onNotice: (message: string) => void;
  #interrupted = false;
  /** How many ids the last {@link Conversation.#feedTarget} fed. */
  #lastPrefill = 0;

  /** Starts an empty conversation with its own session (KV cache). */
  constructor(model: ChatModel, template: ChatTemplate, options: ConversationOptions = {}) {
    this.model = model;
    this.template = template;
    this.system = options.system;
    this.sampler = new Sampler({
      temperature: options.temperature ?? 0.8,
      topP: options.topP ?? 0.9,
      seed: options.seed,
    });
    this.maxTokens = options.maxTokens ?? 256;
    this.#onNotice = options.onNotice ?? (() => {});
    this.#session = model.newSession();
  }

  /** The ids the KV cache holds (a copy). */
  get cachedIds(): number[] {
    return this.#cached.slice();
  }

  /** The session (its cache) behind this conversation. */
  get session(): Session {
    return this.#session;
  }

  /** Stops the reply being generated after the current token. */
  interrupt(): void {
    this.#interrupted = true;
  }

  /** Forgets the turns (keeps the system prompt and settings). The cache is emptied lazily. */
  reset(): void {
    this.messages = [];
  }

  /**
   * Adds a user turn and streams the reply as text pieces (whole UTF-8
   * characters). Stats are in {@link Conversation.lastStats} afterwards.
   */
  async *reply(text: string): AsyncGenerator<string, TurnStats> {
    this.#interrupted = false;
    const { seqLen } = this.model.config;
    const started = performance.now();
    this.messages.push({ role: "user", text });
    let dropped = 0;
    let target = this.#render();
    const reserve = Math.max(1, Math.min(this.maxTokens, Math.floor(seqLen / 4)));
    while (target.length + reserve > seqLen && this.#dropOldestTurn()) {
      dropped++;
      target = this.#render();
    }
    if (target.length >= seqLen) {
      this.messages.pop();
      throw new TensorlessError(
        `that message needs ${target.length} tokens with the system prompt; the context holds ${seqLen}`,
      );
    }
    if (dropped > 0) {
      this.#onNotice(
        `context full: dropped the ${dropped} oldest turn(s); ${target.length} tokens remain to attend to`,
      );
    }
    let logits = this.#feedTarget(target);
    const prefilled = this.#lastPrefill;

    const reply: ChatMessage & { role: "assistant" } = { role: "assistant", ids: [] };
    this.messages.push(reply);
    const decoder = this.model.tokenizer.decoder();
    const attention = this.recordReplyAttention
      ? { ids: [] as number[], start: this.#cached.length, rows: [] as ReplyAttention["rows"] }
      : undefined;
    let firstTokenAt = NaN;
    let stop: StopReason = "max-tokens";
    while (true) {
      if (this.#interrupted) {
        stop = "interrupted";
        break;
      }
      const id = this.sampler.sample(logits);
      if (this.template.stopIds.has(id)) {
        stop = "end";
        break;
      }
      if (Number.isNaN(firstTokenAt)) firstTokenAt = performance.now();
      reply.ids.push(id);
      if (this.#cached.length >= seqLen) {
        // No room for this token: drop old turns and read the rest again, or end the reply here.
        const removed = this.#makeRoomDuringReply();
        if (removed === 0) {
          reply.ids.pop();
          this.#onNotice("context full: the reply stops here (no older turns left to drop)");
          stop = "context-full";
          break;
        }
        dropped += removed;
        this.#onNotice(`context full: dropped the ${removed} oldest turn(s) and read the rest again`);
        logits = this.#feedTarget(this.#render({ openReply: true }), true);
        // Positions moved: earlier heatmap rows no longer line up with the cache.
        if (attention) {
          attention.rows = [];
          attention.start = this.#cached.length - reply.ids.length;
        }
      } else {
        logits = this.#feed([id], true);
      }
      if (attention && this.lastAttention) attention.rows.push(headMeans(this.lastAttention, this.model.config));
      const piece = decoder.push(id);
      if (piece) yield piece;
      if (reply.ids.length >= this.maxTokens) break;
    }
    const rest = decoder.flush();
    if (rest) yield rest;
    const ended = performance.now();
    if (attention) {
      attention.ids = this.#cached.slice();
      this.replyAttention = attention;
    }
    const decodeSeconds = (ended - firstTokenAt) / 1000;
    this.lastStats = {
      position: this.#cached.length,
      contextLength: seqLen,
      prefilled,
      generated: reply.ids.length,
      timeToFirstTokenMs: Number.isNaN(firstTokenAt) ? ended - started : firstTokenAt - started,
      tokensPerSecond: reply.ids.length > 1 && decodeSeconds > 0 ? (reply.ids.length - 1) / decodeSeconds : 0,
      stop,
      droppedTurns: dropped,
    };
    return this.lastStats;
  }

  /** The whole conversation as ids, with the reply opened when the last message is the user's. */
  render(options: { openReply?: boolean } = {}): number[] {
    return this.template.render(this.system, this.messages, options);
  }

  /**
   * Puts the session in the state of a saved conversation: `cached` ids with
   * their keys and values (see {@link Session.exportCache}).
   */
  restore(
    state: { system?: string; messages: ChatMessage[]; cached: number[] },
    cache: { position: number; keys: Float32Array[]; values: Float32Array[] },
  ): void {
    if (cache.position !== state.cached.length) throw new TensorlessError("the saved cache does not match its tokens");
    this.#session.importCache(cache);
    this.#cached = state.cached.slice();
    this.system = state.system;
    this.messages = state.messages.map((m) => m.role === "user" ? { ...m } : { role: "assistant", ids: m.ids.slice() });
    this.lastAttention = undefined;
  }

  #render(options: { openReply?: boolean } = {}): number[] {
    return this.template.render(this.system, this.messages, options);
  }

  /** Rewinds the cache to what still matches `target` and feeds the rest; returns the logits after it. */
  #feedTarget(target: number[], record = false): Float32Array {
    const keep = Math.min(commonPrefix(this.#cached, target), target.length - 1);
    this.#session.rewind(keep);
    this.#cached = this.#cached.slice(0, keep);
    this.#lastPrefill = target.length - keep;
    return this.#feed(target.slice(keep), record);
  }

  /**
   * Feeds `ids` and appends them to the cached list. With `record`, keeps the
   * attention weights of the last id (the forward pass only builds weight
   * arrays while the hook is set, so a long prefill runs without it).
   */
  #feed(ids: number[], record = false): Float32Array {
    const position = this.#cached.length + ids.length - 1;
    const records: AttentionRecord[] = [];
    this.#session.onAttention = record
      ? (r) => {
        if (r.position === position) records.push(r);
      }
      : undefined;
    try {
      const logits = this.#session.feed(ids);
      this.#cached.push(...ids);
      this.lastAttention = record ? { position, id: ids[ids.length - 1], records } : undefined;
      return logits;
    } finally {
      this.#session.onAttention = undefined;
    }
  }

  /** Drops the oldest user turn and its reply (never the last user turn). Returns false when none is left. */
  #dropOldestTurn(): boolean {
    const lastUser = this.messages.findLastIndex((m) => m.role === "user");
    if (lastUser <= 0) return false;
    let end = 1;
    while (end < lastUser && this.messages[end].role !== "user") end++;
    this.messages.splice(0, end);
    return true;
  }

  /** During a reply: drops old turns until a quarter of the context is free; returns how many. */
  #makeRoomDuringReply(): number {
    const { seqLen } = this.model.config;
    let removed = 0;
    while (this.#render({ openReply: true }).length > seqLen - Math.max(1, Math.floor(seqLen / 4))) {
      if (!this.#dropOldestTurn()) break;
      removed++;
    }
    if (this.#render({ openReply: true }).length > seqLen) return 0;
    return removed;
  }
}

/** Length of the common prefix of two id lists. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Per layer, the mean over heads of one token's attention weights. */
function headMeans(attention: TokenAttention, config: LlamaConfig): { position: number; layers: Float32Array[] } {
  const layers = Array.from({ length: config.nLayers }, () => new Float32Array(attention.position + 1));
  for (const record of attention.records) {
    const row = layers[record.layer];
    for (let i = 0; i < record.weights.length; i++) row[i] += record.weights[i] / config.nHeads;
  }
  return { position: attention.position, layers };
}
