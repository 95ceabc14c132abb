/**
 * The HTTP service's front door at the TCP level: it accepts the connections, caps how many are
 * open, and closes those that are too slow to send a request's headers (slowloris) or that do not
 * read what is sent to them. `Deno.serve` has neither a connection cap nor a header timeout
 * (measured on 2.9.6: a connection that sent half a request line was still open after 40 s), and
 * it cannot serve a socket it did not accept. So the gate accepts each client connection itself
 * and relays its bytes, both ways, over a loopback connection to the `Deno.serve` that speaks HTTP
 * (server.ts). The relay costs about 20 us per request (measured, keep-alive).
 *
 * The HTTP server tells the gate, through `opened`, when a request's headers were read (the
 * handler was called) and when its answer was sent: the header deadline runs only while the
 * connection has no request in hand, from its opening or from its last answer.
 *
 * @module
 */

import { logger } from "../../lib/logging.ts";

const log = logger("http");

export interface GateOptions {
  /** Where clients connect. */
  listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  /** The loopback port of the HTTP server the gate relays to. */
  upstreamPort: number;
  maxConnections: number;
  /**
   * Time a connection may take to send a request's headers, from its opening or last answer; a
   * connection that sent part of a request by then gets a 408, one that sent nothing is closed.
   */
  headerTimeoutMs: number;
  /**
   * Time a write to the client may wait for it to take the bytes (its window full: it does not
   * read); past it the connection is closed, and the answers it held are dropped.
   */
  sendTimeoutMs: number;
  /** The canned answer to a connection past the cap (a whole HTTP response). */
  overCapacity: (open: number) => string;
  /** The canned answer to a connection too slow to send its headers. */
  headerTimedOut: () => string;
}

/** One client connection and its relay. */
export class GatedConnection {
  /** Requests whose headers were read and whose answers are not yet sent. */
  #active = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closeAfterAnswer = false;
  #closed = false;
  /** Bytes relayed towards the client, mid-write. */
  #relayingToClient = false;
  /** Runs while a write to the client waits: past it, the client is taken not to read. */
  #sendTimer: ReturnType<typeof setTimeout> | undefined;
  /** Closed for want of headers: the relay writes the 408 once the server's side ended. */
  #timedOut = false;
  /** The client sent bytes since the connection opened or since its last answer. */
  #heardSinceAnswer = false;
  #gone = new AbortController();

  /** The local port of the relay's connection to the HTTP server: how the server names it. */
  readonly upstreamPort: number;
  readonly remote: string;

