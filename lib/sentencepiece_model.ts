/**
 * Reading a SentencePiece `tokenizer.model`: a protobuf ModelProto, decoded
 * here with a small wire-format reader (no protobuf library). Only the
 * fields tokenization needs are kept; the rest are skipped by wire type.
 *
 * ModelProto: pieces = 1 {piece = 1, score = 2, type = 3}, trainer_spec = 2
 * {model_type = 3, vocab_size = 4, byte_fallback = 35, unk_id = 40, bos_id = 41,
 * eos_id = 42, pad_id = 43}, normalizer_spec = 3 {name = 1,
 * precompiled_charsmap = 2, add_dummy_prefix = 3, remove_extra_whitespaces = 4,
 * escape_whitespaces = 5}.
 *
 * @module
 */

import { FileFormatError } from "./errors.ts";
import { PieceType, type Vocabulary } from "./vocabulary.ts";

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH = 2;
const WIRE_FIXED32 = 5;

const MODEL_UNIGRAM = 1;
const MODEL_BPE = 2;
const MODEL_NAMES: Record<number, string> = { 1: "Unigram", 2: "BPE", 3: "word", 4: "char" };

/** One field of a protobuf message: its number, wire type and where its value is. */
interface Field {
  number: number;
  wireType: number;
  /** Varint value as a low and high 32-bit half (wire type 0). */
  low: number;
  high: number;
  /** Start and end of the value's bytes (wire types 1, 2, 5). */
  start: number;
  end: number;
}

/** A bounds-checked cursor over one protobuf message. */
class ProtoReader {
  #bytes: Uint8Array;
  #view: DataView;
  #path: string;
  #what: string;
  offset: number;
  readonly end: number;

