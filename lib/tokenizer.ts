/**
 * SentencePiece BPE tokenization in plain loops, for every vocabulary source
 * (llama2.c `tokenizer.bin`, SentencePiece `tokenizer.model`, GGUF).
 *
 * Encoding: the text gets a ▁ prefix and its spaces become ▁; it is split
 * into characters; then the adjacent pair whose concatenation is a piece with
 * the highest score is merged, leftmost first on ties, until no pair is a
 * piece. This is both llama2.c's `encode()` and the SentencePiece library's
 * BPE; a priority queue finds each best pair without rescanning the text.
 * Characters left without a piece become `<0xNN>` byte pieces.
 *
 * Decoding follows SentencePiece (and llama2.c): control pieces print
 * nothing, the ▁ starting the first piece (or the piece after BOS) is
 * dropped, byte pieces are raw bytes, and the text is always valid UTF-8.
 *
 * @module
 */

import { FileFormatError } from "./errors.ts";
import { readFileBytes } from "./file_bytes.ts";
import { parseSentencePieceModel } from "./sentencepiece_model.ts";
import { isBytePiece, parseTokenizerBin } from "./tokenizer_bin.ts";
import { Utf8Stream } from "./utf8_stream.ts";
import { PieceType, type Vocabulary } from "./vocabulary.ts";

const SPACE_SYMBOL = "\u2581";
/** What SentencePiece prints for `<unk>`. */
const UNKNOWN_SURFACE = " \u2047 ";

/** Options for {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Put the BOS id first (default false). */
  bos?: boolean;
  /** Put the EOS id last (default false). */
  eos?: boolean;
}

/** Per-id decoding data shared by a tokenizer and its decoders. */
interface DecodeTable {
  /** Piece text with ▁ turned into spaces ("" for control pieces). */
  texts: string[];
  /** The byte a `<0xNN>` piece stands for, or -1. */
  bytes: Int16Array;
  types: Uint8Array;
  bosId: number;
}

/** Decoding data of each tokenizer, shared with its decoders without making it public. */
const decodeTables = new WeakMap<Tokenizer, DecodeTable>();

/**
 * Turns text into token ids and back. Build one from any {@link Vocabulary},
 * or load a file with {@link loadTokenizer}.
 *
 * @example A five-piece vocabulary: merges pick the best-scoring pair first
 * ```ts
 * import { Tokenizer } from "./tokenizer.ts";
 * import assert from "node:assert/strict";
 *
 * const tokenizer = new Tokenizer({
 *   pieces: ["<unk>", "<s>", "</s>", "▁", "h", "i", "▁h", "▁hi"],
 *   scores: new Float32Array([0, 0, 0, -4, -5, -6, -2, -1]),
 *   types: new Uint8Array([2, 3, 3, 1, 1, 1, 1, 1]), // unknown, control, control, then normal pieces
 *   bosId: 1,
 *   eosId: 2,
 *   unkId: 0,
 *   addDummyPrefix: true,
 *   byteFallback: false,
 *   source: "example",
 * });
 * const ids = tokenizer.encode("hi hih", { bos: true });
 * assert.deepEqual(ids, [1, 7, 7, 4]); // <s> ▁hi ▁hi h
 * assert.equal(tokenizer.decode(ids), "hi hih");
 * ```
 */
export class Tokenizer {
  /** Number of pieces (ids run from 0 to vocabSize - 1). */
  readonly vocabSize: number;
  /** Beginning-of-sequence id. */
  readonly bosId: number;
  /** End-of-sequence id. */
  readonly eosId: number;
  /** The vocabulary this tokenizer was built from. */
  readonly vocabulary: Vocabulary;
  /** Pieces plain text may produce (NORMAL, USER_DEFINED, UNUSED) → id. */
  #mergeable = new Map<string, number>();
  /** User-defined pieces, which are matched whole before merging, grouped by first character. */
  #userDefined = new Map<string, string[]>();
  /** Byte value → id of its `<0xNN>` piece, or -1. */
  #byteIds = new Int32Array(256).fill(-1);

