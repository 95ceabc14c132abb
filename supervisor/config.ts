/**
 * Pool configuration: one table of settings, read from CLI flags, environment variables and
 * an optional JSONC file, in that order of precedence, over the defaults. Any invalid value
 * stops the start with a message that names the setting and where it came from.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parse as parseJsonc, type ParseError, printParseErrorCode } from "jsonc-parser";
import { type Isolation, ISOLATIONS } from "../lib/protocol.ts";
import { WORKER_DEFAULTS } from "../lib/worker_protocol.ts";
import { parseListenAddress } from "./http/address.ts";

type Kind = "int" | "seconds" | "bool" | "string" | "list" | "enum";

interface Setting {
  /** Key in the config file and in `Config`. */
  key: keyof Config;
  flag: string;
  env?: string;
  kind: Kind;
  default: unknown;
  help: string;
  min?: number;
  max?: number;
  choices?: readonly string[];
}

/**
 * Every setting, its sources and its default. Durations are given in seconds. A setting the
 * workers receive takes its default from theirs (lib/worker_protocol.ts).
 */
export const SETTINGS: readonly Setting[] = [
  {
    key: "poolSize",
    flag: "pool-size",
    env: "PYODIDE_POOL_SIZE",
    kind: "int",
    default: 3,
    min: 1,
    max: 64,
    help: "number of warm workers (the fixed size; see --min-workers/--max-workers to scale)",
  },
  {
    key: "minWorkers",
    flag: "min-workers",
    env: "PYODIDE_MIN_WORKERS",
    kind: "int",
    default: undefined,
    min: 1,
    max: 64,
    help: "fewest workers when scaling (default: the pool size)",
  },
  {
    key: "maxWorkers",
    flag: "max-workers",
    env: "PYODIDE_MAX_WORKERS",
    kind: "int",
    default: undefined,
    min: 1,
    max: 64,
    help: "most workers when scaling (default: the minimum, that is a fixed size)",
  },
  {
    key: "scaleUpWaitMs",
    flag: "scale-up-wait-ms",
    env: "PYODIDE_SCALE_UP_WAIT_MS",
    kind: "int",
    default: 200,
    min: 1,
    help: "grow the pool when the oldest queued request has waited this many ms",
  },
  {
    key: "scaleDownIdle",
    flag: "scale-down-idle",
    env: "PYODIDE_SCALE_DOWN_IDLE",
    kind: "seconds",
    default: 60,
    min: 0,
    help: "retire a worker above the minimum once it has been idle this many seconds",
  },
  {
    key: "workerRequestLimit",
    flag: "worker-request-limit",
    env: "PYODIDE_WORKER_REQUEST_LIMIT",
    kind: "int",
    default: 1000,
    min: 1,
    help: "requests after which a worker's interpreter is renewed from its memory image, or " +
      "with --isolation none and at every tenth limit the worker recycled (jittered by up to 10%)",
  },
  {
    key: "healthCheckInterval",
    flag: "health-check-interval",
    env: "PYODIDE_HEALTH_CHECK_INTERVAL",
    kind: "seconds",
    default: 30,
    min: 0,
    help: "seconds between health checks of idle workers; 0 disables them",
  },
  {
    key: "healthCheckTimeout",
    flag: "health-check-timeout",
    env: "PYODIDE_HEALTH_CHECK_TIMEOUT",
    kind: "seconds",
    default: 10,
    min: 0.1,
    help: "seconds a health check may take before the worker is replaced",
  },
  {
    key: "execTimeout",
    flag: "exec-timeout",
    env: "PYODIDE_EXEC_TIMEOUT",
    kind: "seconds",
    default: WORKER_DEFAULTS.defaultTimeoutMs / 1000,
    min: 0.001,
    help: "default wall-clock limit of one execute, in seconds",
  },
  {
    key: "maxExecTimeout",
    flag: "max-exec-timeout",
    env: "PYODIDE_MAX_EXEC_TIMEOUT",
    kind: "seconds",
    default: 600,
    min: 0.001,
    help: "cap on the timeout_ms a request may ask for, in seconds",
  },
  {
    key: "timeoutGrace",
    flag: "timeout-grace",
    env: "PYODIDE_TIMEOUT_GRACE",
    kind: "seconds",
    default: 1,
    min: 0.1,
    help: "seconds past a timeout before an unresponsive worker is killed",
  },
  {
    key: "initTimeout",
    flag: "init-timeout",
    env: "PYODIDE_INIT_TIMEOUT",
    kind: "seconds",
    default: 90,
    min: 1,
    help: "seconds a worker may take to load Pyodide",
  },
  {
    key: "maxQueue",
    flag: "max-queue",
    env: "PYODIDE_MAX_QUEUE",
    kind: "int",
    default: 100,
    min: 0,
    help: "requests that may wait for a worker before -32000 overloaded",
  },
  {
    key: "workerMaxMemoryMb",
    flag: "worker-max-memory-mb",
    env: "PYODIDE_WORKER_MAX_MEMORY_MB",
    kind: "int",
    default: WORKER_DEFAULTS.maxHeapMb,
    min: 64,
    max: 4096,
    help: "cap on each worker's Wasm heap in MB; past it Python gets MemoryError (memory_limit)",
  },
  {
    key: "workerRecycleHeapMb",
    flag: "worker-recycle-heap-mb",
    env: "PYODIDE_WORKER_RECYCLE_HEAP_MB",
    kind: "int",
    default: WORKER_DEFAULTS.recycleHeapMb,
    min: 32,
    max: 4096,
    help: "a worker whose Wasm heap grew past this many MB is recycled (Wasm memory never shrinks)",
  },
  {
    key: "workerMaxRssMb",
    flag: "worker-max-rss-mb",
    env: "PYODIDE_WORKER_MAX_RSS_MB",
    kind: "int",
    default: WORKER_DEFAULTS.maxRssMb,
    min: 128,
    help: "a worker whose resident memory (heap, file system, buffers) passed this many MB is " +
      "replaced once its request is answered",
  },
  {
    key: "maxFsMb",
    flag: "max-fs-mb",
    env: "PYODIDE_MAX_FS_MB",
    kind: "int",
    default: WORKER_DEFAULTS.maxFsMb,
    min: 1,
    help: "MB of files one request may hold in the in-memory file system; past it writes fail " +
      "with ENOSPC (fs_limit)",
  },
  {
    key: "maxOutputBytes",
    flag: "max-output-bytes",
    env: "PYODIDE_MAX_OUTPUT_BYTES",
    kind: "int",
    default: WORKER_DEFAULTS.maxOutputBytes,
    min: 1,
    help: "cap on stdout and on stderr of one execute, in bytes",
  },
  {
    key: "maxLineBytes",
    flag: "max-line-bytes",
    env: "PYODIDE_MAX_LINE_BYTES",
    kind: "int",
    default: WORKER_DEFAULTS.maxAnswerBytes,
    min: 1024,
    help: "longest JSON-RPC line, in bytes, either way: the pool sends no answer longer than " +
      "it accepts (one that would be is -32005); returned files get 3/8 of it",
  },
  {
    key: "maxUnreadMb",
    flag: "max-unread-mb",
    env: "PYODIDE_MAX_UNREAD_MB",
    kind: "int",
    default: 256,
    min: 1,
    help:
      "MB of answers a client may leave unread; past it no more requests are read until it reads",
  },
  {
    key: "usePool",
    flag: "use-pool",
    env: "PYODIDE_USE_POOL",
    kind: "bool",
    default: true,
    help: "keep warm workers; false starts a fresh worker per request (slow baseline)",
  },
  {
    key: "useSnapshot",
    flag: "use-snapshot",
    env: "PYODIDE_USE_SNAPSHOT",
    kind: "bool",
    default: true,
    help: "start workers from a memory snapshot (built once, in .snapshots/); false: plain start",
  },
  {
    key: "sessionTtl",
    flag: "session-ttl",
    env: "PYODIDE_SESSION_TTL",
    kind: "seconds",
    default: 600,
    min: 1,
    help: "seconds a server-held session may stay unused before it expires",
  },
  {
    key: "maxSessionsPerWorker",
    flag: "max-sessions-per-worker",
    env: "PYODIDE_MAX_SESSIONS_PER_WORKER",
    kind: "int",
    default: 32,
    min: 1,
    help: "server-held sessions one worker may hold",
  },
  {
    key: "isolation",
    flag: "isolation",
    env: "PYODIDE_ISOLATION",
    kind: "enum",
    default: WORKER_DEFAULTS.isolation,
    choices: ISOLATIONS,
    help: "what is put back between requests: request (every request starts from the pristine " +
      "memory image, unless it continues its own session), tenant (put back when the tenant " +
      "changes), none (only a Python-level reset: requests can see and change each other's " +
      "state, for one trusted user only; see SECURITY.md)",
  },
  {
    key: "maxParkedMb",
    flag: "max-parked-mb",
    env: "PYODIDE_MAX_PARKED_MB",
    kind: "int",
    default: WORKER_DEFAULTS.maxParkedMb,
    min: 1,
    help: "MB of parked session images each worker may hold; past it the least recently used " +
      "session is dropped (its next request gets -32004)",
  },
  {
    key: "maxRecoveriesPerMinute",
    flag: "max-recoveries-per-minute",
    env: "PYODIDE_MAX_RECOVERIES_PER_MINUTE",
    kind: "int",
    default: WORKER_DEFAULTS.maxRecoveriesPerMinute,
    min: 1,
    help: "interpreter crashes a worker recovers from in place within a minute (the memory " +
      "image put back, a few milliseconds each); past it the worker is replaced",
  },
  {
    key: "maxFileBytes",
    flag: "max-file-bytes",
    env: "PYODIDE_MAX_FILE_BYTES",
    kind: "int",
    default: WORKER_DEFAULTS.maxFileBytes,
    min: 0,
    help: "largest output file returned with its content, in bytes",
  },
  {
    key: "packagesDir",
    flag: "packages-dir",
    env: "PYODIDE_PACKAGES_DIR",
    kind: "string",
    default: undefined,
    help: "local package directory with a pyodide-lock.json (see scripts/fetch_packages.ts)",
  },
  {
    key: "packageIndexUrl",
    flag: "package-index-url",
    env: "PYODIDE_PACKAGE_INDEX_URL",
    kind: "string",
    default: undefined,
    help:
      "package index URL holding pyodide-lock.json, e.g. the Pyodide CDN; lets workers reach that host",
  },
  {
    key: "workerAllowNet",
    flag: "worker-allow-net",
    env: "PYODIDE_WORKER_ALLOW_NET",
    kind: "list",
    default: [],
    help: "network mode: comma-separated host[:port] list Python may fetch from (off by default)",
  },
  {
    key: "preload",
    flag: "preload",
    env: "PYODIDE_PRELOAD",
    kind: "list",
    default: [],
    help: "comma-separated packages every worker loads at start",
  },
  {
    key: "shutdownGrace",
    flag: "shutdown-grace",
    env: "PYODIDE_SHUTDOWN_GRACE",
    kind: "seconds",
    default: 10,
    min: 0,
    help: "seconds in-flight requests may finish during shutdown",
  },
  {
    key: "allowShutdown",
    flag: "allow-shutdown",
    env: "PYODIDE_ALLOW_SHUTDOWN",
    kind: "bool",
    default: false,
    help: "let clients call the shutdown method",
  },
  {
    key: "mcp",
    flag: "mcp",
    env: "PYODIDE_MCP",
    kind: "bool",
    default: false,
    help: "serve the Model Context Protocol on stdin/stdout instead of plain JSON-RPC",
  },
  {
    key: "metricsPort",
    flag: "metrics-port",
    env: "PYODIDE_METRICS_PORT",
    kind: "int",
    default: undefined,
    min: 0,
    max: 65535,
    help: "serve Prometheus metrics and /health on http://127.0.0.1:PORT (0: any free port)",
  },
  {
    key: "nats",
    flag: "nats",
    env: "PYODIDE_NATS_URL",
    kind: "list",
    default: [],
    help: "comma-separated NATS server URLs (nats://host:4222, tls://host:4222): serve as an " +
      "instance of the service --nats-service there as well as on stdin/stdout, or with " +
      "--gateway forward to its instances (docs/operations.md, Across hosts)",
  },
  {
    key: "natsService",
    flag: "nats-service",
    env: "PYODIDE_NATS_SERVICE",
    kind: "string",
    default: "pyodide_pool",
    help: "the NATS service's name: its subjects start with it (letters, digits, _ and -)",
  },
  {
    key: "gateway",
    flag: "gateway",
    env: "PYODIDE_GATEWAY",
    kind: "bool",
    default: false,
    help: "with --nats: start no workers, and serve stdin/stdout (or MCP) by forwarding every " +
      "request to the service's instances",
  },
  {
    key: "natsCreds",
    flag: "nats-creds",
    env: "PYODIDE_NATS_CREDS",
    kind: "string",
    default: undefined,
    help: "NATS credentials file (a user JWT and its NKey seed, from nsc)",
  },
  {
    key: "natsToken",
    flag: "nats-token",
    env: "PYODIDE_NATS_TOKEN",
    kind: "string",
    default: undefined,
    help: "NATS authentication token (prefer the environment variable: flags show in ps)",
  },
  {
    key: "natsCa",
    flag: "nats-ca",
    env: "PYODIDE_NATS_CA",
    kind: "string",
    default: undefined,
    help: "CA certificate file (PEM) to verify the NATS server's TLS certificate with",
  },
  {
    key: "http",
    flag: "http",
    env: "PYODIDE_HTTP",
    kind: "string",
    default: undefined,
    help: "also serve JSON-RPC (POST /rpc), MCP (/mcp), /health, /metrics and a status page (/) " +
      "over HTTP on HOST:PORT, e.g. 127.0.0.1:8080 (port 0: any free port); a host other than " +
      "loopback needs --http-token-file (or --http-insecure); see docs/operations.md",
  },
  {
    key: "httpTokenFile",
    flag: "http-token-file",
    env: "PYODIDE_HTTP_TOKEN_FILE",
    kind: "string",
    default: undefined,
    help: "file of HTTP bearer tokens, one a line, each optionally named as a tenant " +
      "(name:token); with it every HTTP route but / and /health needs a token; SIGHUP reads it again",
  },
  {
    key: "httpInsecure",
    flag: "http-insecure",
    env: "PYODIDE_HTTP_INSECURE",
    kind: "bool",
    default: false,
    help: "let --http bind a non-loopback address without a token file (anyone who reaches " +
      "the port can run code)",
  },
  {
    key: "httpCors",
    flag: "http-cors",
    env: "PYODIDE_HTTP_CORS",
    kind: "list",
    default: [],
    help:
      "comma-separated origins (or *) whose web pages may call the HTTP routes; none by default",
  },
  {
    key: "httpMaxConnections",
    flag: "http-max-connections",
    env: "PYODIDE_HTTP_MAX_CONNECTIONS",
    kind: "int",
    default: 256,
    min: 1,
    help: "HTTP connections open at once; past it a new connection gets 503 and is closed",
  },
  {
    key: "httpHeaderTimeout",
    flag: "http-header-timeout",
    env: "PYODIDE_HTTP_HEADER_TIMEOUT",
    kind: "seconds",
    default: 10,
    min: 0.1,
    help: "seconds an HTTP connection may take to send a request's headers, from its opening " +
      "or its previous answer (also the keep-alive idle time); past it, 408 and closed",
  },
  {
    key: "httpBodyTimeout",
    flag: "http-body-timeout",
    env: "PYODIDE_HTTP_BODY_TIMEOUT",
    kind: "seconds",
    default: 30,
    min: 0.1,
    help: "seconds an HTTP request may take to send its body once its headers came; past it, 408",
  },
  {
    key: "httpSendTimeout",
    flag: "http-send-timeout",
    env: "PYODIDE_HTTP_SEND_TIMEOUT",
    kind: "seconds",
    default: 60,
    min: 0.1,
    help: "seconds an HTTP client may leave the bytes sent to it unread; past it, the connection " +
      "is closed (a client that does not read its answers cannot hold them in memory)",
  },
  {
    key: "logLevel",
    flag: "log-level",
    env: "PYODIDE_LOG_LEVEL",
    kind: "enum",
    default: WORKER_DEFAULTS.logLevel,
    choices: ["debug", "info", "warning", "error"],
    help: "log level on stderr: debug, info, warning or error",
  },
  {
    key: "logFormat",
    flag: "log-format",
    env: "PYODIDE_LOG_FORMAT",
    kind: "enum",
    default: WORKER_DEFAULTS.logFormat,
    choices: ["text", "json"],
    help: "log line format on stderr: text, or json (one JSON object per line)",
  },
];

