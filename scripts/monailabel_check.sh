#!/usr/bin/env bash
# Prove the bundles work in a real MONAI Label server (monaibundle app): start it on 127.0.0.1 with a copy of a bundle
# and real studies, POST /infer/<model> must return a label map, a 1-epoch POST /train/<model> must write new weights.
#
#   bash scripts/monailabel_check.sh                       # set up .venv-monailabel if needed, then run the check
#   bash scripts/monailabel_check.sh --setup_only          # only create/update the environment
#   bash scripts/monailabel_check.sh --bundle hippocampus_mri_unet --keep work/monailabel_run
#
# MONAI Label lives in its OWN virtual environment (.venv-monailabel, gitignored): it needs a torch/torchvision pair
# built together (torchvision's compiled ops do not load with another torch build) and pins numpy<2, so it cannot
# share .venv's CPU torch==2.13.0. shared_components is installed into it without dependencies (editable).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MONAILABEL_VENV:-.venv-monailabel}
PY=${PYTHON:-python3.11}
PINS=(monailabel==0.8.5 monai==1.6.1 torch==2.14.1 torchvision==0.29.1 "pydicom<3")
STAMP="$VENV/.installed"
WANT="${PINS[*]}"
# while a setup runs, "$VENV.installing" holds its pid (tests/test_monailabel.py waits on it)
MARK="$VENV.installing"

setup() {
    local t0=$SECONDS log
    log=$(mktemp)
    echo $$ >"$MARK"
    trap 'rm -f "$MARK"' EXIT
    echo "setting up $VENV (${WANT}); log: $log" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    {
        "$VENV/bin/python" -m pip install -q --upgrade pip
        # the pair first, so the resolver never swaps it for another torch
        "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
        "$VENV/bin/python" -m pip install -q "${PINS[@]}"
        "$VENV/bin/python" -m pip install -q --no-deps -e .
        # (pip check trips over itk's wheel tags; importing what the server needs is the real check)
        "$VENV/bin/python" -c "import monailabel, torchvision.ops, shared_components.transforms; print('imports ok')"
    } >"$log" 2>&1 || {
        grep -v "WARNING: Location" "$log" | tail -30 >&2
        exit 1
    }
    echo "$WANT" >"$STAMP"
    echo "$VENV ready in $((SECONDS - t0)) s ($(du -sh "$VENV" | cut -f1))" >&2
}

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    setup
fi
if [ "${1:-}" = "--setup_only" ]; then
    exit 0
fi
exec "$VENV/bin/python" -m shared_components.shipping.monailabel_check "$@"
