#!/usr/bin/env bash
# timm's own model test suite (its tests/test_models.py) on every registered pde_* model.
#
#   benchmarks/timm_conformance.sh TIMM_SRC [REF]
#
# TIMM_SRC is a checkout of timm's repository (https://github.com/huggingface/pytorch-image-models), a work tree
# or a bare clone. REF is a tag or commit of it; without REF, the tag of the installed timm (v1.0.31 for timm
# 1.0.31) where the checkout has it, else the work tree as it is (HEAD of a bare clone). timm's tests/ and
# pyproject.toml (its pytest markers) are copied to a scratch folder with a conftest.py that imports
# pdeconv.models, so the installed timm runs its tests with the pde_* models registered; nothing of timm's is
# copied into this repository.
#
# Environment: PYTHON (default .venv/bin/python where it exists, else python3), OMP_NUM_THREADS (default 1),
# PYTEST_ARGS (more pytest arguments, e.g. "-x" or "-n 2" with pytest-xdist). Exits with pytest's status.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
src=$1
ref=${2:-}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$([[ -x "$here/.venv/bin/python" ]] && echo "$here/.venv/bin/python" || echo python3)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

version=$("$python" -c "import timm; print(timm.__version__)") || {
  echo "timm_conformance: timm is not importable with $python; pip install -e '.[timm]' (or set PYTHON)" >&2
  exit 2
}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/timm-conformance.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  if [[ -z "$ref" ]] && git -C "$src" rev-parse -q --verify "refs/tags/v$version" >/dev/null; then
    ref=v$version
  elif [[ -z "$ref" && ! -f "$src/tests/test_models.py" ]]; then
    ref=HEAD  # a bare clone: its newest commit
  fi
  if [[ -n "$ref" ]]; then
    ref="$ref ($(git -C "$src" rev-parse --short "$ref^{commit}" 2>/dev/null || echo 'not found'))"
    git -C "$src" archive "${ref%% *}" tests pyproject.toml | tar -x -C "$scratch" || {
      echo "timm_conformance: $src has no tests/ at $ref; give a tag or commit of timm's repository" >&2
      exit 2
    }
  fi
elif [[ -n "$ref" ]]; then
  echo "timm_conformance: $src is not a git checkout, so REF $ref cannot be read; leave REF out" >&2
  exit 2
fi
if [[ ! -f "$scratch/tests/test_models.py" ]]; then
  if [[ ! -f "$src/tests/test_models.py" ]]; then
    echo "timm_conformance: no tests/test_models.py in $src${ref:+ at $ref}; give a checkout of timm's repository" >&2
    exit 2
  fi
  cp -r "$src/tests" "$scratch/tests"
  cp "$src/pyproject.toml" "$scratch/" 2>/dev/null || true
  ref="work tree"
fi
cat > "$scratch/tests/conftest.py" <<'EOF'
# registers pdeconv's pde_* models with timm before timm's test modules list the models they test
import pdeconv.models  # noqa: F401
EOF

echo "timm's tests/test_models.py at $ref, installed timm $version, OMP_NUM_THREADS=$OMP_NUM_THREADS, -k pde_"
cd "$scratch"
# shellcheck disable=SC2086  # PYTEST_ARGS is split into arguments on purpose
"$python" -m pytest -q -p no:cacheprovider -W ignore::pytest.PytestUnknownMarkWarning tests/test_models.py \
  -k pde_ ${PYTEST_ARGS:-}
