/**
 * Turning a stream of bytes that arrive a few at a time (byte tokens) into
 * valid text, without splitting a character whose bytes come in different
 * tokens.
 *
 * @module
 */

const REPLACEMENT = "\uFFFD";

/**
 * Decodes UTF-8 incrementally. An incomplete sequence at the end of the input
 * is held until more bytes come; each byte that cannot start or continue a
 * valid sequence becomes one U+FFFD (as SentencePiece's decoder does).
 */
export class Utf8Stream {
  #held: number[] = [];

  /** Adds bytes; returns the text of every character they complete. */
  push(bytes: ArrayLike<number>): string {
    for (let i = 0; i < bytes.length; i++) this.#held.push(bytes[i] & 0xff);
    return this.#drain(false);
  }

  /** Whether bytes of an unfinished character are waiting. */
  get pending(): boolean {
    return this.#held.length > 0;
  }

  /** Ends the stream: any unfinished character becomes U+FFFD, one per byte. */
  flush(): string {
    return this.#drain(true);
  }

  #drain(final: boolean): string {
    const held = this.#held;
    let out = "";
    let i = 0;
    while (i < held.length) {
      const length = validPrefixLength(held, i);
      if (length > 0) {
        out += String.fromCodePoint(codePointAt(held, i, length));
        i += length;
      } else if (length === 0 && !final) {
        break; // a valid start whose remaining bytes have not arrived yet
      } else {
        out += REPLACEMENT;
        i += 1;
      }
    }
    this.#held = held.slice(i);
    return out;
  }
}

/**
 * Length of the valid UTF-8 character starting at `start`; 0 when the bytes
 * so far are a valid but unfinished start; -1 when the byte at `start` cannot
 * begin a valid character. Follows the Unicode table of well-formed sequences
 * (no overlongs, surrogates or values past U+10FFFF).
 */
function validPrefixLength(bytes: number[], start: number): number {
  const lead = bytes[start];
  let need: number;
  let low = 0x80;
  let high = 0xbf;
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) need = 1;
  else if (lead >= 0xe0 && lead <= 0xef) {
    need = 2;
    if (lead === 0xe0) low = 0xa0;
    if (lead === 0xed) high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    need = 3;
    if (lead === 0xf0) low = 0x90;
    if (lead === 0xf4) high = 0x8f;
  } else return -1;
  for (let k = 1; k <= need; k++) {
    if (start + k >= bytes.length) return 0;
    const b = bytes[start + k];
    // only the second byte has the narrowed range
    if (k === 1 ? b < low || b > high : b < 0x80 || b > 0xbf) return -1;
  }
  return need + 1;
}

function codePointAt(bytes: number[], start: number, length: number): number {
  if (length === 1) return bytes[start];
  let value = bytes[start] & (0xff >> (length + 1));
  for (let k = 1; k < length; k++) value = (value << 6) | (bytes[start + k] & 0x3f);
  return value;
}
