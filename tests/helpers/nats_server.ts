/**
 * A real nats-server for the tests and the NATS benchmark (no mock): started on a free port on
 * 127.0.0.1, stopped, restarted on the same port, and the supervisors around it, as instances
 * (`--nats URL`) and gateways (`--nats URL --gateway`). nats-server is the Debian package (.ci/run
 * installs it).
 *
 * @module
 */

import { Supervisor } from "./supervisor_process.ts";

/**
 * The nats-server binary: $NATS_SERVER, else nats-server on PATH, else where the Debian package
 * puts it (/usr/sbin, which a user's PATH may lack).
 */
const BINARY = Deno.env.get("NATS_SERVER") ??
  (onPath("nats-server") ? "nats-server" : "/usr/sbin/nats-server");

function onPath(name: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/${name}`).isFile;
    } catch {
      return false;
    }
  });
}

/** A free TCP port on 127.0.0.1 (free a moment ago). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

export interface NatsServerOptions {
  /** The largest message the server takes (its max_payload; nats-server's default is 1 MB). */
  maxPayload?: number;
}

/**
 * @example
 * ```ts ignore
 * import { NatsServer } from "./nats_server.ts";
 * await using server = await NatsServer.start();
 * console.log(server.url); // nats://127.0.0.1:41234
 * ```
 */
export class NatsServer {
  #process: Deno.ChildProcess | undefined;
  #configFile: string | undefined;
  #logRead: Promise<void> = Promise.resolve();
  log = "";

  private constructor(readonly port: number, private readonly options: NatsServerOptions) {}

  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    const server = new NatsServer(freePort(), options);
    await server.#spawn();
    return server;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.#process?.pid;
  }

  async #spawn(): Promise<void> {
    const args = ["-a", "127.0.0.1", "-p", String(this.port)];
    if (this.options.maxPayload !== undefined) {
      this.#configFile ??= await Deno.makeTempFile({ suffix: ".conf" });
      await Deno.writeTextFile(this.#configFile, `max_payload: ${this.options.maxPayload}\n`);
      args.push("-c", this.#configFile);
    }
    let process: Deno.ChildProcess;
    try {
      process = new Deno.Command(BINARY, { args, stdout: "null", stderr: "piped" }).spawn();
    } catch (error) {
      throw new Error(
        `cannot start ${BINARY} (${(error as Error).message}): install it with ` +
          "`apt-get install nats-server` (.ci/run does), or set NATS_SERVER",
      );
    }
    this.#process = process;
    this.#logRead = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of process.stderr) this.log += decoder.decode(chunk);
    })();
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const connection = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
        connection.close();
        return;
      } catch {
        if (Date.now() > deadline) {
          throw new Error(`nats-server did not listen on ${this.port}: ${this.log}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  /** Stops the server (SIGKILL: clients see the connection drop, as in a crash). */
  async stop(): Promise<void> {
    const process = this.#process;
    if (process === undefined) return;
    this.#process = undefined;
    try {
      process.kill("SIGKILL");
    } catch {
      // Gone already.
    }
    await process.status;
    await this.#logRead;
  }

  /** Starts it again on the same port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.#spawn();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    if (this.#configFile) await Deno.remove(this.#configFile).catch(() => {});
  }
}

/** An instance of the service on `server`: a supervisor with `--nats`, its workers ready. */
export async function startInstance(
  server: NatsServer,
  { poolSize = 1, args = [] }: { poolSize?: number; args?: string[] } = {},
): Promise<Supervisor> {
  return await Supervisor.start({
    args: [
      "--nats",
      server.url,
      "--pool-size",
      String(poolSize),
      // Its acceptances, for the tests' count of who ran what.
      "--log-level",
      "debug",
      ...args,
    ],
    waitForWorkers: poolSize,
  });
}

/**
 * A gateway to the service on `server`, once it sees `workers` ready workers among the
 * instances.
 */
export async function startGateway(
  server: NatsServer,
  { workers = 0, args = [] }: { workers?: number; args?: string[] } = {},
): Promise<Supervisor> {
  return await Supervisor.start({
    args: ["--nats", server.url, "--gateway", ...args],
    waitForWorkers: workers,
  });
}

/** The instance's id, from its `health`. */
export async function instanceIdOf(instance: Supervisor): Promise<string> {
  const id = (await instance.health()).instance_id;
  if (id === undefined) throw new Error("not an instance: its health has no instance_id");
  return id;
}

/** Stops a supervisor with SIGTERM (an instance outlives its stdin) and waits for its exit. */
export async function stopSupervisor(supervisor: Supervisor): Promise<Deno.CommandStatus> {
  try {
    supervisor.process.kill("SIGTERM");
  } catch {
    // Gone already.
  }
  const status = await supervisor.process.status;
  await supervisor.stdoutClosed;
  return status;
}

/**
 * The requests an instance accepted, from its debug log: each request's client id at the
 * gateway, in the order it took them. At-most-once means no client id appears twice, in one
 * instance's log or across them.
 */
export function acceptedClientIds(instance: Supervisor): string[] {
  const accepted = /accepted [A-Za-z0-9_-]+ \(client id (.*?)\) from the /g;
  return [...instance.stderr.matchAll(accepted)].map((match) => match[1]);
}