export interface Config {
  poolSize: number;
  /** The pool scales between these (both the pool size unless set). */
  minWorkers: number;
  maxWorkers: number;
  scaleUpWaitMs: number;
  /** Seconds. */
  scaleDownIdle: number;
  /** Port of the metrics and health HTTP server on 127.0.0.1; off when undefined. */
  metricsPort: number | undefined;
  workerRequestLimit: number;
  healthCheckInterval: number;
  healthCheckTimeout: number;
  execTimeout: number;
  maxExecTimeout: number;
  timeoutGrace: number;
  initTimeout: number;
  maxQueue: number;
  workerMaxMemoryMb: number;
  workerRecycleHeapMb: number;
  workerMaxRssMb: number;
  maxFsMb: number;
  maxOutputBytes: number;
  maxLineBytes: number;
  maxUnreadMb: number;
  usePool: boolean;
  useSnapshot: boolean;
  sessionTtl: number;
  maxSessionsPerWorker: number;
  maxFileBytes: number;
  packagesDir: string | undefined;
  packageIndexUrl: string | undefined;
  preload: string[];
  workerAllowNet: string[];
  shutdownGrace: number;
  allowShutdown: boolean;
  /** Serve MCP (tools run_python, list_packages) instead of the JSON-RPC methods. */
  mcp: boolean;
  /** `HOST:PORT` of the HTTP service (supervisor/http/); off when undefined. */
  http: string | undefined;
  httpTokenFile: string | undefined;
  /** Allow a non-loopback `http` bind without a token file. */
  httpInsecure: boolean;
  /** Origins allowed to call the HTTP routes from a web page (CORS); `*` for any. */
  httpCors: string[];
  httpMaxConnections: number;
  /** Seconds. */
  httpHeaderTimeout: number;
  /** Seconds. */
  httpBodyTimeout: number;
  /** Seconds. */
  httpSendTimeout: number;
  logLevel: "debug" | "info" | "warning" | "error";
  logFormat: "text" | "json";
  /** NATS server URLs; none: no NATS. */
  nats: string[];
  /** The NATS service's name (ADR-32: letters, digits, _ and -). */
  natsService: string;
  /** Forward to the service's instances instead of running workers (needs `nats`). */
  gateway: boolean;
  natsCreds: string | undefined;
  natsToken: string | undefined;
  natsCa: string | undefined;
  isolation: Isolation;
  maxParkedMb: number;
  maxRecoveriesPerMinute: number;
}

