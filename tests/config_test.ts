import assert from "node:assert/strict";
import { type Config, ConfigError, loadConfig } from "../supervisor/config.ts";

function config(argv: string[], env: Record<string, string> = {}): Config {
  const result = loadConfig(argv, env);
  if (!("config" in result)) throw new Error("expected a config");
  return result.config;
}

Deno.test("defaults match the design card", () => {
  const c = config([]);
  assert.equal(c.poolSize, 3);
  assert.equal(c.workerRequestLimit, 1000);
  assert.equal(c.healthCheckInterval, 30);
  assert.equal(c.execTimeout, 30);
  assert.equal(c.initTimeout, 90);
  assert.equal(c.maxQueue, 100);
  assert.equal(c.usePool, true);
  assert.equal(c.maxLineBytes, 16 << 20);
});

Deno.test("flags override env, which overrides the config file", () => {
  const file = Deno.makeTempFileSync({ suffix: ".jsonc" });
  Deno.writeTextFileSync(
    file,
    `{
      // comments are allowed
      "poolSize": 5,
      "maxQueue": 7,
      "execTimeout": 12,
    }`,
  );
  const c = config(["--config", file, "--pool-size", "2"], {
    PYODIDE_POOL_SIZE: "4",
    PYODIDE_MAX_QUEUE: "9",
  });
  assert.equal(c.poolSize, 2);
  assert.equal(c.maxQueue, 9);
  assert.equal(c.execTimeout, 12);
  Deno.removeSync(file);
});

Deno.test("boolean settings accept a bare flag and =false", () => {
  assert.equal(config(["--use-pool=false"]).usePool, false);
  assert.equal(config(["--allow-shutdown"]).allowShutdown, true);
  assert.equal(config(["--mcp"]).mcp, true);
  assert.equal(config([], { PYODIDE_MCP: "true" }).mcp, true);
  assert.equal(config([]).mcp, false);
  assert.equal(config([], { PYODIDE_USE_POOL: "false" }).usePool, false);
});

Deno.test("invalid values name the setting and the source", () => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["--pool-size", "0"], {}, /poolSize \(flag --pool-size\).*>= 1/],
    [["--pool-size", "two"], {}, /poolSize.*not an integer/],
    [[], { PYODIDE_EXEC_TIMEOUT: "-5" }, /execTimeout \(env PYODIDE_EXEC_TIMEOUT\)/],
    [[], { PYODIDE_USE_POOL: "maybe" }, /usePool.*true or false/],
    [["--log-level", "loud"], {}, /logLevel.*one of debug, info, warning, error/],
    [["--no-such-flag"], {}, /no-such-flag/],
    [["--exec-timeout", "900"], {}, /execTimeout: 900 s exceeds maxExecTimeout/],
  ];
  for (const [argv, env, pattern] of cases) {
    assert.throws(() => loadConfig(argv, env), (e: Error) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, pattern);
      return true;
    });
  }
});

Deno.test("a config file with an unknown key or bad JSONC is rejected", () => {
  const file = Deno.makeTempFileSync({ suffix: ".jsonc" });
  Deno.writeTextFileSync(file, '{"poolSzie": 2}');
  assert.throws(() => loadConfig(["--config", file], {}), /unknown setting "poolSzie"/);
  Deno.writeTextFileSync(file, '{"poolSize": }');
  assert.throws(() => loadConfig(["--config", file], {}), /not valid JSONC/);
  Deno.removeSync(file);
  assert.throws(() => loadConfig(["--config", file], {}), /cannot read config file/);
});

Deno.test("--help lists every setting with its env name", () => {
  const result = loadConfig(["--help"], {});
  assert.ok("help" in result);
  for (const name of ["--pool-size", "PYODIDE_POOL_SIZE", "PYODIDE_USE_POOL", "--config"]) {
    assert.ok(result.help.includes(name), name);
  }
  // The choices of the enum settings.
  assert.match(result.help, /--log-format VALUE +log line format on stderr: text, or json/);
  assert.match(
    result.help,
    /--log-level VALUE +log level on stderr: debug, info, warning or error/,
  );
});