  /**
   * Builds the lookup tables for `vocabulary`.
   *
   * @param vocabulary pieces, scores and types from any source
   */
  constructor(vocabulary: Vocabulary) {
    const { pieces, scores, types } = vocabulary;
    if (scores.length !== pieces.length || types.length !== pieces.length) {
      throw new FileFormatError(
        vocabulary.source,
        `vocabulary has ${pieces.length} pieces but ${scores.length} scores and ${types.length} types`,
      );
    }
    this.vocabulary = vocabulary;
    this.vocabSize = pieces.length;
    this.bosId = vocabulary.bosId;
    this.eosId = vocabulary.eosId;
    const texts: string[] = new Array(pieces.length);
    const bytes = new Int16Array(pieces.length).fill(-1);
    for (let id = 0; id < pieces.length; id++) {
      const piece = pieces[id];
      const type = types[id];
      if (type === PieceType.NORMAL || type === PieceType.USER_DEFINED || type === PieceType.UNUSED) {
        // the first of duplicate pieces wins, as in SentencePiece
        if (piece.length > 0 && !this.#mergeable.has(piece)) this.#mergeable.set(piece, id);
      }
      if (type === PieceType.USER_DEFINED && piece.length > 0) {
        const first = String.fromCodePoint(piece.codePointAt(0)!);
        const list = this.#userDefined.get(first) ?? [];
        list.push(piece);
        this.#userDefined.set(first, list);
      }
      if (type === PieceType.BYTE && isBytePiece(piece)) {
        const value = parseInt(piece.slice(3, 5), 16);
        bytes[id] = value;
        if (this.#byteIds[value] < 0) this.#byteIds[value] = id;
      }
      texts[id] = type === PieceType.CONTROL ? "" : piece.replaceAll(SPACE_SYMBOL, " ");
    }
    for (const list of this.#userDefined.values()) list.sort((a, b) => b.length - a.length); // longest match first
    decodeTables.set(this, { texts, bytes, types, bosId: vocabulary.bosId });
  }

  /**
   * Encodes text as SentencePiece BPE (and llama2.c) does. Control pieces
   * are never produced from text: "<s>" typed by a user is three characters.
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    // a vocabulary may lack BOS or EOS (id -1)
    if (options.bos && this.bosId >= 0) ids.push(this.bosId);
    const [normalized, unescaped] = this.#normalize(text);
    if (normalized.length > 0) this.#encodeNormalized(normalized, unescaped, ids);
    if (options.eos && this.eosId >= 0) ids.push(this.eosId);
    return ids;
  }

  /** Decodes a whole sequence; the same as pushing every id through a {@link TokenDecoder}. */
  decode(ids: number[]): string {
    const decoder = this.decoder();
    let out = "";
    for (const id of ids) out += decoder.push(id);
    return out + decoder.flush();
  }

  /**
   * One piece's text as it would print, for displays such as attention
   * charts: ▁ as a space, printable byte pieces as their character, other
   * byte and control pieces as written (`<0x0A>`, `<s>`).
   */
  piece(id: number): string {
    this.#checkId(id);
    const table = decodeTables.get(this)!;
    const type = table.types[id];
    const byte = table.bytes[id];
    if (byte >= 0x20 && byte < 0x7f) return String.fromCharCode(byte);
    if (type === PieceType.CONTROL || type === PieceType.UNKNOWN || type === PieceType.BYTE) {
      return this.vocabulary.pieces[id];
    }
    return table.texts[id];
  }

  /** A streaming decoder: push ids one by one as they are generated, get text back. */
  decoder(): TokenDecoder {
    return new TokenDecoder(this);
  }

  #checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
    }
  }

  /**
   * SentencePiece's normalizer for an identity rule: optional whitespace
   * cleanup, dummy prefix, ▁ for spaces. Returns the text before escaping
   * too (same positions), which tells a typed ▁ from a space.
   */
  #normalize(text: string): [string, string] {
    const v = this.vocabulary;
    if (v.removeExtraWhitespaces) text = text.replace(/ +/g, " ").replace(/^ | $/g, "");
    if (text.length === 0) return ["", ""];
    if (v.addDummyPrefix) text = " " + text;
    return [(v.escapeWhitespaces ?? true) ? text.replaceAll(" ", SPACE_SYMBOL) : text, text];
  }

