/**
 * The Python client package (clients/python) against a real pool: its unittest suite, and
 * the example script that uses it.
 */

import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const env = {
  PYTHONPATH: `${ROOT}clients/python`,
  // The Deno binary itself, not a launcher, so that the tests may kill the supervisor.
  PYODIDE_POOL_DENO: Deno.execPath(),
  PYTHONDONTWRITEBYTECODE: "1",
};

async function python(args: string[]): Promise<{ code: number; stdout: string; output: string }> {
  const result = await new Deno.Command("python3", {
    args,
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  const stdout = text.decode(result.stdout);
  return { code: result.code, stdout, output: stdout + text.decode(result.stderr) };
}

Deno.test("clients/python: the unittest suite passes against a real pool", async () => {
  const { code, output } = await python([
    "-W",
    "error::ResourceWarning",
    "-m",
    "unittest",
    "discover",
    "-s",
    "clients/python/tests",
    "-t",
    "clients/python",
  ]);
  assert.equal(code, 0, output);
  assert.match(output, /^OK$/m);
});

Deno.test("scripts/client_example.py drives the pool through the package", async () => {
  const { code, stdout, output } = await python(["scripts/client_example.py"]);
  assert.equal(code, 0, output);
  assert.match(stdout, /^sum of squares: 285$/m);
  assert.match(stdout, /^stdout: hello pyodide$/m);
  assert.match(stdout, /^error: error ZeroDivisionError$/m);
  assert.match(stdout, /^timeout: timeout$/m);
  assert.match(stdout, /^streamed: \['0', '1', '2'\]$/m);
  assert.match(stdout, /^session: 20$/m);
  assert.match(stdout, /^parallel: \['0', '1', '4', '9', '16', '25', '36', '49'\]$/m);
  assert.match(stdout, /^asyncio: \['0', '10', '20', '30'\]$/m);
  assert.match(stdout, /^rpc error: -32602 timeout_ms$/m);
  assert.match(stdout, /^health: ok 2 workers$/m);
});
