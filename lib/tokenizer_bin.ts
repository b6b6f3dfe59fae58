/**
 * Reading llama2.c's `tokenizer.bin`: an int32 max_token_length, then for
 * each piece a float32 score, an int32 byte length and the bytes. The file
 * does not say how many pieces it holds; they run to the end of the file.
 *
 * @module
 */

import { ByteReader } from "./byte_reader.ts";
import { PieceType, type Vocabulary } from "./vocabulary.ts";

/** Largest max_token_length accepted; real files say 7 to 50 or so. */
const MAX_TOKEN_LENGTH_LIMIT = 1 << 16;

/**
 * Parses a llama2.c `tokenizer.bin` into a SentencePiece-style vocabulary:
 * spaces become ▁, BOS/EOS (stored as "\n<s>\n" and "\n</s>\n") lose their
 * newlines, `<0xNN>` pieces are BYTE, id 0 UNKNOWN, ids 1 and 2 CONTROL.
 *
 * @param bytes the whole file
 * @param path the file's path, for error messages
 * @throws {FileFormatError} when a length runs past the end of the file or exceeds max_token_length
 */
export function parseTokenizerBin(bytes: Uint8Array, path: string): Vocabulary {
  const reader = new ByteReader(bytes, path);
  const maxTokenLength = reader.i32("max_token_length");
  if (maxTokenLength < 1 || maxTokenLength > MAX_TOKEN_LENGTH_LIMIT) {
    reader.fail(`not a llama2.c tokenizer: max_token_length is ${maxTokenLength}`);
  }
  const pieces: string[] = [];
  const scoreList: number[] = [];
  while (reader.remaining > 0) {
    const id = pieces.length;
    const score = reader.f32(`score of piece ${id}`);
    const length = reader.i32(`length of piece ${id}`);
    if (length < 0 || length > maxTokenLength) {
      reader.fail(`piece ${id} has length ${length}, outside 0..${maxTokenLength} (max_token_length)`);
    }
    const raw = reader.utf8(length, `piece ${id}`);
    pieces.push(raw);
    scoreList.push(score);
  }
  if (pieces.length < 3) reader.fail(`has ${pieces.length} pieces; a tokenizer needs at least <unk>, <s> and </s>`);

  const types = new Uint8Array(pieces.length);
  for (let id = 0; id < pieces.length; id++) {
    let piece = pieces[id];
    if (id === 0) types[id] = PieceType.UNKNOWN;
    else if (id === 1 || id === 2) {
      types[id] = PieceType.CONTROL;
      // llama2.c's export wrapped BOS/EOS in newlines
      if (piece.length >= 2 && piece.startsWith("\n") && piece.endsWith("\n")) piece = piece.slice(1, -1);
    } else if (isBytePiece(piece)) types[id] = PieceType.BYTE;
    else types[id] = PieceType.NORMAL;
    if (types[id] !== PieceType.CONTROL) piece = piece.replaceAll(" ", "\u2581");
    pieces[id] = piece;
  }
  return {
    pieces,
    scores: Float32Array.from(scoreList),
    types,
    bosId: 1,
    eosId: 2,
    unkId: 0,
    addDummyPrefix: true,
    byteFallback: true,
    removeExtraWhitespaces: false,
    escapeWhitespaces: true,
    llama2cEncode: true,
    source: path,
  };
}

/** Whether a piece is written `<0xNN>` (two uppercase hex digits), SentencePiece's byte piece form. */
export function isBytePiece(piece: string): boolean {
  return piece.length === 6 && /^<0x[0-9A-F]{2}>$/.test(piece);
}
