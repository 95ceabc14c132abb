/**
 * A pyodide-pool worker: one long-running process that loads Pyodide once and serves
 * newline-delimited JSON-RPC 2.0 on stdin/stdout: the methods, notifications and flags of
 * lib/worker_protocol.ts. It announces itself with a `ready` notification and exits when stdin
 * closes, so it never outlives the supervisor that spawned it. Python runs in the Python thread
 * (a Web Worker, worker/python_thread.ts); this main thread keeps answering while it runs and
 * enforces the limits.
 *
 * @module
 */

import type { ExecuteResult, JsonRpcId } from "./lib/protocol.ts";
import {
  parseWorkerFlags,
  type RecycleReason,
  WorkerFlagError,
  type WorkerFlags,
  workerNotification,
  type WorkerNotificationMethod,
  type WorkerNotifications,
  type WorkerResult,
} from "./lib/worker_protocol.ts";
import { limitError, type Limits } from "./worker/outcome.ts";
import { PythonHost } from "./worker/python_host.ts";
import type { SettledMessage } from "./worker/messages.ts";

let flags: WorkerFlags;
try {
  flags = parseWorkerFlags(Deno.args);
} catch (error) {
  if (!(error instanceof WorkerFlagError)) throw error;
  // Before logging is set up (its level is a flag): a plain line on stderr.
  console.error(`pyodide-pool worker: ${error.message}`);
  Deno.exit(2);
}
const { workerId, maxOutputBytes, maxFileBytes, maxRecoveriesPerMinute } = flags;
const MB = 1024 * 1024;
const maxHeapBytes = flags.maxHeapMb * MB;
const recycleHeapBytes = flags.recycleHeapMb * MB;
const maxRssBytes = flags.maxRssMb * MB;
/**
 * Returned files travel as base64 (a third larger) in the answer's one line, which the
 * supervisor passes on to its client only within the client's line limit: together they may
 * take half of it.
 */
const maxReturnedFileBytes = Math.floor(flags.maxAnswerBytes * 3 / 8);
const startedAt = performance.now();
/** When the interpreter was last recovered in place from a crash, within the last minute. */
let recoveries: number[] = [];
let requests = 0;
let recycleAsked = false;
/** Bytes parked sessions held after the last run. */
let parkedBytes = 0;
/** Bytes of files the file system held beyond the pristine interpreter's, after the last run. */
let fsBytes = 0;
/** Until the handler below is in place, a fatal error is kept for it. */
let earlyFatal: string | undefined;
let onFatal = (message: string) => void (earlyFatal ??= message);

// The interpreter starts loading in its thread first; the modules below load meanwhile
// (about 30 ms, mostly json-rpc-2.0, which is CommonJS, and LogTape) instead of before it.
const python = new PythonHost({
  maxOutputBytes,
  maxFileBytes,
  maxReturnedFileBytes,
  maxHeapBytes,
  maxFsBytes: flags.maxFsMb * MB,
  maxRssBytes,
  snapshotPath: flags.snapshot,
  lockFileUrl: flags.lockFileUrl,
  allowNetwork: flags.allowNetwork,
  failpoints: flags.failpoints,
  interruptGraceMs: flags.interruptGraceMs,
  isolation: flags.isolation,
  maxParkedBytes: flags.maxParkedMb * MB,
  // In base64, 5/6 of the line, the rest for the pages' offsets and the JSON around them.
  maxExportBytes: Math.floor(flags.maxLineBytes * 5 / 8),
  onFatal: (message) => onFatal(message),
  // Runs come only once the server below is set up, and so does this.
  onInterpreterReplaced: (reason) => log.warn("interpreter replaced: {reason}", { reason }),
  // Written before the call's answer, so that the supervisor forgets them before it moves the
  // worker's sessions.
  onSessionsLost: (lost) => notifyLost(lost),
});

const [
  { ErrorCode, invalidParams, RpcError },
  { blockingWriter, chunksOf, LineWriter },
  { configureLogging, logger },
  { parseExecuteParams },
  { RpcServer },
  { triggerFailpoint },
] = await Promise.all([
  import("./lib/errors.ts"),
  import("./lib/framing.ts"),
  import("./lib/logging.ts"),
  import("./lib/protocol.ts"),
  import("./lib/rpc_server.ts"),
  import("./worker/failpoints.ts"),
]);
await configureLogging(flags.logLevel, flags.logFormat);
const log = logger("worker", workerId);
const out = new LineWriter(blockingWriter(Deno.stdout), () => Deno.exit(0));

