/**
 * pyodide-pool side by side with its peers (issue 16): mayflower's `worker_server.ts` (one
 * Pyodide process on direct stdio) and pydantic's mcp-run-python (MCP on stdio). Every system
 * is started by its command line, the peers from checkouts in `--peers DIR`; no peer code is
 * here. Rounds alternate the systems in a random order, so that the host's drift from minute
 * to minute falls on all of them alike. Each figure is printed as pyodide-pool / peer, beside
 * the target.
 *
 *     deno task bench:peers                          # table on stdout, progress on stderr
 *     deno task bench:peers --only latency,mcp -n 50 --rounds 2
 *     deno task bench:peers --json > report.json
 *     deno task bench:peers --render report.json      # that report's table again
 *
 * Sections (`--only`, comma-separated; all by default):
 * - `latency`: sequential `x = 1`, N per round, after 20 warm-ups; mayflower on its own stdio
 *   against the supervisor with 1 worker (`--isolation none` and the default), both driven by
 *   the same newline JSON-RPC function (`LineProcess.send`).
 * - `mcp`: the same through the MCP SDK's Client and StdioClientTransport: `run_python` of
 *   pyodide-pool `--mcp` (1 worker, both isolations) against mcp-run-python's `run_python_code`.
 * - `throughput`: `--burst` requests written at once, all in flight: the supervisor with 2
 *   workers, recycling on (the default `--worker-request-limit`) and off, against one mayflower
 *   process. `--max-queue` is raised to the burst, or the default queue of 100 would refuse
 *   most of it.
 * - `cold`: spawn to the answer of a first `x = 1`, a fresh process each time: the README's
 *   quick start (its first command, read from README.md), `npx --yes deno@2.9.6 task start`,
 *   `deno task start`, the `deno run` command they stand for, and mayflower's command.
 * - `memory`: in the same starts, after 20 warm-ups and a second of idling: VmRSS of each
 *   worker, of the supervisor, of every other process the start command leaves alive
 *   (wrappers), and of the idle mayflower process.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
// The SDK's export map gives "*.js" imports no types in Deno; the hints name ones that resolve.
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/stdio"
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { supervisorCommand } from "../clients/typescript/client.ts";
import type { HealthReport, StatsReport } from "../lib/protocol.ts";
import { procStatus, statusBytes } from "../tests/helpers/processes.ts";

const SECTIONS = ["latency", "mcp", "throughput", "cold", "memory"] as const;
type Section = typeof SECTIONS[number];

const { values: options } = parseArgs({
  args: Deno.args,
  options: {
    peers: { type: "string" },
    n: { type: "string", short: "n", default: "1000" },
    rounds: { type: "string", default: "3" },
    warmup: { type: "string", default: "20" },
    burst: { type: "string", default: "5000" },
    "cold-runs": { type: "string", default: "3" },
    only: { type: "string", default: SECTIONS.join(",") },
    json: { type: "boolean", default: false },
    /** Print the table of a report saved with --json, measuring nothing. */
    render: { type: "string" },
  },
});

const N = Number(options.n);
const ROUNDS = Number(options.rounds);
const WARMUP = Number(options.warmup);
const BURST = Number(options.burst);
const COLD_RUNS = Number(options["cold-runs"]);
const only = new Set(options.only.split(",").map((s) => s.trim()).filter(Boolean));
for (const name of only) {
  if (!SECTIONS.includes(name as Section)) {
    throw new Error(`--only: unknown section ${name}; sections: ${SECTIONS.join(", ")}`);
  }
}
const runs = (section: Section) => only.has(section);

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/**
 * The Deno binary that runs this script, for every Deno child. Not "deno" from the PATH: under
 * `deno task` that is node_modules/.bin/deno, npm's Node.js shim, which would put a Node
 * process in front of each child.
 */
const DENO = Deno.execPath();
if (Deno.permissions.querySync({ name: "run", command: DENO }).state !== "granted") {
  throw new Error(
    `run ${DENO} is not allowed: add it to --allow-run (see deno.json's bench:peers)`,
  );
}
/** The README's quick start (the first line of its first `sh` block), as a user types it. */
const README_START = (() => {
  const readme = Deno.readTextFileSync(`${ROOT}/README.md`);
  const line = readme.split("## Quick start")[1]?.split("```sh\n")[1]?.split("\n")[0];
  if (!line) throw new Error("README.md: no sh block under its Quick start");
  const [command, ...args] = line.trim().split(/\s+/);
  // A path is the project's (scripts/start), whatever this script's working directory.
  return [command.includes("/") ? join(ROOT, command) : command, ...args];
})();
/** The same through npx and `deno task`, as the README's quick start said before scripts/start. */
const NPX_TASK_START = ["npx", "--yes", "deno@2.9.6", "task", "start"];
const progress = (message: string) => console.error(`bench:peers: ${message}`);

