import assert from "node:assert/strict";
import { type Frame, LineWriter, readFrames } from "../lib/framing.ts";

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

Deno.test("LineWriter reports a failed stream once and drops later lines", async () => {
  const errors: unknown[] = [];
  const writer = new LineWriter(
    new WritableStream({
      write: () => {
        throw new Error("broken pipe");
      },
    }),
    (e) => errors.push(e),
  );
  writer.write("a");
  await writer.flushed();
  writer.write("b");
  await writer.flushed();
  assert.equal(errors.length, 1);
});
