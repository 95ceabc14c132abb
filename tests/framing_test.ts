import assert from "node:assert/strict";
import { blockingWriter, chunksOf, type Frame, LineWriter, readFrames } from "../lib/framing.ts";

const encoder = new TextEncoder();

async function frames(chunks: (string | Uint8Array)[], max = 1024): Promise<Frame[]> {
  const bytes = chunks.map((c) => typeof c === "string" ? encoder.encode(c) : c);
  const out: Frame[] = [];
  for await (const frame of readFrames(ReadableStream.from(bytes), max)) out.push(frame);
  return out;
}

const line = (text: string): Frame => ({ kind: "line", text });

Deno.test("a line split across reads is joined", async () => {
  assert.deepEqual(await frames(['{"a":', "1}", "\n"]), [line('{"a":1}')]);
});

Deno.test("several lines in one read are split", async () => {
  assert.deepEqual(await frames(["a\nb\nc\n"]), [line("a"), line("b"), line("c")]);
});

Deno.test("CRLF is accepted and blank lines are skipped", async () => {
  assert.deepEqual(await frames(["a\r\n\r\n\nb\r\n"]), [line("a"), line("b")]);
});

Deno.test("a multibyte character split across reads is intact", async () => {
  const bytes = encoder.encode('"héllo €"\n');
  const cut = bytes.indexOf(0xe2) + 1; // inside the three bytes of €
  assert.deepEqual(await frames([bytes.slice(0, 3), bytes.slice(3, cut), bytes.slice(cut)]), [
    line('"héllo €"'),
  ]);
});

Deno.test("a final line without newline is returned", async () => {
  assert.deepEqual(await frames(["a\nb"]), [line("a"), line("b")]);
});

Deno.test("an oversized line is reported and the next line still read", async () => {
  const big = "x".repeat(50);
  assert.deepEqual(await frames([`${big.slice(0, 20)}`, `${big.slice(20)}\nok\n`], 10), [
    { kind: "oversized", bytes: 50 },
    line("ok"),
  ]);
});

Deno.test("a line exactly at the limit passes, CRLF included", async () => {
  assert.deepEqual(await frames(["0123456789\r\n"], 10), [line("0123456789")]);
  assert.deepEqual(await frames(["01234567890\n"], 10), [{ kind: "oversized", bytes: 11 }]);
});

Deno.test("a 10 MiB line is framed whole", async () => {
  const big = "y".repeat(10 << 20);
  const chunks: string[] = [];
  for (let i = 0; i < big.length; i += 65536) chunks.push(big.slice(i, i + 65536));
  const out = await frames([...chunks, "\n"], 16 << 20);
  assert.equal(out.length, 1);
  assert.equal(out[0].kind === "line" && out[0].text.length, 10 << 20);
});

Deno.test("LineWriter coalesces lines written in one turn into one write", async () => {
  const writes: string[] = [];
  const writer = new LineWriter(
    new WritableStream({ write: (c) => void writes.push(new TextDecoder().decode(c)) }),
  );
  writer.write("a");
  writer.write("b");
  await writer.flushed();
  writer.write("c");
  await writer.flushed();
  assert.deepEqual(writes, ["a\nb\n", "c\n"]);
});

/** Writes two lines to a sink whose writes all fail; returns the errors and the write calls. */
async function writeToBrokenSink(
  sinkOf: (fail: () => never) => ConstructorParameters<typeof LineWriter>[0],
): Promise<{ errors: number; calls: number }> {
  let errors = 0;
  let calls = 0;
  const writer = new LineWriter(
    sinkOf(() => {
      calls++;
      throw new Error("broken pipe");
    }),
    () => errors++,
  );
  writer.write("a");
  await writer.flushed();
  writer.write("b");
  await writer.flushed();
  return { errors, calls };
}

Deno.test("LineWriter reports a failed stream once and drops later lines", async () => {
  const result = await writeToBrokenSink((fail) => new WritableStream({ write: fail }));
  assert.deepEqual(result, { errors: 1, calls: 1 });
});

Deno.test("LineWriter over a blocking writer reports a failed write once", async () => {
  const result = await writeToBrokenSink((fail) => blockingWriter({ writeSync: fail }));
  assert.deepEqual(result, { errors: 1, calls: 1 });
});

Deno.test("chunksOf reads through a reused buffer, and readFrames keeps split lines intact", async () => {
  // A reader that hands out a few bytes per read, as a pipe may.
  const bytes = encoder.encode('{"a":1}\n{"bb":22}\n{"c"');
  let offset = 0;
  const buffers = new Set<ArrayBufferLike>();
  const source = {
    read(buffer: Uint8Array): Promise<number | null> {
      buffers.add(buffer.buffer);
      if (offset >= bytes.length) return Promise.resolve(null);
      const n = Math.min(5, bytes.length - offset, buffer.length);
      buffer.set(bytes.subarray(offset, offset + n));
      offset += n;
      return Promise.resolve(n);
    },
  };
  const out: Frame[] = [];
  for await (const frame of readFrames(chunksOf(source, 8), 1024)) out.push(frame);
  assert.deepEqual(out, [line('{"a":1}'), line('{"bb":22}'), line('{"c"')]);
  assert.equal(buffers.size, 1);
});

Deno.test("LineWriter writes through a raw writer until every byte is taken, and counts what waits", async () => {
  const taken: number[] = [];
  // Takes at most 3 bytes per call, like a pipe write that returns short.
  const sink = {
    write: (bytes: Uint8Array) => {
      taken.push(...bytes.subarray(0, 3));
      return Promise.resolve(Math.min(3, bytes.length));
    },
  };
  const writer = new LineWriter(sink);
  writer.write("hello");
  writer.write("world");
  assert.equal(writer.unwritten, 12);
  await writer.flushed();
  assert.equal(writer.unwritten, 0);
  assert.equal(new TextDecoder().decode(new Uint8Array(taken)), "hello\nworld\n");
});

Deno.test("an oversized line carries its top-level id, found as it was discarded", async () => {
  const code = "x".repeat(40) + '\\"id\\": 1';
  const request = `{"jsonrpc":"2.0","method":"execute","params":{"code":"${code}"},"id":"r-1"}`;
  const bytes = encoder.encode(request);
  // Cut in the middle of the escapes, of the params and of the id.
  const cuts = [10, 45, 52, bytes.length - 3];
  const chunks = cuts.map((cut, i) => bytes.slice(i === 0 ? 0 : cuts[i - 1], cut));
  chunks.push(bytes.slice(cuts.at(-1)), encoder.encode("\nok\n"));
  assert.deepEqual(await frames(chunks, 20), [
    { kind: "oversized", bytes: bytes.length, id: "r-1" },
    line("ok"),
  ]);
});

Deno.test("an oversized line read whole is scanned too; a nested id or a batch gives none", async () => {
  // 11 bytes for a limit of 10: kept whole (the slack for `\r`), scanned at once.
  assert.deepEqual(await frames(['{"id":1234}\n'], 10), [
    { kind: "oversized", bytes: 11, id: 1234 },
  ]);
  assert.deepEqual(await frames(['{"params":{"id":1},"x":"long enough"}\n'], 10), [
    { kind: "oversized", bytes: 37 },
  ]);
  assert.deepEqual(await frames(['[{"jsonrpc":"2.0","id":1}]\n'], 10), [
    { kind: "oversized", bytes: 26 },
  ]);
});
