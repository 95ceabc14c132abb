/** The stdlib-only Python client example drives a real pool end to end. */

import assert from "node:assert/strict";
import { supervisorCommand } from "../lib/pool_client.ts";

Deno.test("scripts/client_example.py drives the pool from Python", async () => {
  const output = await new Deno.Command("python3", {
    args: [
      "scripts/client_example.py",
      "--",
      ...supervisorCommand(["--pool-size", "2", "--log-level", "warning"]).flat(),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.match(stdout, /^sum of squares: 285$/m);
  assert.match(stdout, /^stdout: hello pyodide$/m);
  assert.match(stdout, /^error: error ZeroDivisionError$/m);
  assert.match(stdout, /^timeout: timeout$/m);
  assert.match(stdout, /^parallel: \['0', '1', '4', '9', '16', '25', '36', '49'\]$/m);
  assert.match(stdout, /^rpc error: -32602 code$/m);
  assert.match(stdout, /^health: (ok 2|degraded 1) workers$/m);
  assert.match(stdout, /^exit code: 0$/m);
});