// ---------------------------------------------------------------------------------------------
// The peers, found by their command lines' files in --peers DIR.

interface Peer {
  cwd: string;
  command: string;
  args: string[];
}

const peersDir = options.peers;
const notes: string[] = [];

function findPeer(name: string, cwd: string, files: string[], args: string[]): Peer | undefined {
  if (peersDir === undefined) {
    notes.push(`${name}: no --peers DIR given; its rows are skipped`);
    return undefined;
  }
  const dir = join(peersDir, cwd);
  const missing = files.filter((f) => !existsSync(join(dir, f)));
  if (missing.length > 0) {
    notes.push(`${name}: ${missing.map((f) => join(dir, f)).join(", ")} missing; rows skipped`);
    return undefined;
  }
  return { cwd: dir, command: DENO, args };
}

const mayflower = findPeer(
  "mayflower",
  "mayflower_sandbox/src/mayflower_sandbox",
  ["worker_server.ts"],
  ["run", "--allow-net", "--allow-read", "--allow-write", "worker_server.ts"],
);
const mcpRunPython = findPeer(
  "mcp-run-python",
  "mcp-run-python/mcp_run_python/deno",
  // prepareEnvCode.ts is written by the peer's build/build.py.
  ["src/main.ts", "src/prepareEnvCode.ts"],
  [
    "run",
    "--allow-net",
    "--allow-read=./node_modules",
    "--node-modules-dir=auto",
    "src/main.ts",
    "stdio",
    "--return-mode=json",
  ],
);

// ---------------------------------------------------------------------------------------------
// Figures.

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 50);
}

interface LatencyFigures {
  count: number;
  p50_ms: number;
  p99_ms: number;
  mean_ms: number;
  max_ms: number;
  /** p50 of each round, to see the spread between rounds. */
  round_p50_ms: number[];
}

function latencyFigures(rounds: number[][]): LatencyFigures {
  const all = rounds.flat().sort((a, b) => a - b);
  return {
    count: all.length,
    p50_ms: percentile(all, 50),
    p99_ms: percentile(all, 99),
    mean_ms: all.reduce((a, b) => a + b, 0) / all.length,
    max_ms: all[all.length - 1],
    round_p50_ms: rounds.map((r) => percentile([...r].sort((a, b) => a - b), 50)),
  };
}