onFatal = (message) => {
  // A broken interpreter cannot be trusted with the next request: the supervisor sees the
  // exit, fails only the request in flight, and starts a replacement.
  log.error("fatal: {message}", { message });
  // An answer already given (the run that ended before the failure) goes out first. Its `done`
  // may arrive together with the failure, and the answer is then still some promise steps from
  // `out`: those all run before a timer does.
  const waited = new Promise((resolve) => setTimeout(resolve, 1000));
  setTimeout(() => Promise.race([out.flushed(), waited]).finally(() => Deno.exit(70)));
};
if (earlyFatal !== undefined) onFatal(earlyFatal);

/** Writes one of the notifications of the worker's contract (lib/worker_protocol.ts). */
function notify<M extends WorkerNotificationMethod>(
  method: M,
  params: WorkerNotifications[M],
): void {
  out.write(JSON.stringify(workerNotification(method, params)));
}

/** Asks the supervisor to replace this process, once (the reasons: `RecycleReason`). */
function askToBeRecycled(reason: RecycleReason, rssBytes = Deno.memoryUsage().rss): void {
  if (recycleAsked) return;
  recycleAsked = true;
  notify("recycle", {
    reason,
    heap_bytes: python.heapBytes,
    heap_limit_bytes: recycleHeapBytes,
    rss_bytes: rssBytes,
    rss_limit_bytes: maxRssBytes,
  });
}

/**
 * Tells the supervisor that the worker is done with request `id`'s after-work (its reset, or a
 * park or resume before it), what that cost, and which sessions it lost. Written after the
 * answer: the answer's own write is a few promise steps away, all run before a timer.
 */
function settled(id: JsonRpcId, settled: SettledMessage): void {
  notifyLost(settled.lost);
  if (settled.overgrown) askToBeRecycled("table_grown");
  if (settled.recovered) {
    const now = performance.now();
    recoveries = [...recoveries.filter((at) => now - at < 60_000), now];
    if (recoveries.length > maxRecoveriesPerMinute) askToBeRecycled("recoveries");
  }
  parkedBytes = settled.parkedBytes;
  fsBytes = settled.fsBytes;
  setTimeout(() => {
    // Once the request is answered (its line built: returned files in base64 took 660 MB)
    // and its after-work done: the next request, maybe another tenant's, then runs here
    // until the replacement is ready, never cut short.
    const rssBytes = Deno.memoryUsage().rss;
    if (rssBytes > maxRssBytes) askToBeRecycled("rss_grown", rssBytes);
    notify("idle", {
      id,
      reset: settled.reset,
      reset_ms: settled.resetMs,
      restore_ms: settled.restoreMs,
      park_ms: settled.parkMs,
      resume_ms: settled.resumeMs,
      resumed_bytes: settled.resumedBytes,
      parked_bytes: settled.parkedBytes,
      recovered: settled.recovered,
      heap_bytes: python.heapBytes,
      rss_bytes: rssBytes,
      fs_bytes: settled.fsBytes,
    });
  });
}

/** Tells the supervisor which sessions this worker dropped, by reason. */
function notifyLost(lost: SettledMessage["lost"]): void {
  for (const [reason, sessions] of Map.groupBy(lost, (l) => l.reason)) {
    notify("sessions_lost", { session_ids: sessions.map((l) => l.sessionId), reason });
  }
}

function sessionIdOf(params: unknown): string {
  const sessionId = (params as { session_id?: unknown } | undefined)?.session_id;
  if (typeof sessionId !== "string") throw invalidParams("session_id", "must be a string");
  return sessionId;
}

/** The limits that the errors for a limit name (worker/outcome.ts). */
const limits: Limits = {
  maxOutputBytes,
  maxHeapMb: flags.maxHeapMb,
  maxRssMb: flags.maxRssMb,
  maxFsMb: flags.maxFsMb,
};