  constructor(
    readonly client: Deno.TcpConn,
    readonly upstream: Deno.TcpConn,
    private readonly gate: ConnectionGate,
  ) {
    // Read now: a closed connection's addresses can no longer be asked for.
    this.upstreamPort = upstream.localAddr.port;
    const { hostname, port } = client.remoteAddr;
    this.remote = `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
  }

  /**
   * Aborted when the client's side ends (it closed or reset the connection) or the connection
   * closes: a request still being served then has no one to answer.
   */
  get gone(): AbortSignal {
    return this.#gone.signal;
  }

  /** A request's headers were read: its handler runs. */
  requestStarted(): void {
    this.#active++;
    clearTimeout(this.#timer);
  }

  /** Its answer was sent (or failed): the next request's headers are due within the deadline. */
  requestEnded(): void {
    this.#active--;
    if (this.#active > 0 || this.#closed) return;
    if (this.#closeAfterAnswer) return this.#finish();
    this.#armHeaderDeadline();
  }

  /**
   * Closes the connection once its answers are sent (a body refused or too slow: the rest of
   * it must not be read as the next request).
   */
  closeAfterAnswer(): void {
    this.#closeAfterAnswer = true;
  }

  /**
   * Relays until the HTTP server's side ends (it closes after a `Connection: close`, an
   * answer the gate asked to be the last, or the client's own end), then closes both.
   */
  async relay(): Promise<void> {
    this.#armHeaderDeadline();
    // The client's bytes go up until it ends or the connection closes; its end is passed on,
    // and the HTTP server answers what it has and closes.
    pump(this.client, this.upstream, () => this.#heardSinceAnswer = true).then(() => {
      this.#gone.abort();
      closeWriteQuietly(this.upstream);
    });
    await pump(this.upstream, this.client, (writing) => {
      this.#relayingToClient = writing;
      clearTimeout(this.#sendTimer);
      if (writing) {
        this.#sendTimer = setTimeout(() => this.#sendTooSlow(), this.gate.options.sendTimeoutMs);
      }
    });
    if (this.#timedOut) {
      await writeAll(this.client, new TextEncoder().encode(this.gate.options.headerTimedOut()))
        .catch(() => {});
    }
    this.#close();
  }

  #armHeaderDeadline(): void {
    clearTimeout(this.#timer);
    this.#heardSinceAnswer = false;
    this.#timer = setTimeout(() => this.#headersTooSlow(), this.gate.options.headerTimeoutMs);
  }

  #headersTooSlow(): void {
    if (this.#active > 0 || this.#closed) return;
    // An answer's last bytes still on their way: look again once they are out.
    if (this.#relayingToClient) return this.#armHeaderDeadline();
    log.debug("closing {remote}: no request headers within {ms} ms", {
      remote: this.remote,
      ms: this.gate.options.headerTimeoutMs,
    });
    // The HTTP server is idle on this connection: cut it off, so that it writes nothing more;
    // the relay then writes the 408 and closes (relay()). A kept-alive connection that sent
    // nothing since its last answer is only idle: it is closed without a word, since a 408 could
    // cross a request the client sends just then and be taken for its answer.
    this.#timedOut = this.#heardSinceAnswer;
    closeQuietly(this.upstream);
  }

  /**
   * The client took none of a write for the send timeout: it does not read its answers, and
   * the HTTP server would hold them (and their memory) for as long as it keeps the connection.
   */
  #sendTooSlow(): void {
    log.debug("closing {remote}: it took no bytes of its answer within {ms} ms", {
      remote: this.remote,
      ms: this.gate.options.sendTimeoutMs,
    });
    this.#close();
  }

  /** Ends the HTTP server's side: it closes, the relay writes its last bytes, then ends. */
  #finish(): void {
    closeWriteQuietly(this.upstream);
  }

  #close(): void {
    this.#closed = true;
    this.#gone.abort();
    clearTimeout(this.#timer);
    clearTimeout(this.#sendTimer);
    closeQuietly(this.client);
    closeQuietly(this.upstream);
    this.gate.forget(this);
  }

  /** Closes it now, whatever it is doing (the service stops). */
  abort(): void {
    this.#close();
  }
}

/** Accepts client connections and relays them to the HTTP server, within the limits. */
export class ConnectionGate {
  /** Open connections by the local port of their relay to the HTTP server. */
  #byUpstreamPort = new Map<number, GatedConnection>();
  /** Waiting for `closed`. */
  #whenClosed: (() => void)[] = [];
  /** Connections admitted whose relay to the HTTP server is still being opened. */
  #admitting = 0;
  #accepting: Promise<void> | undefined;

  constructor(readonly options: GateOptions) {}

  /** Connections open now (those being admitted count: a burst must not pass the cap). */
  get open(): number {
    return this.#byUpstreamPort.size + this.#admitting;
  }

  /** The connection an HTTP request came over, by the address the HTTP server saw. */
  connectionOf(remote: Deno.NetAddr): GatedConnection | undefined {
    return remote.hostname === "127.0.0.1" ? this.#byUpstreamPort.get(remote.port) : undefined;
  }

  start(): void {
    this.#accepting ??= this.#accept();
  }

  /** Stops accepting; the connections open go on until `abortAll`. */
  async stopAccepting(): Promise<void> {
    try {
      this.options.listener.close();
    } catch { /* already closed */ }
    await this.#accepting;
  }

  /** Resolves once no connection is open (each ends when the HTTP server's side ended). */
  closed(): Promise<void> {
    if (this.#byUpstreamPort.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#whenClosed.push(resolve));
  }

  /** Closes every connection still open. */
  abortAll(): void {
    for (const connection of [...this.#byUpstreamPort.values()]) connection.abort();
  }

  forget(connection: GatedConnection): void {
    const port = connection.upstreamPort;
    if (this.#byUpstreamPort.get(port) === connection) this.#byUpstreamPort.delete(port);
    if (this.#byUpstreamPort.size === 0) this.#whenClosed.splice(0).forEach((resolve) => resolve());
  }

  async #accept(): Promise<void> {
    const { listener } = this.options;
    for (;;) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) {
          return;
        }
        // Out of file descriptors and the like: this connection is lost, the next may not be.
        log.warn("HTTP accept failed: {error}", { error: String(error) });
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      this.#admit(client).catch((error) => {
        log.error("HTTP connection failed: {error}", { error: String(error) });
        closeQuietly(client);
      });
    }
  }

  async #admit(client: Deno.TcpConn): Promise<void> {
    if (this.open >= this.options.maxConnections) {
      log.debug("refused a connection: {open} open, the most allowed", { open: this.open });
      return refuse(client, this.options.overCapacity(this.open));
    }
    let upstream: Deno.TcpConn;
    // The slot is taken before the wait: connections accepted meanwhile see it taken.
    this.#admitting++;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.options.upstreamPort });
    } catch (error) {
      log.warn("HTTP relay failed to connect: {error}", { error: String(error) });
      closeQuietly(client);
      return;
    } finally {
      this.#admitting--;
    }
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const connection = new GatedConnection(client, upstream, this);
    this.#byUpstreamPort.set(connection.upstreamPort, connection);
    await connection.relay();
  }
}

/**
 * Answers a connection the gate will not serve, and closes it once the client stopped sending
 * or after a second: closing with unread bytes would reset the connection and lose the answer.
 */
async function refuse(client: Deno.TcpConn, answer: string): Promise<void> {
  try {
    await writeAll(client, new TextEncoder().encode(answer));
    await client.closeWrite();
    const sink = new Uint8Array(16 * 1024);
    const deadline = Date.now() + 1000;
    let received = 0;
    while (Date.now() < deadline && received < 1 << 20) {
      const timer = new Promise<null>((resolve) => setTimeout(() => resolve(null), 200));
      const n = await Promise.race([client.read(sink), timer]);
      if (n === null) break;
      received += n;
    }
  } catch {
    // The client went first.
  } finally {
    closeQuietly(client);
  }
}

/**
 * Copies `from` into `to` until `from` ends or either side fails; `writing(true)` before each
 * write (each part of a chunk `to` takes), `writing(false)` once a chunk is written.
 */
async function pump(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  writing: (busy: boolean) => void,
): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      let bytes = buffer.subarray(0, n);
      while (bytes.length > 0) {
        writing(true);
        bytes = bytes.subarray(await to.write(bytes));
      }
      writing(false);
    }
  } catch {
    // Either side closed or reset.
  }
  writing(false);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  while (bytes.length > 0) bytes = bytes.subarray(await conn.write(bytes));
}

function closeWriteQuietly(conn: Deno.TcpConn): void {
  try {
    conn.closeWrite().catch(() => {/* already closed */});
  } catch { /* already closed */ }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}