function shuffled<T>(items: T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function loadavg(): string {
  // The figures of /proc/loadavg, which Deno reads only with --allow-all.
  return Deno.loadavg().map((n) => n.toFixed(2)).join(" ");
}

// ---------------------------------------------------------------------------------------------
// Newline JSON-RPC over a child's stdin and stdout: the one client path for mayflower and the
// supervisor alike.

interface Message {
  id?: number | string | null;
  result?: Record<string, unknown>;
  error?: { code: number; message: string };
}

interface Pending {
  resolve: (message: Message) => void;
  reject: (error: Error) => void;
}

class LineProcess {
  readonly child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #encoder = new TextEncoder();
  /** The last few KB of stderr, for error messages. */
  stderrTail = "";
  readonly stdoutClosed: Promise<void>;

  constructor(readonly name: string, command: string, args: string[], cwd: string) {
    this.child = new Deno.Command(command, {
      args,
      cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    this.stdoutClosed = this.#read();
    this.#drainStderr();
  }

  /**
   * Writes the requests as lines in one write; each promise resolves with the line that
   * answers its request (matched by id).
   */
  send(requests: { method: string; params?: unknown }[]): Promise<Message>[] {
    const lines: string[] = [];
    const answers = requests.map(({ method, params }) => {
      const id = this.#nextId++;
      lines.push(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n");
      return new Promise<Message>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    });
    this.#writer.write(this.#encoder.encode(lines.join(""))).catch((error) => {
      for (const p of this.#pending.values()) p.reject(error);
    });
    return answers;
  }

  /** One request: writes its line and awaits the matching line. */
  request(method: string, params?: unknown): Promise<Message> {
    return this.send([{ method, params }])[0];
  }

  async #read(): Promise<void> {
    let buffer = "";
    try {
      for await (const chunk of this.child.stdout.pipeThrough(new TextDecoderStream())) {
        const lines = (buffer + chunk).split("\n");
        buffer = lines.pop()!;
        for (const line of lines) {
          if (!line.trim()) continue;
          const message = JSON.parse(line) as Message;
          const pending = this.#pending.get(message.id as number);
          if (!pending) continue;
          this.#pending.delete(message.id as number);
          pending.resolve(message);
        }
      }
    } finally {
      const error = new Error(`${this.name} closed its stdout; stderr:\n${this.stderrTail}`);
      for (const p of this.#pending.values()) p.reject(error);
      this.#pending.clear();
    }
  }

  async #drainStderr(): Promise<void> {
    for await (const chunk of this.child.stderr.pipeThrough(new TextDecoderStream())) {
      this.stderrTail = (this.stderrTail + chunk).slice(-4096);
    }
  }

  /** Closes stdin and waits for the exit; past `timeoutMs`, kills the process tree. */
  async close(timeoutMs = 30_000): Promise<void> {
    await this.#writer.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.child.status.then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (!exited) {
      progress(`${this.name} did not exit ${timeoutMs} ms after stdin closed; killing its tree`);
      killTree(this.child.pid);
      await this.child.status;
    }
    await this.stdoutClosed.catch(() => {});
  }
}

/** How one system's `x = 1` is asked for, and what a good answer is. */
interface RpcSystem {
  name: string;
  /** What the table calls it. */
  label: string;
  spawn: () => LineProcess;
  execute: { method: string; params: unknown };
  ok: (message: Message) => boolean;
  /** A pyodide-pool supervisor, which answers `health` and `stats`. */
  pool: boolean;
}

function mayflowerSystem(peer: Peer): RpcSystem {
  return {
    name: "mayflower",
    label: "mayflower worker_server.ts (direct stdio)",
    spawn: () => new LineProcess("mayflower", peer.command, peer.args, peer.cwd),
    execute: {
      method: "execute",
      params: { code: "x = 1", thread_id: "t", timeout_ms: 5000 },
    },
    ok: (m) => m.result?.success === true,
    pool: false,
  };
}

function poolSystem(name: string, label: string, args: string[]): RpcSystem {
  const [command, commandArgs] = supervisorCommand(args);
  return {
    name,
    label,
    spawn: () => new LineProcess(name, command, commandArgs, ROOT),
    execute: { method: "execute", params: { code: "x = 1" } },
    ok: (m) => m.result?.status === "ok",
    pool: true,
  };
}

async function executeOnce(system: RpcSystem, process: LineProcess): Promise<void> {
  const answer = await process.request(system.execute.method, system.execute.params);
  if (!system.ok(answer)) throw new Error(`${system.name}: bad answer ${JSON.stringify(answer)}`);
}

/** Spawns a system and waits for its first answer and the warm-ups. */
async function startWarm(system: RpcSystem): Promise<LineProcess> {
  progress(`starting ${system.name}`);
  const process = system.spawn();
  for (let i = 0; i < 1 + WARMUP; i++) await executeOnce(system, process);
  return process;
}

async function sequential(system: RpcSystem, process: LineProcess, count: number) {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const answer = await process.request(system.execute.method, system.execute.params);
    times.push(performance.now() - t0);
    if (!system.ok(answer)) throw new Error(`${system.name}: bad answer ${JSON.stringify(answer)}`);
  }
  return times;
}

/** `count` requests written at once; requests per second until the last answer. */
async function burst(system: RpcSystem, process: LineProcess, count: number): Promise<number> {
  const requests = Array.from({ length: count }, () => system.execute);
  const t0 = performance.now();
  const answers = await Promise.all(process.send(requests));
  const seconds = (performance.now() - t0) / 1000;
  const bad = answers.filter((a) => !system.ok(a));
  if (bad.length > 0) {
    throw new Error(
      `${system.name}: ${bad.length} of ${count} failed, e.g. ${JSON.stringify(bad[0])}`,
    );
  }
  return count / seconds;
}

/** Worker replacements by reason, from a supervisor's `stats`. */
async function restarts(process: LineProcess): Promise<Record<string, number>> {
  const answer = await process.request("stats");
  return (answer.result as unknown as StatsReport | undefined)?.restarts ?? {};
}

/** Interleaved rounds over started systems: each round runs `measure` on each, shuffled. */
async function interleaved<T>(
  section: string,
  systems: RpcSystem[],
  measure: (system: RpcSystem, process: LineProcess) => Promise<T>,
) {
  const processes = new Map<string, LineProcess>();
  const results = new Map<string, T[]>(systems.map((s) => [s.name, []]));
  const orders: string[][] = [];
  const replaced = new Map<string, Record<string, number>>();
  try {
    for (const system of systems) processes.set(system.name, await startWarm(system));
    for (let round = 0; round < ROUNDS; round++) {
      const order = shuffled(systems);
      orders.push(order.map((s) => s.name));
      progress(`${section}, round ${round + 1} of ${ROUNDS}: ${orders.at(-1)!.join(", ")}`);
      for (const system of order) {
        results.get(system.name)!.push(await measure(system, processes.get(system.name)!));
      }
    }
    for (const system of systems) {
      if (system.pool) replaced.set(system.name, await restarts(processes.get(system.name)!));
    }
  } finally {
    for (const process of processes.values()) await process.close();
  }
  return { results, orders, replaced };
}

// ---------------------------------------------------------------------------------------------
// Processes: the tree a command leaves alive, and resident memory.

