#!/usr/bin/env bash
# ansible-test sanity on the collection as Galaxy users get it: build the tarball, install it into a scratch
# ansible_collections tree, run the offline sanity tests there. Needs PyPI once (ansible-test's --requirements fills
# its own virtual environments under ~/.ansible/test/venv; the project's .venv is not touched).
#
#   tools/sanity.sh                      the default test list below
#   tools/sanity.sh --test pep8          any ansible-test sanity arguments replace the default --test list
#   SANITY_KEEP=1 tools/sanity.sh        keep the scratch directory (its path is printed)
#
# The tarball leaves tests/ out (galaxy.yml build_ignore); tests/sanity/ignore-*.txt is copied into the installed
# tree so that ansible-test sees the documented false positives.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/.venv/bin:$PATH"
PYTHON_VERSION="${SANITY_PYTHON:-3.11}"

# Every sanity test that runs offline on this collection. Left out: pslint (PowerShell, no .ps1 here, needs pwsh),
# shellcheck (needs the shellcheck binary; the collection ships no shell scripts), and the ansible-core-only tests
# ansible-test does not offer for collections.
DEFAULT_TESTS=(
  action-plugin-docs ansible-doc changelog compile empty-init ignores import line-endings no-assert
  no-get-exception no-illegal-filenames no-smart-quotes pep8 pylint replace-urlopen runtime-metadata shebang symlinks
  use-argspec-type-path use-compat-six validate-modules yamllint
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/nts-chrony-sanity.XXXXXX")"
cleanup() {
  if [[ -n "${SANITY_KEEP:-}" ]]; then
    echo "sanity: scratch directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# No checkout settings (collections_path, inventory, callbacks) leak into the build or the tests.
# (ansible-core 2.19 refuses ANSIBLE_CONFIG=/dev/null: an empty .cfg file instead.)
printf '[defaults]\n' >"$WORK/ansible.cfg"
export ANSIBLE_CONFIG="$WORK/ansible.cfg"
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS

ansible-galaxy collection build "$ROOT" --output-path "$WORK/build" >/dev/null
TARBALL="$(ls "$WORK"/build/nts-chrony-*.tar.gz)"
# --no-deps: ansible.posix comes from Galaxy, which is out of reach here; no sanity test needs it.
ansible-galaxy collection install --no-deps -p "$WORK/collections" "$TARBALL" >/dev/null
DEST="$WORK/collections/ansible_collections/nts/chrony"
if compgen -G "$ROOT/tests/sanity/ignore-*.txt" >/dev/null; then
  mkdir -p "$DEST/tests/sanity"
  cp "$ROOT"/tests/sanity/ignore-*.txt "$DEST/tests/sanity/"
fi

# ansible-test puts pip into its empty virtual environments with a get-pip script from a CI file host that is out of
# reach; it takes a cached copy first: tools/ansible_test_get_pip.py stands in (pip from the ensurepip wheel, then PyPI).
PIP_VERSION="$(python -c 'from types import SimpleNamespace as N
from ansible_test._internal.python_requirements import get_venv_packages as g
print(g(N(version="'"$PYTHON_VERSION"'"))["pip"])')"
GET_PIP_CACHE="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
if [[ ! -s "$GET_PIP_CACHE" ]]; then
  mkdir -p "$(dirname "$GET_PIP_CACHE")"
  cp "$ROOT/tools/ansible_test_get_pip.py" "$GET_PIP_CACHE"
fi

args=("$@")
if [[ ${#args[@]} -eq 0 ]]; then
  for test in "${DEFAULT_TESTS[@]}"; do args+=(--test "$test"); done
fi

cd "$DEST"
echo "sanity: $(basename "$TARBALL") installed in $DEST"
start=$SECONDS
status=0
ansible-test sanity --color no --venv --requirements --python "$PYTHON_VERSION" "${args[@]}" || status=$?
echo "sanity: ansible-test sanity exited $status after $((SECONDS - start)) s"
exit "$status"
