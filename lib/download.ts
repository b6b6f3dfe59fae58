/**
 * Downloading large files safely: bytes go to `NAME.partial`, an interrupted
 * transfer resumes from there with an HTTP Range request, and only a file
 * whose size and SHA-256 check out is renamed to `NAME`. A failed or corrupt
 * download never sits under the final name.
 *
 * @module
 */

import { TensorlessError } from "./errors.ts";
import { Sha256 } from "./sha256.ts";

/** A download that failed; the message is one line for the user. */
export class DownloadError extends TensorlessError {
  /**
   * Makes the error.
   *
   * @param message one line saying what failed
   */
  constructor(message: string) {
    super(message);
    this.name = "DownloadError";
  }
}

/** How far a download has got, for progress displays. */
export interface DownloadProgress {
  /** Bytes of the file on disk so far (a resumed part included). */
  bytes: number;
  /** The file's full size, when known. */
  total?: number;
  /** Bytes that were already on disk when this transfer started (not counted in the rate). */
  resumedFrom: number;
  /** Milliseconds since this transfer started. */
  elapsedMs: number;
  /** What is happening: receiving bytes, or hashing a partial file before resuming. */
  phase: "download" | "hash";
}

/** Options of {@link downloadFile}. */
export interface DownloadOptions {
  /** Expected size in bytes; `null`/absent = unknown (not checked). */
  size?: number | null;
  /** Expected SHA-256 as hex; `null`/absent = unknown (not checked). */
  sha256?: string | null;
  /** Called as bytes arrive (often: throttle in the display). */
  onProgress?: (progress: DownloadProgress) => void;
  /** How many times an interrupted transfer is resumed before giving up. Default 3. */
  retries?: number;
  /** Cancels the download; the partial file stays for a later resume. */
  signal?: AbortSignal;
}

/** What {@link downloadFile} did. */
export interface DownloadResult {
  /** Where the file now is. */
  path: string;
  /** Its size. */
  bytes: number;
  /** Its SHA-256 (hex). */
  sha256: string;
  /** Whether the size and hash were checked against expected values. */
  verified: { size: boolean; sha256: boolean };
  /** Bytes reused from an earlier partial download. */
  resumedFrom: number;
}

/** The transfer stopped before the end; the partial file is kept. */
class Interrupted extends Error {}

/**
 * Downloads `url` to `path` via `path + ".partial"`, resuming a partial file
 * left by an earlier attempt, and renames it into place only after the size
 * and SHA-256 are checked.
 *
 * @throws DownloadError with a one-line message on HTTP errors, network
 *   failures, unwritable folders and checksum mismatches.
 */
export async function downloadFile(url: string, path: string, options: DownloadOptions = {}): Promise<DownloadResult> {
  const partial = path + ".partial";
  await ensureFolder(path);
  const retries = options.retries ?? 3;
  for (let attempt = 0;; attempt++) {
    try {
      return await attemptDownload(url, path, partial, options);
    } catch (error) {
      if (error instanceof Interrupted && attempt < retries && !options.signal?.aborted) continue;
      if (error instanceof Interrupted) {
        throw new DownloadError(
          `download of ${url} was interrupted (${error.message}); run the command again to resume`,
        );
      }
      throw error;
    }
  }
}