Deno.test("the pool scales between min and max workers, a fixed pool size without them", () => {
  const fixed = config(["--pool-size", "4"]);
  assert.deepEqual([fixed.minWorkers, fixed.maxWorkers], [4, 4]);
  const scaling = config(["--min-workers", "1", "--max-workers", "5"]);
  assert.deepEqual([scaling.minWorkers, scaling.maxWorkers], [1, 5]);
  const upTo = config(["--max-workers", "2"], { PYODIDE_POOL_SIZE: "3" });
  assert.deepEqual([upTo.minWorkers, upTo.maxWorkers], [2, 2]);
  assert.throws(
    () => config(["--min-workers", "3", "--max-workers", "2"]),
    (e) => e instanceof ConfigError && /minWorkers: 3 exceeds maxWorkers 2/.test(e.message),
  );
  assert.throws(() => config(["--min-workers", "0"]), ConfigError);
});

Deno.test("the NATS settings: a URL list, a service name, and nothing of NATS without --nats", () => {
  const c = config(["--nats", "nats://a:4222,tls://b:4222", "--gateway"]);
  assert.deepEqual(c.nats, ["nats://a:4222", "tls://b:4222"]);
  assert.equal(c.natsService, "pyodide_pool");
  assert.equal(c.gateway, true);
  assert.equal(config([], { PYODIDE_NATS_URL: "127.0.0.1:4222" }).nats[0], "127.0.0.1:4222");
  assert.deepEqual(config([]).nats, []);
  const cases: [string[], RegExp][] = [
    [["--gateway"], /invalid gateway: it needs a NATS server \(--nats URL/],
    [["--nats-token", "secret"], /invalid natsToken: it needs a NATS server/],
    [["--nats", "http://a:4222"], /invalid nats: "http:\/\/a:4222" is not a NATS URL/],
    [["--nats", "nats://a:4222", "--nats-service", "a.b"], /invalid natsService: "a.b"/],
    [
      ["--nats", "nats://a:4222", "--nats-creds", "/no/such/file"],
      /invalid natsCreds: cannot read/,
    ],
    [
      ["--nats", "nats://a:4222", "--gateway", "--metrics-port", "0"],
      /invalid metricsPort: a gateway has no workers/,
    ],
  ];
  for (const [argv, pattern] of cases) {
    assert.throws(() => loadConfig(argv, {}), (e: Error) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, pattern);
      return true;
    });
  }
});

Deno.test("--http: HOST:PORT, and a public address needs a token file or --http-insecure", () => {
  assert.equal(config(["--http", "127.0.0.1:8080"]).http, "127.0.0.1:8080");
  assert.equal(config([], { PYODIDE_HTTP: "localhost:0" }).http, "localhost:0");
  assert.equal(config(["--http", "[::1]:80"]).httpMaxConnections, 256);
  for (const bad of ["8080", "127.0.0.1", "127.0.0.1:99999", "example.com:80", "300.1.1.1:80"]) {
    assert.throws(() => config(["--http", bad]), ConfigError, bad);
  }
  assert.throws(
    () => config(["--http", "0.0.0.0:8080"]),
    /refusing to serve HTTP on 0\.0\.0\.0:8080 without --http-token-file/,
  );
  assert.equal(config(["--http", "0.0.0.0:8080", "--http-insecure"]).httpInsecure, true);
  assert.equal(
    config(["--http", "[::]:8080"], { PYODIDE_HTTP_TOKEN_FILE: "/etc/tokens" }).httpTokenFile,
    "/etc/tokens",
  );
  assert.deepEqual(
    config(["--http-cors", "https://a.example,http://b.example:8080"]).httpCors,
    ["https://a.example", "http://b.example:8080"],
  );
  assert.throws(() => config(["--http", "127.0.0.1:0", "--http-cors", "a.example"]), /httpCors/);
});
