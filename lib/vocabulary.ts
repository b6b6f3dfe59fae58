/**
 * A SentencePiece-style vocabulary as read from any source (llama2.c
 * `tokenizer.bin`, SentencePiece `tokenizer.model`, GGUF metadata). The
 * tokenizer is built from this, so every source encodes the same way.
 *
 * @module
 */

/** SentencePiece piece types (ModelProto.SentencePiece.Type). */
export const PieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** Pieces and their merge scores. Piece text uses U+2581 (▁) for spaces, as SentencePiece does. */
export interface Vocabulary {
  /** Piece text by id. */
  pieces: string[];
  /** Merge priority by id: higher merges first. */
  scores: Float32Array;
  /** One {@link PieceType} per piece. */
  types: Uint8Array;
  /** Beginning-of-sequence id. */
  bosId: number;
  /** End-of-sequence id. */
  eosId: number;
  /** The unknown-piece id. */
  unkId: number;
  /** Prepend ▁ to non-empty text before encoding (SentencePiece's add_dummy_prefix). */
  addDummyPrefix: boolean;
  /** Encode characters that have no piece as `<0xNN>` byte pieces. */
  byteFallback: boolean;
  /** Trim and collapse runs of spaces before encoding (SentencePiece's remove_extra_whitespaces; default false). */
  removeExtraWhitespaces?: boolean;
  /** Spaces become ▁ before encoding (SentencePiece's escape_whitespaces; default true). */
  escapeWhitespaces?: boolean;
  /**
   * Encode exactly as llama2.c's `encode()` (set for `tokenizer.bin`): a character with no piece of its own, and ▁
   * typed in the text, becomes byte tokens before merging, so it never merges. SentencePiece merges such characters.
   */
  llama2cEncode?: boolean;
  /** Where the vocabulary came from, for error messages. */
  source: string;
}
