/**
 * Builds the memory snapshot that workers start from: boots an interpreter exactly as a
 * worker would, snapshots its memory, and writes it to the path given as the only argument
 * (atomically, through a temporary file). Run by the supervisor with write access to that
 * one directory; it runs no user code.
 *
 * @module
 */

import { bootInterpreter } from "./interpreter.ts";

const [target] = Deno.args;
if (!target) {
  console.error("usage: snapshot_builder.ts SNAPSHOT_PATH");
  Deno.exit(2);
}
const { pyodide, runtime } = await bootInterpreter({ forSnapshot: true });
runtime.destroy();
const snapshot = (pyodide as unknown as { makeMemorySnapshot(): Uint8Array }).makeMemorySnapshot();
const temporary = `${target}.${Deno.pid}.tmp`;
await Deno.writeFile(temporary, snapshot);
await Deno.rename(temporary, target);
console.error(`snapshot written: ${target} (${snapshot.length} bytes)`);
