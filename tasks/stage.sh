#!/bin/sh
# Run a stage entry point (`sh tasks/stage.sh tasks.stages.sft [args]`) with the project's interpreter.
#
# dvc.yaml's commands go through this so `dvc repro` works whether or not the venv is activated:
# `.venv/bin/dvc repro` typed in a plain shell would otherwise run the system `python`, which
# lacks the project's packages. The first interpreter that has them wins:
#   1. $R1FLOW_PYTHON, when set (a GPU box or CI image with its own environment);
#   2. `python` on PATH (an activated venv, or `make`, which puts .venv/bin first);
#   3. the project's .venv/bin/python.
# The check asks the import system whether the packages exist (no import, so it costs ~20 ms).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
check='import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("torch", "pydantic", "mlflow", "transformers")))'
for py in "${R1FLOW_PYTHON:-}" python "$root/.venv/bin/python"; do
  if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 && "$py" -c "$check" 2>/dev/null; then
    exec "$py" -m "$@"
  fi
done
echo "r1flow: no Python with the project's packages (torch, pydantic, mlflow, transformers) found:" >&2
echo "  tried \$R1FLOW_PYTHON, python on PATH and $root/.venv/bin/python." >&2
echo "  Run \`make setup\` (creates .venv) or set R1FLOW_PYTHON=/path/to/python, then \`dvc repro\` again;" >&2
echo "  \`dvc checkout\` restores the cached outputs DVC removed before this command ran." >&2
exit 127