  #encodeNormalized(text: string, unescaped: string, ids: number[]): void {
    // Symbols are spans [start, end) of `text` in a doubly linked list.
    const starts: number[] = [];
    const ends: number[] = [];
    let position = 0;
    while (position < text.length) {
      let length = 0;
      const code = text.codePointAt(position)!;
      const charLength = code > 0xffff ? 2 : 1;
      const candidates = this.#userDefined.get(text.slice(position, position + charLength));
      if (candidates) {
        for (const candidate of candidates) {
          if (text.startsWith(candidate, position)) {
            length = candidate.length;
            break;
          }
        }
      }
      if (length === 0) length = charLength;
      starts.push(position);
      ends.push(position + length);
      position += length;
    }
    const count = starts.length;
    const prev = new Int32Array(count);
    const next = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < count ? i + 1 : -1;
    }
    // Frozen symbols never merge: user-defined pieces, and in llama2.c's
    // encoding the characters it turns into byte tokens up front.
    const frozen = new Uint8Array(count);
    const asBytes = new Uint8Array(count);
    const llama2c = this.vocabulary.llama2cEncode ?? false;
    if (this.#userDefined.size > 0 || llama2c) {
      for (let i = 0; i < count; i++) {
        const id = this.#mergeable.get(text.slice(starts[i], ends[i]));
        if (id !== undefined && this.vocabulary.types[id] === PieceType.USER_DEFINED) frozen[i] = 1;
        if (llama2c && (id === undefined || unescaped[starts[i]] === SPACE_SYMBOL)) frozen[i] = asBytes[i] = 1;
      }
    }

    const scores = this.vocabulary.scores;
    const types = this.vocabulary.types;
    const queue = new PairQueue();
    /** How UNUSED pieces split back into the two pieces they were merged from. */
    const unmerge = new Map<string, [string, string]>();
    const consider = (left: number, right: number) => {
      if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
      const merged = text.slice(starts[left], ends[right]);
      const id = this.#mergeable.get(merged);
      if (id === undefined) return;
      queue.push(scores[id], left, right, merged.length);
      if (types[id] === PieceType.UNUSED) {
        unmerge.set(merged, [text.slice(starts[left], ends[left]), text.slice(starts[right], ends[right])]);
      }
    };
    for (let i = 0; i + 1 < count; i++) consider(i, i + 1);

    while (queue.size > 0) {
      const { left, right, length } = queue.pop();
      // Skip pairs made stale by an earlier merge.
      if (ends[left] <= starts[left] || ends[right] <= starts[right]) continue;
      if (ends[right] - starts[left] !== length || next[left] !== right) continue;
      ends[left] = ends[right];
      ends[right] = starts[right]; // empty: merged away
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      consider(prev[left], left);
      consider(left, next[left]);
    }

    for (let i = 0; i >= 0 && i < count; i = next[i]) {
      if (asBytes[i]) this.#emitBytes(text.slice(starts[i], ends[i]), ids);
      else this.#emit(text.slice(starts[i], ends[i]), unmerge, ids);
    }
  }

  /** Appends the ids for one final symbol: its piece, the pieces an UNUSED piece came from, or bytes. */
  #emit(symbol: string, unmerge: Map<string, [string, string]>, ids: number[]): void {
    const id = this.#mergeable.get(symbol);
    if (id !== undefined) {
      const parts = this.vocabulary.types[id] === PieceType.UNUSED ? unmerge.get(symbol) : undefined;
      if (parts) {
        this.#emit(parts[0], unmerge, ids);
        this.#emit(parts[1], unmerge, ids);
      } else ids.push(id);
      return;
    }
    if (this.vocabulary.byteFallback) this.#emitBytes(symbol, ids);
    else ids.push(this.vocabulary.unkId);
  }

  /** Appends a symbol's UTF-8 bytes as `<0xNN>` piece ids (`<unk>` for a byte with no piece). */
  #emitBytes(symbol: string, ids: number[]): void {
    for (const byte of utf8Encoder.encode(symbol)) {
      const byteId = this.#byteIds[byte];
      ids.push(byteId >= 0 ? byteId : this.vocabulary.unkId);
    }
  }
}

/**
 * Decodes ids one at a time, for streaming output. It drops the leading
 * space of the first piece (SentencePiece's dummy prefix) and of the piece
 * after BOS (llama2.c), and holds the bytes of a character split across byte
 * tokens until the character is complete.
 */
export class TokenDecoder {
  #table: DecodeTable;
  #utf8 = new Utf8Stream();
  /** Whether the next piece's leading space is the dummy prefix to drop. */
  #atStart = true;

  /**
   * A decoder at the start of a text.
   *
   * @param tokenizer whose pieces to decode (the same as `tokenizer.decoder()`)
   */
  constructor(tokenizer: Tokenizer) {
    this.#table = decodeTables.get(tokenizer)!;
  }

