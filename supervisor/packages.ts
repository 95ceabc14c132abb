/**
 * What packages can be loaded, from which source, and which are loaded pool-wide. The
 * source is a local directory with a `pyodide-lock.json` (PYODIDE_PACKAGES_DIR), or a
 * package index URL (such as the Pyodide CDN). Without either, Pyodide's own lock file still
 * names its packages, but their files are not on this machine, so none can load.
 *
 * @module
 */

import { type Config, ConfigError } from "./config.ts";
import { invalidParams } from "../lib/errors.ts";
import type { PackagesReport } from "../lib/protocol.ts";
import { pyodideDirectory } from "./worker_command.ts";

interface LockPackage {
  name: string;
  version: string;
  depends: string[];
  imports: string[];
}

export type PackageSource = "directory" | "index" | "none";

export class PackageCatalog {
  readonly source: PackageSource;
  /** The lock file workers load from (path or URL); undefined without a source. */
  readonly lockFileUrl: string | undefined;
  #available: Map<string, LockPackage>;
  /** Loaded pool-wide: every worker, replacements included, gets these before it runs code. */
  #loaded: Set<string>;

  constructor(config: Config) {
    let lockPath: string;
    if (config.packagesDir !== undefined) {
      this.source = "directory";
      lockPath = `${config.packagesDir.replace(/\/$/, "")}/pyodide-lock.json`;
      this.lockFileUrl = lockPath;
    } else {
      this.source = config.packageIndexUrl !== undefined ? "index" : "none";
      lockPath = `${pyodideDirectory()}/pyodide-lock.json`;
      this.lockFileUrl = config.packageIndexUrl !== undefined
        ? new URL("pyodide-lock.json", config.packageIndexUrl.replace(/\/?$/, "/")).href
        : undefined;
    }
    this.#available = readLock(lockPath);
    this.#loaded = new Set();
    try {
      this.check(config.preload, "preload");
    } catch (error) {
      throw new ConfigError(`invalid preload: ${(error as Error).message}`);
    }
    this.markLoaded(config.preload);
  }

  /** The pool-wide set, in load order. */
  get loaded(): string[] {
    return [...this.#loaded];
  }

  /** Checks that `names` can be loaded; throws -32602 naming the first that cannot. */
  check(names: string[], field = "packages"): void {
    for (const name of names) {
      const canonical = name.toLowerCase().replaceAll("_", "-");
      if (this.source === "none") {
        throw invalidParams(
          field,
          `cannot load ${name}: no package source is configured (set PYODIDE_PACKAGES_DIR or PYODIDE_PACKAGE_INDEX_URL)`,
        );
      }
      if (!this.#available.has(canonical)) {
        throw invalidParams(field, `names an unknown package: ${JSON.stringify(name)}`);
      }
    }
  }

  /** Adds packages that loaded to the pool-wide set. */
  markLoaded(names: string[]): void {
    for (const name of names) this.#loaded.add(name.toLowerCase().replaceAll("_", "-"));
  }

  /** The `packages` method's answer. */
  describe(): PackagesReport {
    return {
      source: this.source,
      lock_file: this.lockFileUrl ?? null,
      loaded: this.loaded,
      available: [...this.#available.values()].map((p) => ({
        name: p.name,
        version: p.version,
        imports: p.imports,
        depends: p.depends,
        loadable: this.source !== "none",
      })),
    };
  }
}

function readLock(path: string): Map<string, LockPackage> {
  let lock: { packages: Record<string, LockPackage> };
  try {
    lock = JSON.parse(Deno.readTextFileSync(path));
    if (typeof lock?.packages !== "object") throw new Error('it has no "packages" object');
  } catch (error) {
    throw new ConfigError(`cannot use the package lock file ${path}: ${(error as Error).message}`);
  }
  const packages = new Map<string, LockPackage>();
  for (const [key, entry] of Object.entries(lock.packages)) {
    packages.set(key.toLowerCase().replaceAll("_", "-"), {
      name: entry.name ?? key,
      version: entry.version,
      depends: entry.depends ?? [],
      imports: entry.imports ?? [],
    });
  }
  return packages;
}
