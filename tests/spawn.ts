/** Running programs from tests: the real CLI, `deno install`, scripts. */

/** What a finished program left behind. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link run}. */
export interface RunOptions {
  /** Extra environment variables (NO_COLOR=1 is always set). */
  env?: Record<string, string>;
  /** Text for standard input; none (closed) when omitted. */
  stdin?: string;
}

/** The CLI's entry point. */
export const CLI: string = new URL("../cli.ts", import.meta.url).pathname;

/** Runs `command args...` to completion. */
export async function run(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const child = new Deno.Command(command, {
    args,
    env: { NO_COLOR: "1", ...options.env },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

/** Runs `tensorless args...` (`deno run -A cli.ts`). */
export function runCli(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return run(Deno.execPath(), ["run", "-A", CLI, ...args], options);
}
