"""Digest of a parity run folder (scripts/parity_run.sh): a hash of every safetensors file's
tensors and the numeric entries of its JSON outputs, as JSON; diff two digests."""

import hashlib
import json
import pathlib
import sys

from safetensors.torch import load_file

root = pathlib.Path(sys.argv[1])
out = {}
for f in sorted(root.rglob("*.safetensors")):
    sd = load_file(str(f))
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].float().numpy().tobytes())
    out[str(f.relative_to(root))] = h.hexdigest()[:16]
for f in sorted(root.rglob("*.json")):
    if "cache" in str(f):
        continue
    d = json.loads(f.read_text())
    if not isinstance(d, dict):
        continue
    keep = {
        k: v
        for k, v in d.items()
        if isinstance(v, (int, float)) and "second" not in k and "per_s" not in k
    }
    if keep:
        out[str(f.relative_to(root))] = keep
for l in (root / "moco.log").read_text().splitlines() if (root / "moco.log").exists() else []:
    if "│" in l or "knn" in l.lower():
        out.setdefault("moco_log", []).append(" ".join(l.split()))
print(json.dumps(out, indent=1))