/** The process table: pid -> parent pid. */
function processTable(): Map<number, number> {
  const { stdout } = new Deno.Command("ps", { args: ["-e", "-o", "pid=,ppid="] }).outputSync();
  const table = new Map<number, number>();
  for (const line of new TextDecoder().decode(stdout).split("\n")) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number);
    if (pid) table.set(pid, ppid);
  }
  return table;
}

/** `root` and every process below it. */
function descendants(root: number, table = processTable()): number[] {
  const found = [root];
  for (let i = 0; i < found.length; i++) {
    for (const [pid, ppid] of table) if (ppid === found[i]) found.push(pid);
  }
  return found;
}

/** Kills a process this script started and everything below it. */
function killTree(root: number): void {
  for (const pid of descendants(root).reverse()) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Gone already.
    }
  }
}

interface ProcessMemory {
  pid: number;
  name: string;
  rss_mb: number;
  /** The start of its command line. */
  command: string;
}

/** VmRSS, name and command line of a process, from /proc (through `cat`, as procStatus says). */
function processMemory(pid: number): ProcessMemory {
  const status = procStatus(pid);
  const cmdline = new Deno.Command("cat", { args: [`/proc/${pid}/cmdline`] }).outputSync();
  return {
    pid,
    name: /^Name:\s+(.*)$/m.exec(status)?.[1] ?? "?",
    rss_mb: statusBytes(status, "VmRSS") / (1 << 20),
    command: new TextDecoder().decode(cmdline.stdout).replaceAll("\0", " ").trim().slice(0, 160),
  };
}

// ---------------------------------------------------------------------------------------------
// Sections.

const poolArgs = (isolation: "none" | "default", ...more: string[]) => [
  ...(isolation === "none" ? ["--isolation", "none"] : []),
  ...more,
];

async function latencySection() {
  const systems: RpcSystem[] = [
    ...(mayflower ? [mayflowerSystem(mayflower)] : []),
    poolSystem(
      "pool-none",
      "pyodide-pool, 1 worker, --isolation none",
      poolArgs("none", "--pool-size", "1"),
    ),
    poolSystem(
      "pool-default",
      "pyodide-pool, 1 worker, default isolation",
      poolArgs("default", "--pool-size", "1"),
    ),
  ];
  const { results, orders, replaced } = await interleaved(
    "latency",
    systems,
    (system, process) => sequential(system, process, N),
  );
  return {
    systems: Object.fromEntries(systems.map((s) => [s.name, {
      label: s.label,
      ...latencyFigures(results.get(s.name)!),
      workers_replaced: replaced.get(s.name),
    }])),
    orders,
  };
}

interface McpSystem {
  name: string;
  label: string;
  command: string;
  args: string[];
  cwd: string;
  tool: string;
  arguments: Record<string, unknown>;
  ok: (text: string) => boolean;
}

async function mcpSection() {
  const pool = (isolation: "none" | "default"): McpSystem => {
    const [command, args] = supervisorCommand(
      poolArgs(isolation, "--mcp", "--pool-size", "1"),
    );
    return {
      name: `pool-${isolation}`,
      label: `pyodide-pool --mcp, 1 worker, ${
        isolation === "none" ? "--isolation none" : "default isolation"
      }`,
      command,
      args,
      cwd: ROOT,
      tool: "run_python",
      arguments: { code: "x = 1" },
      ok: (text) => text === "status: ok",
    };
  };
  const systems: McpSystem[] = [
    ...(mcpRunPython
      ? [{
        name: "mcp-run-python",
        label: "mcp-run-python (stdio, --return-mode=json)",
        ...mcpRunPython,
        tool: "run_python_code",
        arguments: { python_code: "x = 1" },
        ok: (text: string) => text.includes('"status":"success"'),
      }]
      : []),
    pool("none"),
    pool("default"),
  ];
  const clients = new Map<string, Client>();
  const call = async (system: McpSystem) => {
    const r = await clients.get(system.name)!.callTool({
      name: system.tool,
      arguments: system.arguments,
    }) as { isError?: boolean; content: { type: string; text?: string }[] };
    const text = r.content?.[0]?.text ?? "";
    if (r.isError || !system.ok(text)) {
      throw new Error(`${system.name}: bad result ${JSON.stringify(r)}`);
    }
  };
  const results = new Map<string, number[][]>(systems.map((s) => [s.name, []]));
  const orders: string[][] = [];
  try {
    for (const system of systems) {
      progress(`starting ${system.name} (MCP)`);
      const transport = new StdioClientTransport({
        command: system.command,
        args: system.args,
        cwd: system.cwd,
        env: Deno.env.toObject(),
        stderr: "ignore",
      });
      const client = new Client({ name: "bench-peers", version: "0.0.0" });
      await client.connect(transport);
      clients.set(system.name, client);
      for (let i = 0; i < 1 + WARMUP; i++) await call(system);
    }
    for (let round = 0; round < ROUNDS; round++) {
      const order = shuffled(systems);
      orders.push(order.map((s) => s.name));
      progress(`mcp, round ${round + 1} of ${ROUNDS}: ${orders.at(-1)!.join(", ")}`);
      for (const system of order) {
        const times: number[] = [];
        for (let i = 0; i < N; i++) {
          const t0 = performance.now();
          await call(system);
          times.push(performance.now() - t0);
        }
        results.get(system.name)!.push(times);
      }
    }
  } finally {
    for (const client of clients.values()) await client.close();
  }
  return {
    systems: Object.fromEntries(systems.map((s) => [s.name, {
      label: s.label,
      ...latencyFigures(results.get(s.name)!),
    }])),
    orders,
  };
}