/** A setting with a bad value, or a bad flag or file: the start must stop. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The outcome of reading the command line: a config to run with, or help to print. */
export type ConfigResult = { help: string } | { config: Config; configFile?: string };

const CONFIG_FILE_ENV = "PYODIDE_POOL_CONFIG";

function convert(setting: Setting, raw: unknown, source: string): unknown {
  const fail = (expected: string): never => {
    throw new ConfigError(
      `invalid ${setting.key} (${source}): ${JSON.stringify(raw)} is not ${expected}`,
    );
  };
  switch (setting.kind) {
    case "bool":
      if (typeof raw === "boolean") return raw;
      if (raw === "true" || raw === "1") return true;
      if (raw === "false" || raw === "0") return false;
      return fail("true or false");
    case "enum":
      if (typeof raw === "string" && setting.choices!.includes(raw)) return raw;
      return fail(`one of ${setting.choices!.join(", ")}`);
    case "string":
      if (typeof raw === "string" && raw !== "") return raw;
      return fail("a non-empty string");
    case "list": {
      const items = Array.isArray(raw) ? raw : typeof raw === "string" ? raw.split(",") : [];
      const names = items.map((item) => typeof item === "string" ? item.trim() : "");
      if (!Array.isArray(raw) && typeof raw !== "string") return fail("a list of names");
      if (names.some((name) => name === "")) return fail("a list of non-empty names");
      return names;
    }
    case "int":
    case "seconds": {
      const value = typeof raw === "number"
        ? raw
        : typeof raw === "string" && raw.trim() !== ""
        ? Number(raw)
        : NaN;
      const integral = setting.kind === "int";
      const what = integral ? "an integer" : "a number of seconds";
      if (!Number.isFinite(value) || (integral && !Number.isInteger(value))) return fail(what);
      if (setting.min !== undefined && value < setting.min) {
        return fail(`${what} >= ${setting.min}`);
      }
      if (setting.max !== undefined && value > setting.max) {
        return fail(`${what} <= ${setting.max}`);
      }
      return value;
    }
  }
}

