/**
 * Fault injection for the tests: with `--failpoints` (the supervisor passes it when
 * PYODIDE_POOL_FAILPOINTS=1), an `execute` whose code starts with `#failpoint:` makes the
 * worker misbehave as a broken worker would, so that the supervisor's handling of it can be
 * tested through real processes. Without the flag this module does nothing.
 *
 * @module
 */

import type { LineWriter } from "../lib/framing.ts";

const PREFIX = "#failpoint:";

/**
 * Acts on a failpoint named in `code`, if any:
 * - `garbage`: writes a line that is not JSON instead of the answer;
 * - `oversized:<bytes>`: writes a line of that many bytes;
 * - `exit:<code>`: exits with that code;
 * - `hang`: never answers.
 *
 * `fatal_after_answer` is the Python thread's (see `failsAfterAnswer`).
 */
export async function triggerFailpoint(code: string, out: LineWriter): Promise<void> {
  if (!code.startsWith(PREFIX)) return;
  const [name, argument] = code.slice(PREFIX.length).split("\n")[0].trim().split(":");
  switch (name) {
    case "garbage":
      out.write("this is not JSON");
      break;
    case "oversized":
      out.write("x".repeat(Number(argument)));
      break;
    case "exit":
      await out.flushed();
      Deno.exit(Number(argument));
      break;
    case "hang":
      break;
    default:
      return;
  }
  // The answer never comes: the caller waits for the supervisor to act.
  await new Promise(() => {});
}

/**
 * Whether the Python thread, given `--failpoints`, is to fail as a broken interpreter does
 * (a fatal error) right after it has sent the answer of a run of `code`.
 */
export function failsAfterAnswer(code: string): boolean {
  return code.startsWith(`${PREFIX}fatal_after_answer`);
}