async function throughputSection() {
  const pool = (isolation: "none" | "default", recycling: boolean) =>
    poolSystem(
      `pool-${isolation}-recycling-${recycling ? "on" : "off"}`,
      `pyodide-pool, 2 workers, ${
        isolation === "none" ? "--isolation none" : "default isolation"
      }, recycling ${recycling ? "on (default limit)" : "off"}`,
      poolArgs(
        isolation,
        "--pool-size",
        "2",
        "--max-queue",
        String(BURST),
        ...(recycling ? [] : ["--worker-request-limit", "1000000000"]),
      ),
    );
  const systems: RpcSystem[] = [
    ...(mayflower ? [mayflowerSystem(mayflower)] : []),
    pool("none", true),
    pool("none", false),
    pool("default", true),
    pool("default", false),
  ];
  const { results, orders, replaced } = await interleaved(
    "throughput",
    systems,
    (system, process) => burst(system, process, BURST),
  );
  return {
    burst: BURST,
    systems: Object.fromEntries(systems.map((s) => {
      const rates = results.get(s.name)!;
      // Requests over the seconds all the rounds took.
      const overall = rates.length / rates.reduce((a, r) => a + 1 / r, 0);
      return [s.name, {
        label: s.label,
        requests_per_second: overall,
        round_requests_per_second: rates,
        workers_replaced: replaced.get(s.name),
      }];
    })),
    orders,
  };
}

interface StartRun {
  first_result_ms: number;
  /** With the memory section: after warm-ups and a second of idling. */
  workers?: ProcessMemory[];
  supervisor?: ProcessMemory;
  /** Every other process in the tree the command started. */
  wrappers?: ProcessMemory[];
}

interface StartSystem {
  name: string;
  label: string;
  /** For the table. */
  short: string;
  command: string;
  args: string[];
  cwd: string;
  rpc: RpcSystem;
}

async function startOnce(system: StartSystem, memory: boolean): Promise<StartRun> {
  const t0 = performance.now();
  const process = new LineProcess(system.name, system.command, system.args, system.cwd);
  try {
    await executeOnce(system.rpc, process);
    const run: StartRun = { first_result_ms: performance.now() - t0 };
    if (!memory) return run;
    for (let i = 0; i < WARMUP; i++) await executeOnce(system.rpc, process);
    let workerPids: number[] = [];
    if (system.rpc.pool) {
      // Every worker ready, so that none is still booting when its memory is read.
      for (let tries = 0;; tries++) {
        const health = (await process.request("health")).result as unknown as HealthReport;
        if (health.ready_workers >= health.pool_size || tries > 600) {
          workerPids = health.workers.map((w) => w.pid);
          break;
        }
        await sleep(100);
      }
    }
    await sleep(1000);
    const table = processTable();
    const tree = descendants(process.child.pid, table);
    if (!system.rpc.pool) {
      run.workers = tree.map(processMemory);
      return run;
    }
    const supervisorPid = table.get(workerPids[0]);
    run.workers = workerPids.map(processMemory);
    run.supervisor = supervisorPid === undefined ? undefined : processMemory(supervisorPid);
    run.wrappers = tree.filter((pid) => pid !== supervisorPid && !workerPids.includes(pid))
      .map(processMemory);
    return run;
  } finally {
    await process.close();
  }
}