/** A NATS server URL's schemes: plain, or TLS required. A bare host:port is plain. */
const NATS_SCHEMES = ["nats:", "tls:"];
/** A NATS service name, as ADR-32 allows it; it is the first token of every subject. */
export const SERVICE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * NATS URLs as logs may show them: credentials replaced by `***`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { redactedUrls } from "./config.ts";
 * assert.deepEqual(redactedUrls(["nats://me:pw@a:4222", "b:4222"]), ["nats://***@a:4222", "b:4222"]);
 * ```
 */
export function redactedUrls(urls: string[]): string[] {
  return urls.map((url) => url.replace(/\/\/[^@/]*@/, "//***@"));
}

/** The NATS settings, checked together: each one apart from --nats needs it. */
function checkNats(config: Config): void {
  for (const url of config.nats) {
    const parsed = URL.canParse(url) ? new URL(url) : undefined;
    const hostPort = /^[A-Za-z0-9.\-\[\]:]+:\d+$/.test(url);
    if (!hostPort && (!parsed || !NATS_SCHEMES.includes(parsed.protocol) || !parsed.hostname)) {
      throw new ConfigError(
        `invalid nats: ${JSON.stringify(url)} is not a NATS URL such as nats://host:4222 or ` +
          "tls://host:4222",
      );
    }
  }
  if (!SERVICE_NAME.test(config.natsService)) {
    throw new ConfigError(
      `invalid natsService: ${JSON.stringify(config.natsService)} must be 1-64 letters, ` +
        "digits, _ or - (it starts every subject of the service)",
    );
  }
  if (config.nats.length === 0) {
    const given = [
      ["gateway", config.gateway],
      ["natsCreds", config.natsCreds],
      ["natsToken", config.natsToken],
      ["natsCa", config.natsCa],
    ].filter(([, value]) => value !== undefined && value !== false);
    if (given.length > 0) {
      throw new ConfigError(
        `invalid ${given[0][0]}: it needs a NATS server (--nats URL or PYODIDE_NATS_URL)`,
      );
    }
  }
  if (config.natsCreds !== undefined && config.natsToken !== undefined) {
    throw new ConfigError(
      "invalid natsToken: give a credentials file (natsCreds) or a token, not both",
    );
  }
  for (const [key, path] of [["natsCreds", config.natsCreds], ["natsCa", config.natsCa]]) {
    if (path === undefined) continue;
    try {
      Deno.statSync(path);
    } catch (error) {
      throw new ConfigError(`invalid ${key}: cannot read ${path}: ${(error as Error).message}`);
    }
  }
  if (config.gateway && config.metricsPort !== undefined) {
    throw new ConfigError(
      "invalid metricsPort: a gateway has no workers to measure; serve metrics from the " +
        "instances (their --metrics-port)",
    );
  }
}

