#!/usr/bin/env bash
# Does `pip install ".[gpu]"` resolve on a CUDA host? Against public PyPI only (this machine's
# local wheel folders and caps are left out), metadata only (PEP 658: no wheel is downloaded):
#  1. every requirement of the gpu extra resolves to a wheel (no sdist that would need a build);
#  2. each of those wheels' requirements on a package the project pins (torch, transformers, ray, …)
#     is met by a released version that also meets the project's pin.
# FULL=1 adds the whole dependency resolution (`pip install --dry-run --ignore-installed ".[gpu]"`,
# a few minutes). Exits non-zero naming the conflict.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pipx() { env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null "$PY" -m pip "$@"; }
mapfile -t reqs < <("$PY" - <<'PYEOF'
import tomllib
d = tomllib.load(open("pyproject.toml", "rb"))
for r in d["project"]["optional-dependencies"]["gpu"]:
    print(r)
PYEOF
)
[ "${#reqs[@]}" -gt 0 ] || { echo "check_gpu_extra: pyproject.toml has no gpu extra" >&2; exit 1; }
pipx install --dry-run --ignore-installed --no-deps --only-binary=:all: --report "$tmp/top.json" -q "${reqs[@]}" \
  || { echo "check_gpu_extra: the gpu extra's own requirements (${reqs[*]}) do not resolve to wheels" >&2; exit 1; }
"$PY" - "$tmp/top.json" <<'PYEOF'
import json, subprocess, sys, tomllib, os
from packaging.requirements import Requirement
from packaging.version import Version
from packaging.utils import canonicalize_name as cn

pins = {cn(Requirement(r).name): Requirement(r) for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]}
report = json.load(open(sys.argv[1]))
env = {"extra": ""}
bad = []
for item in report["install"]:
    meta = item["metadata"]
    print(f"gpu extra: {meta['name']} {meta['version']} ({item['download_info']['url'].rsplit('/', 1)[-1]})")
    for text in meta.get("requires_dist") or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        ours = pins.get(cn(req.name))
        if ours is None:
            continue
        out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", req.name], capture_output=True,
                             text=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""})
        line = next((l for l in out.stdout.splitlines() if l.startswith("Available versions:")), "")
        versions = [Version(v.strip()) for v in line.split(":", 1)[-1].split(",") if v.strip()]
        both = [v for v in versions if v in req.specifier and v in ours.specifier]
        if not versions:
            bad.append(f"{req.name}: pip index versions found no releases ({out.stderr.strip()[-200:]})")
        elif not both:
            bad.append(f"{meta['name']} {meta['version']} requires {req} but pyproject.toml pins {ours}: no release meets both")
        else:
            print(f"  {req}  vs  pyproject {ours}: ok ({max(both)})")
if bad:
    print("check_gpu_extra: FAILED\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
PYEOF
if [ -n "${FULL:-}" ]; then
  pipx install --dry-run --ignore-installed --only-binary=:all: --report "$tmp/full.json" -q ".[gpu]" \
    || { echo "check_gpu_extra: the full resolution of .[gpu] failed" >&2; exit 1; }
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1]))['install']; print(f'full resolution: {len(r)} packages, ' + ', '.join(f\"{i['metadata']['name']} {i['metadata']['version']}\" for i in r if i['metadata']['name'] in ('torch','vllm','transformers')))" "$tmp/full.json"
fi
echo "check_gpu_extra: ok"