const server = new RpcServer({
  execute: async (params, { id }) => {
    const request = parseExecuteParams(params);
    if (flags.failpoints) await triggerFailpoint(request.code, out);
    const timeoutMs = request.timeout_ms ?? flags.defaultTimeoutMs;
    const started = performance.now();
    const report = await python.run({
      owner: { tenant: request.tenant, sessionId: request.session_id },
      onSettled: (message) => settled(id, message),
      request: {
        code: request.code,
        stdin: request.stdin,
        session_id: request.session_id,
        session_bytes: request.session_bytes,
        return_session: request.return_session,
      },
      files: request.files ?? [],
      packages: request.packages ?? [],
      timeoutMs,
      onOutput: request.stream
        ? (stream, text) => notify("output", { id, stream, text })
        : undefined,
    });
    requests++;
    if (python.tainted) askToBeRecycled("tainted");
    else if (report.stoppedBy === "interpreter_restart") askToBeRecycled("interpreter_restart");
    else if (python.heapBytes > recycleHeapBytes) askToBeRecycled("heap_grown");
    if (report.status === "session_lost") {
      throw new RpcError(ErrorCode.SessionNotFound, report.error!.message, {
        session_id: request.session_id,
        reason: report.error!.message,
        worker_id: workerId,
        hint: "its state is gone; start again, or keep state client-side with return_session",
      });
    }
    if (report.status === "session_refused") throw invalidParams("tenant", report.error!.message);
    if (report.status === "cancelled") {
      throw new RpcError(ErrorCode.Cancelled, "cancelled by the client while running", {
        worker_id: workerId,
        stopped_by: report.stoppedBy,
        stdout: report.stdout,
      });
    }
    const { stoppedBy: _, ...outcome } = report;
    const result: ExecuteResult = {
      ...outcome,
      status: report.status,
      error: limitError(report, timeoutMs, limits),
      duration_ms: performance.now() - started,
      worker_id: workerId,
    };
    return result;
  },
  drop_session: async (params): Promise<WorkerResult<"drop_session">> => ({
    dropped: JSON.parse(await python.call("drop_session", sessionIdOf(params))),
  }),
  renew: async (): Promise<WorkerResult<"renew">> => ({
    restore_ms: Number(await python.call("renew")),
  }),
  export_sessions: async (): Promise<WorkerResult<"export_sessions">> => ({
    sessions: JSON.parse(await python.call("export_sessions")),
  }),
  import_sessions: async (params): Promise<WorkerResult<"import_sessions">> => ({
    failed: JSON.parse(
      await python.call(
        "import_sessions",
        JSON.stringify((params as { sessions: unknown }).sessions),
      ),
    ),
  }),
  cancel: (): WorkerResult<"cancel"> => ({ cancelled: python.cancel() }),
  ping: (): WorkerResult<"ping"> => ({
    worker_id: workerId,
    busy: python.busy,
    uptime_ms: performance.now() - startedAt,
  }),
  stats: (): WorkerResult<"stats"> => ({
    worker_id: workerId,
    requests,
    interpreter_restarts: python.restarts,
    heap_bytes: python.heapBytes,
    parked_bytes: parkedBytes,
    fs_bytes: fsBytes,
    rss_bytes: Deno.memoryUsage().rss,
    uptime_ms: performance.now() - startedAt,
  }),
  shutdown: (): WorkerResult<"shutdown"> => {
    setTimeout(async () => {
      await out.flushed();
      Deno.exit(0);
    });
    return { worker_id: workerId, stopping: true };
  },
}, {
  maxLineBytes: flags.maxLineBytes,
  // The supervisor reads our lines with the same limit, and replaces a worker that passes it.
  maxAnswerBytes: flags.maxLineBytes,
  answerLimitHint: "that is the line between a worker and the supervisor (four times " +
    "--max-line-bytes, at least 256 MiB)",
  onUnexpectedError: (method, error) =>
    log.error("unexpected error in {method}: {error}", { method, error: String(error) }),
});

// Serve at once: a request waits for the interpreter, and stdin closing during a slow start
// still ends the process.
const serving = server.serve(chunksOf(Deno.stdin), out);
python.ready.then((ready) => {
  notify("ready", {
    worker_id: workerId,
    pyodide_version: ready.pyodideVersion,
    python_version: ready.pythonVersion,
    load_ms: Math.round(ready.loadMs),
    restored_from_snapshot: ready.restored,
    heap_bytes: ready.heapBytes,
    rss_bytes: Deno.memoryUsage().rss,
    fs_bytes: ready.fsBytes,
  });
}, (error) => {
  log.error("could not start Pyodide: {error}", { error: String(error) });
  Deno.exit(70);
});

await serving;
// stdin closed: the supervisor is gone or done with us. A request still running is abandoned:
// no one is left to read its answer, and a worker must never outlive its supervisor.
python.terminate();
await out.flushed();
Deno.exit(0);
