/**
 * Mirrors Pyodide packages, with their dependencies, from a package index (by default the
 * Pyodide CDN for the installed Pyodide) into a local directory that PYODIDE_PACKAGES_DIR
 * can name, for machines without network. Every file is checked against the sha256 in the
 * index's pyodide-lock.json; the directory gets a lock file naming just what it holds.
 *
 *     deno run --allow-net --allow-read --allow-write scripts/fetch_packages.ts \
 *       --out ./packages [--index URL] numpy matplotlib
 *
 * @module
 */

import { parseArgs } from "node:util";

interface LockEntry {
  name: string;
  file_name: string;
  sha256: string;
  depends?: string[];
}
interface Lock {
  info: Record<string, unknown>;
  packages: Record<string, LockEntry>;
}

const normalize = (name: string) => name.toLowerCase().replaceAll("_", "-");

async function defaultIndex(): Promise<string> {
  const pkg = JSON.parse(
    await Deno.readTextFile(new URL(new URL("package.json", import.meta.resolve("pyodide")))),
  ) as { version: string };
  return `https://cdn.jsdelivr.net/pyodide/v${pkg.version}/full/`;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchOk(url: string): Promise<Response> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: ${response.status} ${response.statusText}`);
  return response;
}

/** The packages named and everything they depend on, by their lock-file keys. */
export function closure(lock: Lock, names: string[]): string[] {
  const keys = new Map(Object.keys(lock.packages).map((k) => [normalize(k), k]));
  const wanted = new Set<string>();
  const visit = (name: string, from?: string) => {
    const key = keys.get(normalize(name));
    if (key === undefined) {
      throw new Error(`unknown package ${name}${from ? ` (needed by ${from})` : ""}`);
    }
    if (wanted.has(key)) return;
    wanted.add(key);
    for (const dependency of lock.packages[key].depends ?? []) visit(dependency, key);
  };
  for (const name of names) visit(name);
  return [...wanted].sort();
}

export async function fetchPackages(index: string, out: string, names: string[]): Promise<void> {
  const base = index.endsWith("/") ? index : `${index}/`;
  const lock = await (await fetchOk(`${base}pyodide-lock.json`)).json() as Lock;
  const keys = closure(lock, names);
  await Deno.mkdir(out, { recursive: true });
  const mirrored: Lock = { info: lock.info, packages: {} };
  for (const key of keys) {
    const entry = lock.packages[key];
    const target = `${out}/${entry.file_name}`;
    let bytes: Uint8Array<ArrayBuffer> | undefined;
    try {
      bytes = await Deno.readFile(target);
      if (await sha256(bytes) !== entry.sha256) bytes = undefined;
    } catch {
      // Not mirrored yet.
    }
    if (bytes) {
      console.error(`up to date  ${entry.file_name}`);
    } else {
      bytes = new Uint8Array(await (await fetchOk(`${base}${entry.file_name}`)).arrayBuffer());
      const actual = await sha256(bytes);
      if (actual !== entry.sha256) {
        throw new Error(
          `sha256 mismatch for ${entry.file_name}: expected ${entry.sha256}, got ${actual}`,
        );
      }
      await Deno.writeFile(target, bytes);
      console.error(`fetched     ${entry.file_name} (${bytes.length} bytes)`);
    }
    mirrored.packages[key] = entry;
  }
  await Deno.writeTextFile(`${out}/pyodide-lock.json`, JSON.stringify(mirrored, null, 1));
  console.error(`${keys.length} packages in ${out}: ${keys.join(", ")}`);
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      index: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || !values.out || positionals.length === 0) {
    console.error(
      "usage: fetch_packages.ts --out DIR [--index URL] PACKAGE...\n" +
        "Mirrors PACKAGEs and their dependencies, checked by sha256, into DIR.",
    );
    Deno.exit(values.help ? 0 : 2);
  }
  try {
    await fetchPackages(values.index ?? await defaultIndex(), values.out, positionals);
  } catch (error) {
    console.error(`fetch_packages: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
