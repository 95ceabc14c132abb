/**
 * scripts/fetch_packages.ts against a package index served on loopback from wheels the test
 * builds: dependencies come along, hashes are checked, and the mirror loads in a real pool.
 */

import assert from "node:assert/strict";
import { Supervisor } from "./helpers/supervisor_process.ts";
import { buildPackageDirectory } from "./helpers/packages.ts";

function serve(directory: string) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const name = new URL(req.url).pathname.slice(1);
    try {
      return new Response(await Deno.readFile(`${directory}/${name}`));
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { server, url: `http://127.0.0.1:${server.addr.port}/` };
}

async function fetchScript(index: string, out: string, ...names: string[]) {
  return await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/fetch_packages.ts", "--index", index, "--out", out, ...names],
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("fetch_packages mirrors packages with their dependencies, checked by sha256", async () => {
  const source = await buildPackageDirectory();
  const { server, url } = serve(source);
  const out = await Deno.makeTempDir();
  try {
    const ok = await fetchScript(url, out, "standin");
    assert.equal(ok.code, 0, new TextDecoder().decode(ok.stderr));
    const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    assert.deepEqual(files, [
      "helperpkg-1.0.0-py3-none-any.whl",
      "pyodide-lock.json",
      "standin-1.0.0-py3-none-any.whl",
    ]);
    const lock = JSON.parse(await Deno.readTextFile(`${out}/pyodide-lock.json`));
    assert.deepEqual(Object.keys(lock.packages).sort(), ["helperpkg", "standin"]);

    const again = await fetchScript(url, out, "standin");
    assert.match(new TextDecoder().decode(again.stderr), /up to date/);

    const unknown = await fetchScript(url, out, "nosuch");
    assert.equal(unknown.code, 1);
    assert.match(new TextDecoder().decode(unknown.stderr), /unknown package nosuch/);

    // A file that does not match its hash is refused.
    await Deno.writeFile(`${source}/helperpkg-1.0.0-py3-none-any.whl`, new Uint8Array([1, 2, 3]));
    const tampered = await fetchScript(url, await Deno.makeTempDir(), "helperpkg");
    assert.equal(tampered.code, 1);
    assert.match(new TextDecoder().decode(tampered.stderr), /sha256 mismatch/);

    // The mirror is a package directory a pool can load from; --preload loads at start.
    const pool = await Supervisor.start({
      args: ["--pool-size", "1", "--packages-dir", out, "--preload", "standin"],
    });
    const listing = await pool.call("packages") as { loaded: string[] };
    assert.deepEqual(listing.loaded, ["standin"]);
    const r = await pool.execute({ code: "import standin\nstandin.VALUE" });
    assert.equal(r.result, "42", JSON.stringify(r.error));
    await pool.close();
  } finally {
    await server.shutdown();
    await Deno.remove(source, { recursive: true });
    await Deno.remove(out, { recursive: true });
  }
});