async function attemptDownload(
  url: string,
  path: string,
  partial: string,
  options: DownloadOptions,
): Promise<DownloadResult> {
  const expectedSize = options.size ?? undefined;
  const expectedHash = options.sha256?.toLowerCase() ?? undefined;
  let offset = await fileSize(partial);
  if (expectedSize !== undefined && offset > expectedSize) {
    await removeIfPresent(partial);
    offset = 0;
  }

  const hash = new Sha256();
  const started = performance.now();
  const report = (bytes: number, total: number | undefined, phase: DownloadProgress["phase"]) =>
    options.onProgress?.({ bytes, total, resumedFrom: offset, elapsedMs: performance.now() - started, phase });

  let response: Response | undefined;
  if (expectedSize === undefined || offset < expectedSize) {
    response = await request(url, offset, options.signal);
    if (offset > 0 && response.status === 416) {
      // Nothing past our partial file: either it is complete or the file changed upstream.
      await response.body?.cancel();
      const total = Number(response.headers.get("content-range")?.match(/\/(\d+)$/)?.[1]);
      response = undefined;
      if (total !== offset) {
        await removeIfPresent(partial);
        offset = 0;
        response = await request(url, 0, options.signal);
      }
    }
    if (response?.ok && offset > 0) {
      const start = Number(response.headers.get("content-range")?.match(/^bytes (\d+)-/)?.[1]);
      if (response.status === 200) {
        offset = 0; // The server ignored the Range and sends the whole file: start over with it.
      } else if (response.status !== 206 || start !== offset) {
        // Some other part than asked for: drop it and fetch the whole file.
        await response.body?.cancel();
        offset = 0;
        response = await request(url, 0, options.signal);
      }
    }
    if (response && !response.ok) {
      await response.body?.cancel();
      throw new DownloadError(`${url}: HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`);
    }
  }

  const length = Number(response?.headers.get("content-length") ?? NaN);
  const total = expectedSize ?? (Number.isFinite(length) ? offset + length : undefined);
  if (response && expectedSize !== undefined && Number.isFinite(length) && offset + length !== expectedSize) {
    await response.body?.cancel();
    throw new DownloadError(`${url}: the server sends ${offset + length} bytes, expected ${expectedSize}`);
  }

  // Resuming: the hash must cover the bytes already on disk.
  if (offset > 0) {
    using existing = await Deno.open(partial, { read: true });
    const buffer = new Uint8Array(1 << 20);
    let done = 0;
    while (done < offset) {
      const n = await existing.read(buffer.subarray(0, Math.min(buffer.length, offset - done)));
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      done += n;
      report(done, offset, "hash");
    }
  }

  let bytes = offset;
  if (response?.body) {
    const file = await openForWrite(partial, offset);
    try {
      await file.truncate(offset);
      const reader = response.body.getReader();
      while (true) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (error) {
          throw new Interrupted(error instanceof Error ? error.message.split("\n")[0] : String(error));
        }
        if (chunk.done) break;
        hash.update(chunk.value);
        await writeAll(file, chunk.value, partial);
        bytes += chunk.value.length;
        report(bytes, total, "download");
      }
    } finally {
      file.close();
    }
  }

  if (expectedSize !== undefined && bytes < expectedSize) {
    throw new Interrupted(`got ${bytes} of ${expectedSize} bytes`);
  }
  if (total !== undefined && bytes < total) throw new Interrupted(`got ${bytes} of ${total} bytes`);
  if (expectedSize !== undefined && bytes !== expectedSize) {
    await removeIfPresent(partial);
    throw new DownloadError(`${url}: got ${bytes} bytes, expected ${expectedSize}; the download was discarded`);
  }
  const digest = hash.hex();
  if (expectedHash !== undefined && digest !== expectedHash) {
    await removeIfPresent(partial);
    throw new DownloadError(
      `${url}: sha256 mismatch (expected ${expectedHash}, got ${digest}); the download was discarded`,
    );
  }
  await Deno.rename(partial, path);
  return {
    path,
    bytes,
    sha256: digest,
    verified: { size: expectedSize !== undefined, sha256: expectedHash !== undefined },
    resumedFrom: offset,
  };
}

/** GET with an optional Range; network failures become one-line errors. */
async function request(url: string, offset: number, signal?: AbortSignal): Promise<Response> {
  try {
    return await fetch(url, { headers: offset > 0 ? { range: `bytes=${offset}-` } : {}, signal });
  } catch (error) {
    if (signal?.aborted) throw new DownloadError(`download of ${url} was cancelled`);
    // Deno's message nests causes: "error sending request for url (...): client error (Connect): dns error: ...".
    const inner = error instanceof Error && error.cause instanceof Error ? error.cause : error;
    const message = inner instanceof Error ? inner.message.split("\n")[0] : "";
    const reason = message.replace(/^error sending request for url \([^)]*\): /, "").replace(
      /^client error \(\w+\): /,
      "",
    );
    const hint = /dns|lookup|resolve/i.test(reason) ? " (no network?)" : "";
    throw new DownloadError(`cannot reach ${hostOf(url)}${hint}: ${reason || "network error"}`);
  }
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

async function ensureFolder(path: string): Promise<void> {
  const folder = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
  try {
    await Deno.mkdir(folder, { recursive: true });
    // mkdir succeeds on an existing read-only folder: try writing to find out.
    const probe = `${folder}/.tensorless-write-test-${crypto.randomUUID()}`;
    await Deno.writeFile(probe, new Uint8Array());
    await Deno.remove(probe);
  } catch (error) {
    throw new DownloadError(`cannot write to ${folder}: ${describeFsError(error)}`);
  }
}

