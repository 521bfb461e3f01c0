#!/usr/bin/env python3
"""check-doc-comments.py [MODULE...]: lists the public symbols of imgtool's library modules that
have no doc comment, from the compiler's own symbol graph (`swift package dump-symbol-graph`),
and exits 1 if there are any. Symbols the compiler synthesises (Equatable's ==, hashValue,
RawRepresentable's init) have no place in the source and are not counted. Default modules: the
library targets an embedder reaches through ImgKit."""
import json
import os
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
modules = sys.argv[1:] or ["ImgKit", "ImgVM", "ImgSystem", "ImgFormats"]
swift = os.environ.get("SWIFT", "swift")
out = subprocess.run([os.path.join(root, "Scripts/with-private-tmp.sh"), swift, "package", "dump-symbol-graph",
                      "--minimum-access-level", "public"], cwd=root, capture_output=True, text=True)
if out.returncode != 0:
    sys.stderr.write(out.stdout + out.stderr)
    sys.exit(2)
directory = next((line.split("Files written to ", 1)[1].strip() for line in out.stdout.splitlines()
                  if "Files written to " in line), None)
if directory is None:
    sys.stderr.write("check-doc-comments: swift package dump-symbol-graph named no output directory\n" + out.stdout)
    sys.exit(2)

missing = []
for module in modules:
    path = os.path.join(directory, f"{module}.symbols.json")
    if not os.path.exists(path):
        continue
    for symbol in json.load(open(path))["symbols"]:
        location = symbol.get("location")
        if symbol.get("accessLevel") not in ("public", "open") or location is None or symbol.get("docComment"):
            continue
        file = location["uri"].split(root + "/", 1)[-1]
        line = location["position"]["line"] + 1
        missing.append(f"{file}:{line}: {module}.{'.'.join(symbol['pathComponents'])} ({symbol['kind']['displayName']})")

for entry in sorted(missing):
    print(entry)
print(f"{len(missing)} public symbols without a doc comment in {', '.join(modules)}", file=sys.stderr)
sys.exit(1 if missing else 0)
