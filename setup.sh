#!/usr/bin/env bash
# Sets up worldflow on a fresh Debian/Ubuntu machine: system libraries for headless MuJoCo rendering,
# a virtual environment in .venv, PyTorch (CPU wheel 2.13.0 first, so no CUDA build is pulled), the project.
# Idempotent: a second run only checks. Usage: bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"

# Headless OpenGL for MuJoCo (EGL via Mesa; OSMesa as fallback).
need=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libosmesa6; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup.sh: missing system packages ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
if ! $py -c "import torch" 2>/dev/null; then
  $py -m pip install -q "torch==2.13.0"
fi
if ! $py -c "import worldflow, mujoco, tensorflow_datasets, pytest, xdist" 2>/dev/null; then
  $py -m pip install -q -e ".[mujoco,rlds,dev]"
fi
echo "setup.sh: ready ($($py -c 'import torch; print("torch", torch.__version__)'))"
