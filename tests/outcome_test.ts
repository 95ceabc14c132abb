/**
 * Which status wins when more than one thing ended a run (worker/outcome.ts), and the texts of
 * the limit errors: the pure part of what the end-to-end tests in limits_test.ts, crash_test.ts
 * and memory_limits_test.ts see through real workers.
 */

import assert from "node:assert/strict";
import { type CodeEnd, errorEnd, limitError, statusOf } from "../worker/outcome.ts";
import { InterruptReason } from "../worker/messages.ts";

const ok: CodeEnd = { status: "ok", result: "1", error: null };
const interrupted = errorEnd("KeyboardInterrupt", "", "Traceback ...\nKeyboardInterrupt");
const outOfMemory = errorEnd("MemoryError", "", "Traceback ...\nMemoryError");
const seen = (closedFor: number, more: { crashed?: boolean; fsFull?: boolean } = {}) => ({
  closedFor,
  crashed: more.crashed ?? false,
  fsFull: more.fsFull ?? false,
});

Deno.test("a crash wins over every stop", () => {
  const exited: CodeEnd = { status: "exited", exit_code: 3, result: null, error: null };
  for (const reason of Object.values(InterruptReason)) {
    assert.equal(statusOf(exited, seen(reason, { crashed: true })), "exited");
  }
});

Deno.test("the output cap and the memory ceiling win over how the code ended", () => {
  assert.equal(statusOf(ok, seen(InterruptReason.OutputLimit)), "output_limit");
  assert.equal(statusOf(interrupted, seen(InterruptReason.MemoryLimit)), "memory_limit");
});

Deno.test("a timeout or cancel the code outran does not undo its result", () => {
  assert.equal(statusOf(ok, seen(InterruptReason.Timeout)), "ok");
  assert.equal(statusOf(ok, seen(InterruptReason.Cancelled)), "ok");
  assert.equal(statusOf(interrupted, seen(InterruptReason.Timeout)), "timeout");
  assert.equal(statusOf(interrupted, seen(InterruptReason.Cancelled)), "cancelled");
});

Deno.test("a MemoryError is the heap cap; an error after a refused write is the file quota", () => {
  assert.equal(statusOf(outOfMemory, seen(InterruptReason.None)), "memory_limit");
  const full = errorEnd("OSError", "", "OSError: [Errno 51] No space left on device");
  assert.equal(statusOf(full, seen(InterruptReason.None, { fsFull: true })), "fs_limit");
  assert.equal(statusOf(full, seen(InterruptReason.None)), "error");
  assert.equal(statusOf(ok, seen(InterruptReason.None, { fsFull: true })), "ok");
});

Deno.test("a limit's error names the limit and keeps the traceback", () => {
  const limits = { maxOutputBytes: 1000, maxHeapMb: 256, maxRssMb: 2048, maxFsMb: 64 };
  const error = { type: "KeyboardInterrupt", message: "", traceback: "Traceback ...\n" };
  const timeout = limitError({ status: "timeout", error, stoppedBy: "interrupt" }, 300, limits);
  assert.deepEqual(timeout, {
    type: "TimeoutError",
    message: "execution exceeded timeout_ms=300; stopped by interrupt",
    traceback: "Traceback ...\n",
  });
  assert.match(
    limitError({ status: "output_limit", error }, 300, limits)!.message,
    /cap of 1000 bytes/,
  );
  assert.match(
    limitError({ status: "memory_limit", error, stoppedBy: "interrupt" }, 300, limits)!.message,
    /ceiling of 2048 MB; stopped by interrupt/,
  );
  assert.match(
    limitError({ status: "memory_limit", error }, 300, limits)!.message,
    /heap is capped at 256 MB/,
  );
  assert.match(limitError({ status: "fs_limit", error }, 300, limits)!.message, /at 64 MB/);
  assert.equal(limitError({ status: "error", error }, 300, limits), error);
});
