# Shared by bin/run and bin/test: find or install uv, then install the project's dependencies.
# shellcheck shell=bash
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then
    UV=(uv)
  elif python3 -m uv --version >/dev/null 2>&1; then
    UV=(python3 -m uv)
  else
    say "installing uv (pip install uv)"
    python3 -m pip install --quiet uv
    UV=(python3 -m uv)
  fi
}

install_project() {
  ensure_uv
  say "installing lettachat's dependencies (uv sync)"
  "${UV[@]}" sync --frozen --quiet
}