async function startSection(memory: boolean) {
  const pool = poolSystem("pool", "", []);
  const [directCommand, directArgs] = supervisorCommand();
  const systems: StartSystem[] = [
    {
      name: "readme",
      label: `README quick start: ${README_START.join(" ")}`,
      short: "README start",
      command: README_START[0],
      args: README_START.slice(1),
      cwd: ROOT,
      rpc: pool,
    },
    {
      name: "npx-task",
      label: `through npx: ${NPX_TASK_START.join(" ")}`,
      short: "npx deno task start",
      command: NPX_TASK_START[0],
      args: NPX_TASK_START.slice(1),
      cwd: ROOT,
      rpc: pool,
    },
    {
      name: "deno-task",
      label: "deno task start",
      short: "deno task start",
      command: DENO,
      args: ["task", "start"],
      cwd: ROOT,
      rpc: pool,
    },
    {
      name: "direct",
      label: "deno run ... supervisor/main.ts (tasks.start)",
      short: "deno run (tasks.start)",
      command: directCommand,
      args: directArgs,
      cwd: ROOT,
      rpc: pool,
    },
  ];
  if (mayflower) {
    systems.push({
      name: "mayflower",
      label: "mayflower: deno run ... worker_server.ts",
      short: "mayflower",
      ...mayflower,
      rpc: mayflowerSystem(mayflower),
    });
  }
  // npx fetches deno@2.9.6 into its cache on the very first use; a user's second start does not.
  progress("priming npx's cache: npx --yes deno@2.9.6 --version");
  await new Deno.Command("npx", { args: ["--yes", "deno@2.9.6", "--version"], cwd: ROOT })
    .output();
  const results = new Map<string, StartRun[]>(systems.map((s) => [s.name, []]));
  const orders: string[][] = [];
  for (let round = 0; round < COLD_RUNS; round++) {
    const order = shuffled(systems);
    orders.push(order.map((s) => s.name));
    progress(`starts, ${round + 1} of ${COLD_RUNS}: ${orders.at(-1)!.join(", ")}`);
    for (const system of order) {
      results.get(system.name)!.push(await startOnce(system, memory));
    }
  }
  return {
    runs: COLD_RUNS,
    systems: Object.fromEntries(systems.map((s) => {
      const list = results.get(s.name)!;
      const maxOf = (values: number[]) => values.length ? Math.max(...values) : NaN;
      return [s.name, {
        label: s.label,
        short: s.short,
        first_result_ms: median(list.map((r) => r.first_result_ms)),
        first_result_runs_ms: list.map((r) => r.first_result_ms),
        ...(memory
          ? {
            // The largest worker of each start, then the median over the starts.
            worker_rss_mb: median(list.map((r) => maxOf(r.workers!.map((w) => w.rss_mb)))),
            supervisor_rss_mb: s.rpc.pool
              ? median(list.map((r) => r.supervisor?.rss_mb ?? NaN))
              : undefined,
            largest_wrapper_rss_mb: s.rpc.pool
              ? maxOf(list.flatMap((r) => r.wrappers!.map((w) => w.rss_mb)))
              : undefined,
            runs: list,
          }
          : {}),
      }];
    })),
    orders,
  };
}

// ---------------------------------------------------------------------------------------------
// The run and the table.

interface Report {
  date: string;
  machine: { cores: number; deno: string };
  load_average_start: string;
  load_average_end?: string;
  settings: { n: number; rounds: number; warmup: number; burst: number; cold_runs: number };
  sections?: string[];
  peers: string | null;
  notes: string[];
  latency?: Awaited<ReturnType<typeof latencySection>>;
  mcp?: Awaited<ReturnType<typeof mcpSection>>;
  throughput?: Awaited<ReturnType<typeof throughputSection>>;
  starts?: Awaited<ReturnType<typeof startSection>>;
  table?: unknown;
}

async function measure(): Promise<Report> {
  const report: Report = {
    date: new Date().toISOString(),
    machine: { cores: navigator.hardwareConcurrency, deno: Deno.version.deno },
    load_average_start: loadavg(),
    settings: { n: N, rounds: ROUNDS, warmup: WARMUP, burst: BURST, cold_runs: COLD_RUNS },
    sections: SECTIONS.filter(runs),
    peers: peersDir ?? null,
    notes,
  };
  progress(`load average ${report.load_average_start}; sections: ${report.sections!.join(", ")}`);
  if (runs("latency")) report.latency = await latencySection();
  if (runs("mcp")) report.mcp = await mcpSection();
  if (runs("throughput")) report.throughput = await throughputSection();
  if (runs("cold") || runs("memory")) report.starts = await startSection(runs("memory"));
  report.load_average_end = loadavg();
  return report;
}

const report: Report = options.render
  ? JSON.parse(Deno.readTextFileSync(options.render))
  : await measure();
const { latency, mcp, throughput, starts } = report;
const settings = report.settings;
const shows = (section: Section) => (report.sections ?? SECTIONS).includes(section);

interface Row {
  figure: string;
  pool: string;
  peer: string;
  ratio: number;
  /** The ratio is met when at most (`<=`) or at least (`>=`) this. */
  target?: [op: "<=" | ">=", bound: number];
  /** Shown instead of a ratio, with its own unit. */
  unit?: string;
}

const rows: Row[] = [];
const f = (n: number | undefined, digits = 2) => n === undefined ? "-" : n.toFixed(digits);
const isoName = { none: "--isolation none", default: "default isolation" } as const;
type Iso = keyof typeof isoName;

