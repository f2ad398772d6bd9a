# Sourced by scripts/demo and scripts/test: make .venv and install sailmesh into it (editable), unless the
# installed package is current: .venv/.sailmesh-installed records a hash of pyproject.toml, this checkout's path
# and the pip spec of the last install; a change to any of them (or a venv without sailmesh) installs again.
sailmesh_install() {  # $1: the pip spec, "." or ".[test]"; $2...: specs whose install also satisfies this one
  local spec="$1" stamp=.venv/.sailmesh-installed key want s
  shift
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  key="$(sha256sum pyproject.toml | cut -d' ' -f1) $(pwd -P)"
  if [ -x .venv/bin/sailmesh ] && [ -f "$stamp" ] && .venv/bin/python -I -c 'import sailmesh' 2>/dev/null; then
    for s in "$spec" "$@"; do
      if grep -qxF -e "$key $s" "$stamp"; then
        return 0
      fi
    done
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
  want="$key $spec"
  { grep -F -e "$key " "$stamp" 2>/dev/null | grep -vxF -e "$want" || true; echo "$want"; } > "$stamp.new"
  mv "$stamp.new" "$stamp"
}