  constructor(bytes: Uint8Array, path: string, start: number, end: number, what: string) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#path = path;
    this.#what = what;
    this.offset = start;
    this.end = end;
  }

  fail(problem: string): never {
    throw new FileFormatError(this.#path, `bad SentencePiece model: ${this.#what} ${problem}`);
  }

  /** A varint as two 32-bit halves (protobuf int32 fields keep the low half). */
  #varint(): [number, number] {
    let low = 0;
    let high = 0;
    for (let i = 0; i < 10; i++) {
      if (this.offset >= this.end) this.fail(`ends inside a varint at offset ${this.offset}`);
      const byte = this.#bytes[this.offset++];
      const bits = byte & 0x7f;
      if (i < 4) low |= bits << (7 * i);
      else if (i === 4) {
        low |= (bits & 0x0f) << 28;
        high |= bits >> 4;
      } else high |= bits << (7 * i - 32);
      if ((byte & 0x80) === 0) return [low >>> 0, high >>> 0];
    }
    this.fail(`has a varint longer than 10 bytes at offset ${this.offset}`);
  }

  /** The next field, or undefined at the end of the message. */
  next(): Field | undefined {
    if (this.offset >= this.end) return undefined;
    const [tag, tagHigh] = this.#varint();
    const number = tag >>> 3;
    const wireType = tag & 7;
    if (tagHigh !== 0 || number === 0) this.fail(`has an invalid field tag at offset ${this.offset}`);
    const field: Field = { number, wireType, low: 0, high: 0, start: this.offset, end: this.offset };
    if (wireType === WIRE_VARINT) {
      [field.low, field.high] = this.#varint();
      field.end = this.offset;
    } else if (wireType === WIRE_FIXED64 || wireType === WIRE_FIXED32) {
      const size = wireType === WIRE_FIXED64 ? 8 : 4;
      if (size > this.end - this.offset) this.fail(`ends inside field ${number} at offset ${this.offset}`);
      field.end = this.offset + size;
    } else if (wireType === WIRE_LENGTH) {
      const [length, high] = this.#varint();
      if (high !== 0 || length > this.end - this.offset) {
        this.fail(`field ${number} is longer than what is left of the file (offset ${this.offset})`);
      }
      field.start = this.offset;
      field.end = this.offset + length;
    } else {
      // groups (3, 4) are deprecated and never used by SentencePiece; 6 and 7 do not exist
      this.fail(`field ${number} has unsupported wire type ${wireType} at offset ${this.offset}`);
    }
    this.offset = field.end;
    return field;
  }

  expect(field: Field, wireType: number): void {
    if (field.wireType !== wireType) this.fail(`field ${field.number} has wire type ${field.wireType}`);
  }

  int32(field: Field): number {
    this.expect(field, WIRE_VARINT);
    return field.low | 0;
  }

  bool(field: Field): boolean {
    this.expect(field, WIRE_VARINT);
    return field.low !== 0 || field.high !== 0;
  }

  float(field: Field): number {
    this.expect(field, WIRE_FIXED32);
    return this.#view.getFloat32(field.start, true);
  }

  string(field: Field): string {
    this.expect(field, WIRE_LENGTH);
    return textDecoder.decode(this.#bytes.subarray(field.start, field.end));
  }

  message(field: Field, what: string): ProtoReader {
    this.expect(field, WIRE_LENGTH);
    return new ProtoReader(this.#bytes, this.#path, field.start, field.end, what);
  }
}

const textDecoder = new TextDecoder();

/**
 * Parses a SentencePiece ModelProto into a {@link Vocabulary}. Only BPE
 * models with the identity normalizer (Llama's) are supported; others get a
 * one-line "unsupported" error.
 *
 * @param bytes the whole `tokenizer.model` file
 * @param path the file's path, for error messages
 * @throws {FileFormatError} on malformed protobuf or an unsupported model
 */
export function parseSentencePieceModel(bytes: Uint8Array, path: string): Vocabulary {
  const model = new ProtoReader(bytes, path, 0, bytes.length, "model");
  const pieces: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  // proto2 defaults
  let modelType = MODEL_UNIGRAM;
  let byteFallback = false;
  let unkId = 0;
  let bosId = 1;
  let eosId = 2;
  let normalizerName = "";
  let hasCharsMap = false;
  let addDummyPrefix = true;
  let removeExtraWhitespaces = true;
  let escapeWhitespaces = true;
  let haveTrainerSpec = false;

  for (let field = model.next(); field; field = model.next()) {
    if (field.number === 1) {
      const entry = model.message(field, `piece ${pieces.length}`);
      let piece = "";
      let score = 0;
      let type: number = PieceType.NORMAL;
      for (let f = entry.next(); f; f = entry.next()) {
        if (f.number === 1) piece = entry.string(f);
        else if (f.number === 2) score = entry.float(f);
        else if (f.number === 3) type = entry.int32(f);
      }
      if (type < PieceType.NORMAL || type > PieceType.BYTE) entry.fail(`has unknown type ${type}`);
      pieces.push(piece);
      scores.push(score);
      types.push(type);
    } else if (field.number === 2) {
      const spec = model.message(field, "trainer_spec");
      haveTrainerSpec = true;
      for (let f = spec.next(); f; f = spec.next()) {
        if (f.number === 3) modelType = spec.int32(f);
        else if (f.number === 35) byteFallback = spec.bool(f);
        else if (f.number === 40) unkId = spec.int32(f);
        else if (f.number === 41) bosId = spec.int32(f);
        else if (f.number === 42) eosId = spec.int32(f);
      }
    } else if (field.number === 3) {
      const spec = model.message(field, "normalizer_spec");
      for (let f = spec.next(); f; f = spec.next()) {
        if (f.number === 1) normalizerName = spec.string(f);
        else if (f.number === 2) {
          spec.expect(f, WIRE_LENGTH);
          hasCharsMap = f.end > f.start;
        } else if (f.number === 3) addDummyPrefix = spec.bool(f);
        else if (f.number === 4) removeExtraWhitespaces = spec.bool(f);
        else if (f.number === 5) escapeWhitespaces = spec.bool(f);
      }
    }
  }

  if (pieces.length === 0) throw new FileFormatError(path, "SentencePiece model has no pieces");
  if (!haveTrainerSpec) throw new FileFormatError(path, "SentencePiece model has no trainer_spec (truncated file?)");
  if (modelType !== MODEL_BPE) {
    const name = MODEL_NAMES[modelType] ?? `type ${modelType}`;
    throw new FileFormatError(path, `${name} SentencePiece models are not supported (only BPE, as Llama uses)`);
  }
  if (normalizerName !== "" && normalizerName !== "identity" && hasCharsMap) {
    throw new FileFormatError(path, `the "${normalizerName}" normalization rule is not supported (only identity)`);
  }
  // The piece typed UNKNOWN is the one SentencePiece uses, whatever trainer_spec says.
  const unknownPiece = types.indexOf(PieceType.UNKNOWN);
  if (unknownPiece >= 0) unkId = unknownPiece;
  const inRange = (id: number) => (id >= 0 && id < pieces.length ? id : -1);
  return {
    pieces,
    scores: Float32Array.from(scores),
    types: Uint8Array.from(types),
    bosId: inRange(bosId),
    eosId: inRange(eosId),
    unkId: inRange(unkId),
    addDummyPrefix,
    byteFallback,
    removeExtraWhitespaces,
    escapeWhitespaces,
    source: path,
  };
}
