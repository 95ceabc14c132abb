/**
 * Builds a local package directory for the tests: small pure-Python wheels and a
 * `pyodide-lock.json` naming them, the layout PYODIDE_PACKAGES_DIR expects. Wheels are zip
 * files; python3's zipfile writes them.
 */

const PNG_MODULE = `
import struct, zlib

def png(width, height, rgb):
    """A valid PNG of one colour."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
`;

/** A stand-in for matplotlib: just what the pool's figure capture touches. */
const PYPLOT = `
from matplotlib._png import png

_figures = {}


class Figure:
    def __init__(self, number, size):
        self.number = number
        self.size = size

    def savefig(self, fp, format="png"):
        assert format == "png"
        fp.write(png(self.size, self.size + 1, (200, 30, 30)))


def figure(num=None, size=4):
    if num is None:
        num = max(_figures, default=0) + 1
    return _figures.setdefault(num, Figure(num, size))


def get_fignums():
    return sorted(_figures)


def close(which="all"):
    if which == "all":
        _figures.clear()
    else:
        _figures.pop(which, None)
`;

export interface TestPackage {
  name: string;
  files: Record<string, string>;
  depends?: string[];
  /** Name a file in the lock file that does not exist, to test load failures. */
  missing?: boolean;
}

export const TEST_PACKAGES: TestPackage[] = [
  { name: "helperpkg", files: { "helperpkg/__init__.py": "X = 1\n" } },
  {
    name: "standin",
    files: { "standin/__init__.py": "import helperpkg\nVALUE = 41 + helperpkg.X\n" },
    depends: ["helperpkg"],
  },
  {
    name: "matplotlib",
    files: {
      "matplotlib/__init__.py": "__version__ = '0.0-standin'\n",
      "matplotlib/_png.py": PNG_MODULE,
      "matplotlib/pyplot.py": PYPLOT,
    },
  },
  { name: "brokenpkg", files: { "brokenpkg/__init__.py": "" }, missing: true },
];

const BUILDER = `
import hashlib, json, sys, zipfile
out, spec = sys.argv[1], json.loads(sys.stdin.read())
lock = {"info": {"abi_version": "2026_0", "arch": "wasm32", "platform": "emscripten_5_0_3", "python": "3.14.2"}, "packages": {}}
for package in spec:
    name, version = package["name"], "1.0.0"
    file_name = f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    sha256 = "0" * 64
    if not package.get("missing"):
        with zipfile.ZipFile(f"{out}/{file_name}", "w") as wheel:
            for path, text in package["files"].items():
                wheel.writestr(path, text)
            wheel.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n")
            wheel.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
            wheel.writestr(f"{dist}/RECORD", "")
        sha256 = hashlib.sha256(open(f"{out}/{file_name}", "rb").read()).hexdigest()
    lock["packages"][name] = {
        "name": name, "version": version, "file_name": file_name, "install_dir": "site",
        "sha256": sha256, "package_type": "package", "imports": [name],
        "depends": package.get("depends", []),
    }
json.dump(lock, open(f"{out}/pyodide-lock.json", "w"), indent=1)
`;

/** Writes the wheels and the lock file into a new temporary directory; returns its path. */
export async function buildPackageDirectory(packages = TEST_PACKAGES): Promise<string> {
  const directory = await Deno.makeTempDir({ prefix: "pyodide-pool-packages-" });
  const python = new Deno.Command("python3", {
    args: ["-c", BUILDER, directory],
    stdin: "piped",
    stderr: "piped",
  }).spawn();
  const writer = python.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(packages)));
  await writer.close();
  const { code, stderr } = await python.output();
  if (code !== 0) throw new Error(new TextDecoder().decode(stderr));
  return directory;
}