async function openForWrite(path: string, offset: number): Promise<Deno.FsFile> {
  try {
    const file = await Deno.open(path, { write: true, create: true });
    await file.seek(offset, Deno.SeekMode.Start);
    return file;
  } catch (error) {
    throw new DownloadError(`cannot write ${path}: ${describeFsError(error)}`);
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array, path: string): Promise<void> {
  try {
    for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
  } catch (error) {
    throw new DownloadError(`cannot write ${path}: ${describeFsError(error)}`);
  }
}

function describeFsError(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.NotFound) return "no such directory";
  if (error instanceof Deno.errors.AlreadyExists) return "a file is in the way";
  return error instanceof Error ? error.message.split("\n")[0] : String(error);
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch {
    return 0;
  }
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** `1.5 MB`-style sizes (decimal units, as download sites show them). */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${units[unit]}`;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * Shows download progress on a stream (stderr by default): a redrawn bar with
 * bytes, rate and ETA on a terminal; plain lines every few seconds otherwise.
 */
export class ProgressReporter {
  readonly #label: string;
  readonly #stream: { writeSync(bytes: Uint8Array): number; isTerminal(): boolean };
  readonly #terminal: boolean;
  readonly #color: boolean;
  #lastDraw = -Infinity;
  #drawn = false;
  #encoder = new TextEncoder();

  /**
   * Prepares the display; nothing is written until the first update.
   *
   * @param label what is being downloaded (a file name)
   * @param options `stream` to write to; `intervalMs` between plain lines when not a terminal
   */
  constructor(
    label: string,
    readonly options: {
      stream?: { writeSync(bytes: Uint8Array): number; isTerminal(): boolean };
      intervalMs?: number;
    } = {},
  ) {
    this.#label = label;
    this.#stream = options.stream ?? Deno.stderr;
    this.#terminal = this.#stream.isTerminal();
    this.#color = this.#terminal && !noColor();
    // Plain lines start after one interval, so quick downloads log only their final line.
    if (!this.#terminal) this.#lastDraw = performance.now();
  }

  /** Takes a progress report; draws at most every 100 ms (terminal) or `intervalMs` (default 5 s). */
  update(progress: DownloadProgress): void {
    const now = performance.now();
    const interval = this.#terminal ? 100 : this.options.intervalMs ?? 5000;
    if (now - this.#lastDraw < interval) return;
    this.#lastDraw = now;
    const text = this.#describe(progress);
    if (this.#terminal) {
      this.#write(`\r${text}\x1b[K`);
      this.#drawn = true;
    } else {
      this.#write(`${text}\n`);
    }
  }

  /** Ends the display with a final line. */
  finish(message: string): void {
    this.#write(`${this.#terminal && this.#drawn ? "\r\x1b[K" : ""}${this.#label}: ${message}\n`);
  }

  /** Clears a half-drawn bar (before an error message). */
  clear(): void {
    if (this.#terminal && this.#drawn) this.#write("\r\x1b[K");
    this.#drawn = false;
  }

  #describe({ bytes, total, resumedFrom, elapsedMs, phase }: DownloadProgress): string {
    const seconds = elapsedMs / 1000;
    if (phase === "hash") {
      return `${this.#label}: checking the partial download, ${formatBytes(bytes)} of ${formatBytes(total ?? bytes)}`;
    }
    const rate = seconds > 0 ? (bytes - resumedFrom) / seconds : 0;
    const eta = total !== undefined && rate > 0 ? (total - bytes) / rate : NaN;
    const amount = total !== undefined ? `${formatBytes(bytes)} / ${formatBytes(total)}` : formatBytes(bytes);
    const parts = [amount, `${formatBytes(rate)}/s`];
    if (total !== undefined) parts.push(`ETA ${formatDuration(eta)}`);
    if (!this.#terminal) {
      const percent = total ? ` (${Math.floor((100 * bytes) / total)}%)` : "";
      return `${this.#label}: ${amount}${percent}, ${parts.slice(1).join(", ")}`;
    }
    const width = 24;
    const fraction = total ? Math.min(1, bytes / total) : 0;
    const filled = Math.round(fraction * width);
    let bar = "#".repeat(filled) + "-".repeat(width - filled);
    if (this.#color) bar = `\x1b[36m${"#".repeat(filled)}\x1b[2m${"-".repeat(width - filled)}\x1b[0m`;
    const percent = total ? `${String(Math.floor(fraction * 100)).padStart(3)}%` : "";
    return `${this.#label} [${bar}] ${percent} ${parts.join("  ")}`;
  }

  #write(text: string): void {
    const bytes = this.#encoder.encode(text);
    for (let done = 0; done < bytes.length;) done += this.#stream.writeSync(bytes.subarray(done));
  }
}

/** Whether NO_COLOR is set (unreadable environment counts as unset). */
function noColor(): boolean {
  try {
    return !!Deno.env.get("NO_COLOR");
  } catch {
    return false;
  }
}
