#!/usr/bin/env bash
# Re-measure issue 18's peer table: qcamseg predict vs TIAToolbox and WSInfer, same slide, same network.
#   bash benchmarks/peers/run.sh                 # W=/tmp/qcamseg-peers, 3 rounds, interleaved
#   ROUNDS=1 PEERS="wsinfer==0.6.1" bash benchmarks/peers/run.sh
# Each peer gets its own virtual environment under $W (CPU wheels of torch/torchvision from the
# PyTorch index first, so pip does not pull CUDA builds), created once. Not part of CI.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
W=${W:-/tmp/qcamseg-peers}
ROUNDS=${ROUNDS:-3}
PEERS=${PEERS:-"tiatoolbox==2.1.3 tiatoolbox==1.3.2 wsinfer==0.6.1"}
PY=${PYTHON:-python}            # qupath-camseg's Python (its venv)
BASE=${BASE_PYTHON:-python3}    # the Python the peers' venvs are made from (3.10 or 3.11)
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
# How the peers' torch/torchvision are installed: from the CPU index by default; where the index is
# out of reach but a CPU torch is on disk (a pip find-links folder), e.g.
#   TORCH_PIP="torch==2.13.0 torchvision==0.28.0" (torchvision's PyPI wheel then sits on the CPU torch)
TORCH_PIP=${TORCH_PIP:-"torch torchvision --index-url $TORCH_INDEX"}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$W"

"$PY" "$HERE/prepare.py" --workdir "$W"
for peer in $PEERS; do
    venv="$W/venv-${peer//==/-}"
    if [ ! -x "$venv/bin/python" ]; then
        "$BASE" -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
        # shellcheck disable=SC2086  # TORCH_PIP is a list of pip arguments
        "$venv/bin/pip" install -q $TORCH_PIP
        "$venv/bin/pip" install -q "$peer"
    fi
done
rm -f "$W"/ours.json "$W"/peer-*.json
for r in $(seq "$ROUNDS"); do
    echo "round $r: qcamseg"; "$PY" "$HERE/prepare.py" --workdir "$W" --ours
    for peer in $PEERS; do
        venv="$W/venv-${peer//==/-}"; tag="${peer//==/-}"
        echo "round $r: $peer"
        case "$peer" in
          tiatoolbox*) "$venv/bin/python" "$HERE/peer_tiatoolbox.py" --slide "$W/slides/slide_12288.tif" \
                           --model "$W/unet.ts" --out "$W/out-$tag" --json "$W/last.json" ;;
          wsinfer*)    "$venv/bin/python" "$HERE/peer_wsinfer.py" --slide-dir "$W/slides" --model "$W/unet_pooled.ts" \
                           --config "$W/wsinfer.json" --out "$W/out-$tag" --json "$W/last.json" ;;
        esac
        "$PY" - "$W/last.json" "$W/peer-$tag.json" <<'PYEOF'
import json, sys, pathlib
last, acc = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
runs = json.loads(acc.read_text()) if acc.is_file() else []
acc.write_text(json.dumps(runs + [json.loads(last.read_text())], indent=2))
PYEOF
    done
done
echo; echo "2 CPU cores? $(nproc) here; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" "$HERE/prepare.py" --workdir "$W" --table
