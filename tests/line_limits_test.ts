/**
 * One line limit both ways (`--max-line-bytes`): what the pool returns, it accepts back. A
 * session's state round-trips under the limit; past it, the request that would return it is
 * answered with its own id and an error that says why, and the pool serves on.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";

const MiB = 1 << 20;
const LINE = 8 * MiB;

let shared: Promise<Supervisor> | undefined;
const pool = () =>
  shared ??= Supervisor.start({
    args: ["--pool-size", "1", "--max-line-bytes", String(LINE)],
    // The client side reads whatever comes, so that an oversized answer would show.
    maxLineBytes: 64 * MiB,
  });

Deno.test("a session's state returned under the line limit is accepted back", async () => {
  const sup = await pool();
  const first = await sup.execute({
    code: "blob = b'z' * (4 << 20)",
    return_session: true,
  });
  assert.equal(first.status, "ok", JSON.stringify(first.error));
  const state = first.session_bytes!;
  assert.ok(state.length > 4 * MiB && state.length < LINE, String(state.length));
  const second = await sup.execute({ code: "len(blob)", session_bytes: state });
  assert.equal(second.status, "ok", JSON.stringify(second.error));
  assert.equal(second.result, String(4 * MiB));
});

Deno.test("a session's state past the line limit is refused on the request that made it", async () => {
  const sup = await pool();
  const response = await sup.request(
    "execute",
    { code: "blob = b'z' * (7 << 20)", return_session: true },
    "too-big",
  );
  assert.equal(response.id, "too-big");
  assert.equal(response.error?.code, -32005, JSON.stringify(response).slice(0, 500));
  assert.match(response.error!.message, /over the 8388608-byte line limit/);
  assert.match(response.error!.message, /--max-line-bytes/);
  const data = response.error!.data as {
    bytes: number;
    max_answer_bytes: number;
    largest_fields: { field: string; chars: number }[];
  };
  assert.ok(data.bytes > LINE, String(data.bytes));
  assert.equal(data.max_answer_bytes, LINE);
  assert.equal(data.largest_fields[0].field, "session_bytes");
  // The code ran; the answer is counted as refused, not as its run's status.
  assert.equal((response.error!.data as { status: string }).status, "ok");
  assert.equal((await sup.stats()).requests.answer_too_large, 1);
  // The same pool serves the next request.
  assert.equal((await sup.execute({ code: "6 * 7" })).result, "42");
});

Deno.test("returned files stay within the line limit: past 3/8 of it, they come without content", async () => {
  const sup = await pool();
  const r = await sup.execute({
    code: "for n in range(4):\n    open(f'f{n}', 'wb').write(b'x' * 1_000_000)",
  });
  assert.equal(r.status, "ok", JSON.stringify(r.error));
  const kept = r.files.filter((f) => f.content_b64 !== null);
  // 3 MiB of the 8 MiB line: three files of a million bytes keep their contents, the fourth does not.
  assert.equal(r.files.length, 4);
  assert.equal(kept.length, 3);
});

Deno.test("line limits: the shared pool closes", async () => {
  await (await pool()).close();
});
