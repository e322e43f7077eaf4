#!/usr/bin/env bash
# Creates ./.venv (Python 3.10-3.12) and installs the runtime and test requirements.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements-dev.txt
.venv/bin/python -c "from yolact.utils.console import quiet_tensorflow; quiet_tensorflow(); import tensorflow as tf, keras; print('tensorflow', tf.__version__, '| keras', keras.__version__)"