  /** Decodes one more id; returns the text it completes (possibly ""). */
  push(id: number): string {
    const table = this.#table;
    if (!Number.isInteger(id) || id < 0 || id >= table.texts.length) {
      throw new RangeError(`token id ${id} is outside the vocabulary (0..${table.texts.length - 1})`);
    }
    const byte = table.bytes[id];
    if (byte >= 0) {
      this.#atStart = false;
      return this.#utf8.push([byte]);
    }
    // a non-byte piece ends any pending character
    let out = this.#utf8.flush();
    if (out.length > 0) this.#atStart = false;
    const type = table.types[id];
    if (type === PieceType.CONTROL) {
      if (id === table.bosId) this.#atStart = true;
      return out;
    }
    if (type === PieceType.UNKNOWN) {
      this.#atStart = false;
      return out + UNKNOWN_SURFACE;
    }
    let text = table.texts[id];
    if (this.#atStart && text.startsWith(" ")) {
      text = text.slice(1);
      this.#atStart = false;
    } else if (text.length > 0) this.#atStart = false;
    out += text;
    return out;
  }

  /** Ends the stream: bytes of an unfinished character come out as U+FFFD. */
  flush(): string {
    return this.#utf8.flush();
  }
}

/**
 * Loads a tokenizer file, recognising the format by content: a SentencePiece
 * `tokenizer.model` (protobuf) or a llama2.c `tokenizer.bin`.
 *
 * @param path the tokenizer file
 * @param expectedVocabSize the model's vocabulary size; a different piece count is an error
 * @throws {FileFormatError} when the file cannot be read or parsed, or its size does not match
 */
export async function loadTokenizer(path: string, expectedVocabSize?: number): Promise<Tokenizer> {
  const bytes = await readFileBytes(path);
  let vocabulary: Vocabulary;
  if (bytes.length >= 4 && String.fromCharCode(...bytes.subarray(0, 4)) === "GGUF") {
    throw new FileFormatError(path, "is a GGUF model, not a tokenizer file (GGUF models carry their own vocabulary)");
  } else if (looksLikeSentencePiece(bytes)) {
    vocabulary = parseSentencePieceModel(bytes, path);
  } else {
    vocabulary = parseTokenizerBin(bytes, path);
  }
  const tokenizer = new Tokenizer(vocabulary);
  if (expectedVocabSize !== undefined && tokenizer.vocabSize !== expectedVocabSize) {
    throw new FileFormatError(
      path,
      `tokenizer has ${tokenizer.vocabSize} pieces, the model expects ${expectedVocabSize}`,
    );
  }
  return tokenizer;
}

/**
 * A SentencePiece model starts with field 1 (a piece), length-delimited:
 * byte 0x0A then a non-zero varint length. A llama2.c file starts with a
 * small little-endian int32; even max_token_length 10 (0x0A) is followed by
 * zero bytes, which no piece message can be.
 */
function looksLikeSentencePiece(bytes: Uint8Array): boolean {
  if (bytes.length < 4 || bytes[0] !== 0x0a) return false;
  return !(bytes[1] === 0 && bytes[2] === 0 && bytes[3] === 0);
}

const utf8Encoder = new TextEncoder();

/** A binary max-heap of candidate merges: highest score first, then leftmost. */
class PairQueue {
  #scores: number[] = [];
  #lefts: number[] = [];
  #rights: number[] = [];
  #lengths: number[] = [];

  get size(): number {
    return this.#scores.length;
  }

  push(score: number, left: number, right: number, length: number): void {
    this.#scores.push(score);
    this.#lefts.push(left);
    this.#rights.push(right);
    this.#lengths.push(length);
    let i = this.#scores.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): { left: number; right: number; length: number } {
    const top = { left: this.#lefts[0], right: this.#rights[0], length: this.#lengths[0] };
    const last = this.#scores.length - 1;
    this.#swap(0, last);
    this.#scores.pop();
    this.#lefts.pop();
    this.#rights.pop();
    this.#lengths.pop();
    let i = 0;
    const size = this.#scores.length;
    while (true) {
      const a = 2 * i + 1;
      const b = a + 1;
      let best = i;
      if (a < size && this.#before(a, best)) best = a;
      if (b < size && this.#before(b, best)) best = b;
      if (best === i) break;
      this.#swap(i, best);
      i = best;
    }
    return top;
  }

  #before(i: number, j: number): boolean {
    const si = this.#scores[i];
    const sj = this.#scores[j];
    return si > sj || (si === sj && this.#lefts[i] < this.#lefts[j]);
  }

  #swap(i: number, j: number): void {
    swap(this.#scores, i, j);
    swap(this.#lefts, i, j);
    swap(this.#rights, i, j);
    swap(this.#lengths, i, j);
  }
}

function swap(array: number[], i: number, j: number): void {
  const t = array[i];
  array[i] = array[j];
  array[j] = t;
}
