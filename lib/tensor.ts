/**
 * How weights are held in memory: a {@link Matrix} is a row-major view on the
 * bytes of a model file, in the file's own encoding (F32, F16, BF16 or one of
 * llama.cpp's block-quantized types). Nothing is dequantized up front: kernels
 * read rows block by block.
 *
 * @module
 */

/** Encodings a weight matrix can have. Quantized types pack `blockSize` weights into `blockBytes` bytes. */
export type TensorType =
  | "F32"
  | "F16"
  | "BF16"
  | "Q4_0"
  | "Q4_1"
  | "Q5_0"
  | "Q5_1"
  | "Q8_0"
  | "Q2_K"
  | "Q3_K"
  | "Q4_K"
  | "Q5_K"
  | "Q6_K";

/** Block geometry of each encoding (llama.cpp's `ggml_type_traits`). */
export const TENSOR_TYPES: Record<TensorType, { blockSize: number; blockBytes: number }> = {
  F32: { blockSize: 1, blockBytes: 4 },
  F16: { blockSize: 1, blockBytes: 2 },
  BF16: { blockSize: 1, blockBytes: 2 },
  Q4_0: { blockSize: 32, blockBytes: 18 },
  Q4_1: { blockSize: 32, blockBytes: 20 },
  Q5_0: { blockSize: 32, blockBytes: 22 },
  Q5_1: { blockSize: 32, blockBytes: 24 },
  Q8_0: { blockSize: 32, blockBytes: 34 },
  Q2_K: { blockSize: 256, blockBytes: 84 },
  Q3_K: { blockSize: 256, blockBytes: 110 },
  Q4_K: { blockSize: 256, blockBytes: 144 },
  Q5_K: { blockSize: 256, blockBytes: 176 },
  Q6_K: { blockSize: 256, blockBytes: 210 },
};

/**
 * A `rows` x `cols` weight matrix stored row after row in `data`
 * (`rows * rowBytes(type, cols)` bytes). F32 data is 4-byte aligned and
 * F16/BF16 data 2-byte aligned, so typed-array views on it are possible.
 */
export interface Matrix {
  /** How the weights are encoded. */
  readonly type: TensorType;
  /** Output size (one row per output). */
  readonly rows: number;
  /** Input size. */
  readonly cols: number;
  /** The encoded rows, back to back. */
  readonly data: Uint8Array;
}

/** Bytes one row of `cols` weights takes; throws when `cols` is not a whole number of blocks. */
export function rowBytes(type: TensorType, cols: number): number {
  const { blockSize, blockBytes } = TENSOR_TYPES[type];
  if (cols % blockSize !== 0) {
    throw new RangeError(`a ${type} row of ${cols} values is not a whole number of ${blockSize}-value blocks`);
  }
  return (cols / blockSize) * blockBytes;
}

/** A float32 view on an F32 matrix's data (no copy). */
export function f32View(m: Matrix): Float32Array {
  return new Float32Array(m.data.buffer, m.data.byteOffset, m.rows * m.cols);
}

/** Wraps a Float32Array as an F32 {@link Matrix} (no copy). */
export function f32Matrix(values: Float32Array, rows: number, cols: number): Matrix {
  if (values.length !== rows * cols) throw new RangeError(`expected ${rows * cols} values, got ${values.length}`);
  return {
    type: "F32",
    rows,
    cols,
    data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  };
}