if (latency) {
  const peer = latency.systems["mayflower"];
  for (const iso of ["none", "default"] as Iso[]) {
    const pool = latency.systems[`pool-${iso}`];
    const targets = iso === "none" ? [1.0, 1.0] : [1.5, 1.3];
    (["p50_ms", "p99_ms"] as const).forEach((p, i) => {
      rows.push({
        figure: `warm ${p.slice(0, 3)}, JSON-RPC, 1 worker, ${isoName[iso]} (ms)`,
        pool: f(pool[p], 3),
        peer: peer ? `mayflower ${f(peer[p], 3)}` : "skipped",
        ratio: peer ? pool[p] / peer[p] : NaN,
        target: ["<=", targets[i]],
      });
    });
  }
}
if (mcp) {
  const peer = mcp.systems["mcp-run-python"];
  for (const iso of ["none", "default"] as Iso[]) {
    const pool = mcp.systems[`pool-${iso}`];
    const bound = iso === "none" ? 1.0 : 1.3;
    for (const p of ["p50_ms", "p99_ms"] as const) {
      rows.push({
        figure: `MCP ${p.slice(0, 3)}, 1 worker, ${isoName[iso]} (ms)`,
        pool: f(pool[p], 3),
        peer: peer ? `mcp-run-python ${f(peer[p], 3)}` : "skipped",
        ratio: peer ? pool[p] / peer[p] : NaN,
        target: ["<=", bound],
      });
    }
  }
}
if (throughput) {
  const peer = throughput.systems["mayflower"];
  for (const iso of ["none", "default"] as Iso[]) {
    const on = throughput.systems[`pool-${iso}-recycling-on`];
    const off = throughput.systems[`pool-${iso}-recycling-off`];
    rows.push({
      figure: `${settings.burst} at once, 2 workers, default settings, ${isoName[iso]} (req/s)`,
      pool: f(on.requests_per_second, 0),
      peer: peer ? `mayflower ${f(peer.requests_per_second, 0)}` : "skipped",
      ratio: peer ? on.requests_per_second / peer.requests_per_second : NaN,
      target: [">=", iso === "none" ? 1.5 : 0.75],
    });
    rows.push({
      figure: `  the same with recycling off (req/s)`,
      pool: f(off.requests_per_second, 0),
      peer: peer ? `mayflower ${f(peer.requests_per_second, 0)}` : "skipped",
      ratio: peer ? off.requests_per_second / peer.requests_per_second : NaN,
    });
    rows.push({
      figure: `  throughput lost to recycling, ${isoName[iso]}`,
      pool: `1 - ${f(on.requests_per_second, 0)} / ${f(off.requests_per_second, 0)}`,
      peer: "",
      ratio: 1 - on.requests_per_second / off.requests_per_second,
      target: ["<=", 0.15],
      unit: "%",
    });
  }
}
if (starts) {
  const peer = starts.systems["mayflower"];
  if (shows("cold")) {
    for (const name of ["readme", "npx-task", "deno-task", "direct"]) {
      const pool = starts.systems[name];
      rows.push({
        figure: `cold start to first result, ${pool.short} (ms)`,
        pool: f(pool.first_result_ms, 0),
        peer: peer ? `mayflower ${f(peer.first_result_ms, 0)}` : "skipped",
        ratio: peer ? pool.first_result_ms / peer.first_result_ms : NaN,
        // At least 2x faster: at most half of mayflower's time.
        target: ["<=", 0.5],
      });
    }
  }
  if (shows("memory")) {
    const readme = starts.systems["readme"];
    rows.push({
      figure: "idle worker RSS, README start, largest of its workers (MB)",
      pool: f(readme.worker_rss_mb, 1),
      peer: peer ? `mayflower ${f(peer.worker_rss_mb, 1)}` : "skipped",
      ratio: peer && readme.worker_rss_mb !== undefined && peer.worker_rss_mb !== undefined
        ? readme.worker_rss_mb / peer.worker_rss_mb
        : NaN,
      target: ["<=", 1.0],
    });
    for (const name of ["readme", "npx-task", "deno-task", "direct"]) {
      const s = starts.systems[name];
      const wrappers = (s.runs ?? []).at(-1)?.wrappers ?? [];
      rows.push({
        figure: `largest wrapper left alive, ${s.short} (MB)`,
        pool: wrappers.length
          ? wrappers.map((w) => `${w.name} ${f(w.rss_mb, 0)}`).join(", ")
          : "none",
        peer: "",
        ratio: s.largest_wrapper_rss_mb ?? NaN,
        target: ["<=", 10],
        unit: "MB",
      });
      rows.push({
        figure: `  supervisor RSS, same start (MB)`,
        pool: f(s.supervisor_rss_mb, 1),
        peer: "",
        ratio: NaN,
      });
    }
  }
}

