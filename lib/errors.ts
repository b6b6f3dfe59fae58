/**
 * Errors meant for the person at the keyboard. The CLI prints their message as
 * one line on stderr (no stack trace) and exits with status 1.
 *
 * @module
 */

/** A problem with user input (a file, a flag value, a prompt) that the user can fix. */
export class TensorlessError extends Error {
  /**
   * An error with a one-line message.
   *
   * @param message one line that says what is wrong
   */
  constructor(message: string) {
    super(message);
    this.name = "TensorlessError";
  }
}

/** A model, tokenizer or conversation file that cannot be used. The message starts with the file's path. */
export class FileFormatError extends TensorlessError {
  /** The file the problem is in. */
  readonly file: string;

  /**
   * An error whose message is `file: problem`.
   *
   * @param file path of the offending file
   * @param problem what is wrong with it, in a few words
   */
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = "FileFormatError";
    this.file = file;
  }
}