/** A flag padded to the help text's column, with at least two spaces after it. */
const column = (flag: string) => `${flag}  `.padEnd(34);

/** The `--help` text, generated from the settings table. */
export function helpText(): string {
  const lines = [
    "pyodide-pool: a pool of warm Pyodide interpreters behind JSON-RPC 2.0 on stdin/stdout (and HTTP with --http).",
    "",
    "Usage: scripts/start [options]   (or: deno task start [options])",
    "",
    "Options (flags override environment variables, which override the config file):",
    `  ${column("--config FILE")}JSONC config file with the keys below (env ${CONFIG_FILE_ENV})`,
    `  ${column("-h, --help")}show this help`,
  ];
  for (const s of SETTINGS) {
    const flag = s.kind === "bool" ? `--${s.flag}[=false]` : `--${s.flag} VALUE`;
    lines.push(`  ${column(flag)}${s.help}`);
    lines.push(
      `  ${column("")}key ${s.key}, env ${s.env}, default ${
        s.default === undefined ? "none" : JSON.stringify(s.default)
      }`,
    );
  }
  return lines.join("\n");
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  const errors: ParseError[] = [];
  const value = parseJsonc(text, errors, { allowTrailingComma: true });
  if (errors.length > 0) {
    const first = errors[0];
    throw new ConfigError(
      `config file ${path} is not valid JSONC: ${
        printParseErrorCode(first.error)
      } at offset ${first.offset}`,
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(`config file ${path} must hold a JSON object`);
  }
  for (const key of Object.keys(value)) {
    if (!SETTINGS.some((s) => s.key === key)) {
      throw new ConfigError(
        `config file ${path}: unknown setting ${JSON.stringify(key)} (known: ${
          SETTINGS.map((s) => s.key).join(", ")
        })`,
      );
    }
  }
  return value as Record<string, unknown>;
}

/**
 * Resolves the configuration from CLI arguments, environment and config file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadConfig } from "./config.ts";
 * const result = loadConfig(["--pool-size", "2"], {});
 * assert.ok("config" in result);
 * assert.equal(result.config.poolSize, 2);
 * ```
 */
export function loadConfig(
  argv: string[],
  env: Record<string, string | undefined>,
): ConfigResult {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    config: { type: "string" },
    help: { type: "boolean", short: "h" },
  };
  for (const s of SETTINGS) {
    options[s.flag] = { type: "string" };
  }
  let parsed;
  try {
    // Boolean settings take an optional value: --use-pool, --use-pool=false.
    const normalized = argv.map((arg) => {
      const bool = SETTINGS.find((s) => s.kind === "bool" && arg === `--${s.flag}`);
      return bool ? `--${bool.flag}=true` : arg;
    });
    parsed = parseArgs({ args: normalized, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new ConfigError(`${(error as Error).message} (see --help)`);
  }
  const flags = parsed.values as Record<string, string | boolean | undefined>;
  if (flags.help) return { help: helpText() };

  const configFile = (flags.config as string | undefined) ?? env[CONFIG_FILE_ENV];
  const fromFile = configFile ? readConfigFile(configFile) : {};
  const config: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    const flagValue = flags[s.flag];
    const envValue = s.env ? env[s.env] : undefined;
    if (flagValue !== undefined) config[s.key] = convert(s, flagValue, `flag --${s.flag}`);
    else if (envValue !== undefined) config[s.key] = convert(s, envValue, `env ${s.env}`);
    else if (s.key in fromFile) {
      config[s.key] = convert(s, fromFile[s.key], `config file ${configFile}`);
    } else config[s.key] = s.default;
  }
  // Without the scaling flags the pool has a fixed size: --pool-size.
  config.minWorkers ??= config.maxWorkers !== undefined
    ? Math.min(config.poolSize as number, config.maxWorkers as number)
    : config.poolSize;
  config.maxWorkers ??= config.minWorkers;
  const result = config as unknown as Config;
  if (result.minWorkers > result.maxWorkers) {
    throw new ConfigError(
      `invalid minWorkers: ${result.minWorkers} exceeds maxWorkers ${result.maxWorkers}`,
    );
  }
  if (result.packageIndexUrl !== undefined && !URL.canParse(result.packageIndexUrl)) {
    throw new ConfigError(`invalid packageIndexUrl: ${result.packageIndexUrl} is not a URL`);
  }
  if (result.execTimeout > result.maxExecTimeout) {
    throw new ConfigError(
      `invalid execTimeout: ${result.execTimeout} s exceeds maxExecTimeout ${result.maxExecTimeout} s`,
    );
  }
  checkNats(result);
  checkHttp(result);
  return { config: Object.freeze(result), configFile };
}

/** `--http`'s address is valid, and a bind past loopback has tokens or was said to be insecure. */
function checkHttp(config: Config): void {
  for (const origin of config.httpCors) {
    if (origin !== "*" && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(
        `invalid httpCors: ${
          JSON.stringify(origin)
        } is not an origin such as https://app.example.com, or *`,
      );
    }
  }
  if (config.http === undefined) return;
  let address;
  try {
    address = parseListenAddress(config.http);
  } catch (error) {
    throw new ConfigError(`invalid http: ${(error as Error).message}`);
  }
  if (!address.loopback && config.httpTokenFile === undefined && !config.httpInsecure) {
    throw new ConfigError(
      `refusing to serve HTTP on ${config.http} without --http-token-file: anyone who can reach ` +
        "that address could run code in the pool. Give a token file (PYODIDE_HTTP_TOKEN_FILE), " +
        "bind a loopback address (127.0.0.1), or pass --http-insecure to accept the risk",
    );
  }
}