const replacedText = (counts: Record<string, number>) =>
  Object.entries(counts).map(([why, n]) => `${n} ${why}`).join(", ") || "none";
const met = (row: Row) => {
  if (!row.target || Number.isNaN(row.ratio)) return "";
  const [op, bound] = row.target;
  return (op === "<=" ? row.ratio <= bound : row.ratio >= bound) ? "met" : "missed";
};
const shown = (row: Row) => {
  if (Number.isNaN(row.ratio)) return row.unit === "MB" ? "none" : "-";
  if (row.unit === "%") return `${f(row.ratio * 100, 0)}%`;
  if (row.unit === "MB") return f(row.ratio, 1);
  return `${f(row.ratio, 2)}x`;
};
const targetText = (row: Row) => {
  if (!row.target) return "";
  const [op, bound] = row.target;
  if (row.unit === "%") return `${op} ${bound * 100}%`;
  if (row.unit === "MB") return `${op} ${bound} MB`;
  return `${op} ${bound.toFixed(2)}x`;
};
report.table = rows.map((row) => ({
  ...row,
  ratio_shown: shown(row),
  target_shown: targetText(row),
  met: met(row),
}));

if (options.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  console.log(
    `pyodide-pool vs peers, ${report.date}, ${report.machine.cores} cores, deno ${report.machine.deno}`,
  );
  console.log(
    `load average (1, 5, 15 min): start ${report.load_average_start}, end ${report.load_average_end}`,
  );
  console.log(
    `N=${settings.n} sequential calls per round, ${settings.rounds} rounds (systems in random ` +
      `order each round), ${settings.warmup} warm-ups; burst ${settings.burst} per round; ` +
      `${settings.cold_runs} starts each, median`,
  );
  console.log(`peers: ${report.peers ?? "none"}`);
  for (const note of report.notes) console.log(`note: ${note}`);
  if (throughput) {
    console.log(
      `note: throughput pools run with --max-queue ${settings.burst} (the default 100 would refuse most ` +
        `of a burst); every answer is checked`,
    );
  }
  const header = ["figure", "pyodide-pool", "peer", "pool/peer", "target", ""];
  const table = rows.map((r) => [r.figure, r.pool, r.peer, shown(r), targetText(r), met(r)]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ")
      .trimEnd();
  console.log();
  console.log(line(header));
  for (const cells of table) console.log(line(cells));

  const details: string[] = [];
  for (const [title, section] of [["JSON-RPC", latency], ["MCP", mcp]] as const) {
    if (!section) continue;
    details.push(
      `\n${title} latency, all rounds pooled (ms): p50 / p99 / mean / max; p50 by round`,
    );
    for (const s of Object.values(section.systems)) {
      const replaced = "workers_replaced" in s && s.workers_replaced
        ? `; workers replaced: ${replacedText(s.workers_replaced as Record<string, number>)}`
        : "";
      details.push(
        `  ${s.label}: ${f(s.p50_ms, 3)} / ${f(s.p99_ms, 3)} / ${f(s.mean_ms, 3)} / ${
          f(s.max_ms, 3)
        }; ${s.round_p50_ms.map((v) => f(v, 3)).join(", ")}${replaced}`,
      );
    }
  }
  if (throughput) {
    details.push(`\nthroughput, ${settings.burst} at once (req/s): overall; by round`);
    for (const s of Object.values(throughput.systems)) {
      const replaced = s.workers_replaced
        ? `; workers replaced: ${replacedText(s.workers_replaced)}`
        : "";
      details.push(
        `  ${s.label}: ${f(s.requests_per_second, 0)}; ${
          s.round_requests_per_second.map((v) => f(v, 0)).join(", ")
        }${replaced}`,
      );
    }
  }
  if (starts) {
    details.push(`\nstarts (ms to first result, each run in order of rounds)`);
    for (const s of Object.values(starts.systems)) {
      details.push(`  ${s.label}: ${s.first_result_runs_ms.map((v) => f(v, 0)).join(", ")}`);
      if (!shows("memory")) continue;
      const last = s.runs?.at(-1);
      if (!last) continue;
      const list = (ps: ProcessMemory[] | undefined) =>
        (ps ?? []).map((p) => `${p.name}[${p.pid}] ${f(p.rss_mb, 1)}`).join(", ");
      details.push(
        `    last run, VmRSS MB: workers ${list(last.workers)}` +
          (last.supervisor ? `; supervisor ${list([last.supervisor])}` : ""),
      );
      for (const w of last.wrappers ?? []) {
        details.push(`    wrapper ${w.name}[${w.pid}] ${f(w.rss_mb, 1)} MB: ${w.command}`);
      }
    }
  }
  console.log(details.join("\n"));
}
