/**
 * The supervisor's side of one worker, against small shell scripts that misbehave in ways a
 * Deno worker cannot be made to: a Deno process cannot close its own stdout (fd 1 stays
 * open until exit), so closing stdout is played by a script.
 */

import assert from "node:assert/strict";
import { WorkerExitedError, WorkerProcess } from "../supervisor/worker_process.ts";

const READY = JSON.stringify({
  jsonrpc: "2.0",
  method: "ready",
  params: { worker_id: "s1", pyodide_version: "-", python_version: "-", load_ms: 0, heap_bytes: 0 },
});

function scripted(script: string, initTimeoutMs = 10_000): WorkerProcess {
  return new WorkerProcess("s1", {
    executable: "bash",
    args: ["-c", script, "--"],
    readable: [],
  }, { initTimeoutMs, maxLineBytes: 1024, requestLimit: 10 });
}

Deno.test("a worker that closes its stdout is killed and its call fails", async () => {
  const worker = scripted(`echo '${READY}'; exec 1>&-; sleep 30`);
  await worker.ready;
  const call = worker.call("execute", { code: "1" }, 10_000);
  await assert.rejects(call, WorkerExitedError);
  const exit = await worker.exited;
  assert.equal(exit.reason, "stdout_closed");
  assert.equal(exit.signal, "SIGKILL");
});

Deno.test("a worker that never becomes ready is killed at the init timeout", async () => {
  const worker = scripted("sleep 30", 300);
  await assert.rejects(worker.ready, WorkerExitedError);
  assert.equal((await worker.exited).reason, "init_timeout");
});

Deno.test("a worker that answers with an error passes it on as an RpcError", async () => {
  const worker = scripted(
    `echo '${READY}'; read line; echo '{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad","data":{"field":"code"}}}'; sleep 5`,
  );
  await worker.ready;
  await assert.rejects(
    worker.call("execute", { code: "" }, 5000),
    (e: Error & { code?: number }) => {
      assert.equal(e.code, -32602);
      return true;
    },
  );
  worker.kill("closed");
  await worker.exited;
});

Deno.test("a worker that writes a message that is not JSON-RPC is killed as a violation", async () => {
  const worker = scripted(`echo '${READY}'; read line; echo '[1, 2]'; sleep 30`);
  await worker.ready;
  await assert.rejects(worker.call("execute", { code: "1" }, 10_000), WorkerExitedError);
  const exit = await worker.exited;
  assert.equal(exit.reason, "protocol_violation");
  assert.equal(exit.signal, "SIGKILL");
});
