#!/usr/bin/env bash
# bash scripts/setup_simpler.sh SIMPLERENV_CHECKOUT [VENV]
#
# SimplerEnv's own venv for eval/simpler_rollout.py suite=simpler (README, "Real SimplerEnv"), from a checkout
# of simpler-env/SimplerEnv with its ManiSkill2_real2sim submodule:
#   1. checks the checkout and the scene assets the Google-robot tasks load (a missing stage .glb is only
#      logged by SimplerEnv, and the objects fall through the table);
#   2. creates VENV (default: SIMPLERENV_CHECKOUT/.venv) with the pins that work: pip resolves numpy 2,
#      which breaks sapien 2.2.2's IK, so numpy, scipy, opencv and setuptools are pinned after the install;
#   3. without an NVIDIA GPU, sets up Vulkan on the CPU: Mesa 25's lavapipe (Debian 12: from bookworm-backports,
#      unpacked into VENV/lavapipe when run as root, the system's Mesa left as it is) and our layer
#      scripts/vk_drop_ext, built with gcc, that removes the one device extension sapien asks for and
#      lavapipe lacks;
#   4. writes VENV/bin/simpler-python, the venv's Python with that Vulkan setup, and checks that sapien
#      renders with it. Give that path to the harness: simpler.python=VENV/bin/simpler-python.
# Environment: PYTHON (the interpreter for the venv; default python3.11, else python3.10: sapien 2.2.2 has
# wheels for CPython <= 3.11), SIMPLER_ALLOW_MISSING_ASSETS=1 (warn instead of failing on missing assets;
# the worker then skips its own check too: only for trying the pipeline, the scenes are wrong).
set -euo pipefail

die() { echo "setup_simpler: error: $*" >&2; exit 1; }
say() { echo "setup_simpler: $*"; }

[ $# -ge 1 ] || die "usage: bash scripts/setup_simpler.sh SIMPLERENV_CHECKOUT [VENV]"
SRC=$(cd "$1" 2>/dev/null && pwd) || die "no such folder: $1"
VENV=${2:-$SRC/.venv}
MS2=$SRC/ManiSkill2_real2sim
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# 1. checkout, Python, and the assets that ManiSkill2_real2sim/.../envs/custom_scenes/*.py load for Google-robot tasks
[ -f "$SRC/simpler_env/__init__.py" ] || die "$SRC is not a SimplerEnv checkout (no simpler_env/__init__.py)"
[ -f "$MS2/setup.py" ] || die "$MS2 is empty: clone with --recurse-submodules or run 'git submodule update --init' in $SRC"
PY=${PYTHON:-$(command -v python3.11 || command -v python3.10 || true)}
[ -n "$PY" ] || die "no python3.11 or python3.10 found; set PYTHON=/path/to/python (3.10 or 3.11)"
"$PY" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 11)))' ||
  die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); sapien 2.2.2 needs 3.10 or 3.11"

missing=()
need() { [ -s "$MS2/data/$1" ] || missing+=("$MS2/data/$1"); }
need hab2_bench_assets/stages/google_pick_coke_can_1_v4.glb  # coke can and move near: table and room
need custom/mk_station_recolor.urdf                          # drawer and apple: the cabinet
for f in google_coke_can_real_eval_1 google_move_near_real_eval_1 open_drawer_a0 open_drawer_b0 open_drawer_c0; do
  need "real_inpainting/$f.png"                              # the real images overlaid on the background
done
# every object of the Google-robot object sets needs a collision mesh and a visual mesh
for db in info_pick_custom_v0 info_pick_custom_baked_tex_v0 info_pick_custom_baked_tex_v1; do
  [ -f "$MS2/data/custom/$db.json" ] || { missing+=("$MS2/data/custom/$db.json"); continue; }
  for id in $("$PY" -c 'import json, sys; print(*json.load(open(sys.argv[1])))' "$MS2/data/custom/$db.json"); do
    d=$MS2/data/custom/models/$id
    [ -s "$d/collision.obj" ] || missing+=("$d/collision.obj")
    [ -s "$d/textured.obj" ] || [ -s "$d/textured.dae" ] || [ -s "$d/textured.glb" ] || missing+=("$d/textured.{obj,dae,glb}")
  done
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)  # object sets share objects
  printf '  missing: %s\n' "${missing[@]}" >&2
  msg="${#missing[@]} scene asset(s) missing in $MS2/data (an incomplete clone or snapshot: large files absent?)"
  [ "${SIMPLER_ALLOW_MISSING_ASSETS:-0}" = 1 ] || die "$msg; SIMPLER_ALLOW_MISSING_ASSETS=1 goes on anyway"
  say "warning: $msg; going on (SIMPLER_ALLOW_MISSING_ASSETS=1): these scenes are not SIMPLER's"
fi

# 2. venv and pins ---------------------------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
say "installing into $VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e "$MS2" -e "$SRC"
"$VENV/bin/pip" install -q numpy==1.24.4 scipy==1.12.0 opencv-python==4.10.0.84 "setuptools<70"

# 3. Vulkan ----------------------------------------------------------------------------------------------
VK_ENV=""
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  say "NVIDIA GPU found: sapien uses its Vulkan driver"
else
  # Debian 12's lavapipe (Mesa 22.3) lacks descriptorBindingPartiallyBound, which sapien needs; Mesa 25's
  # (bookworm-backports) has it. It is unpacked into the venv, not installed: the system's Mesa upgraded to
  # the backports build makes MuJoCo's EGL rendering segfault in a process that has loaded TensorFlow (the
  # project's own RLDS tests), so the system keeps its Mesa and only SimplerEnv's Python sees this one.
  LVP=$VENV/lavapipe
  ARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  LIB=$LVP/root/usr/lib/$ARCH
  if [ ! -f "$LIB/libvulkan_lvp.so" ]; then
    [ "$(id -u)" = 0 ] || die "no GPU: run as root once to unpack Mesa 25's lavapipe into $LVP (or give a GPU)"
    grep -q 'VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null ||
      die "no GPU and not Debian 12: put a Mesa >= 25 lavapipe (libvulkan_lvp.so, libdrm >= 2.4.121) in $LIB"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libvulkan1 libvulkan-dev gcc  # Debian 12's: no Mesa change
    # the system's own Debian mirror, for the backports suite, in an apt state of our own
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || die "cannot find the Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    mkdir -p "$LVP/apt/lists/partial" "$LVP/apt/archives/partial" "$LVP/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm-backports main" > "$LVP/apt/sources.list"
    apt_private=(-o "Dir::Etc::sourcelist=$LVP/apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::lists=$LVP/apt/lists"
      -o "Dir::Cache=$LVP/apt" -o "Dir::Cache::archives=$LVP/apt/archives" -o APT::Sandbox::User=root)
    say "unpacking Mesa 25 lavapipe from bookworm-backports into $LVP"
    apt-get "${apt_private[@]}" update -q
    (cd "$LVP/debs" && apt-get "${apt_private[@]}" download mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports)
    for deb in "$LVP"/debs/*.deb; do dpkg-deb -x "$deb" "$LVP/root"; done
    [ -f "$LIB/libvulkan_lvp.so" ] || die "no libvulkan_lvp.so in the unpacked packages ($LIB)"
  fi
  ldconfig -p | grep -q libvulkan.so.1 && [ -f /usr/include/vulkan/vk_layer.h ] ||
    die "install the Vulkan loader and headers (Debian: libvulkan1 libvulkan-dev) and gcc"
  printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' \
    "$LIB/libvulkan_lvp.so" > "$LVP/lvp_icd.json"
  LAYER_DIR=$VENV/share/vulkan/explicit_layer.d
  mkdir -p "$LAYER_DIR"
  gcc -shared -fPIC -O2 -Wall -fvisibility=hidden -o "$LAYER_DIR/libVkLayer_worldflow_drop_ext.so" "$HERE/vk_drop_ext/vk_drop_ext.c"
  cp "$HERE/vk_drop_ext/VkLayer_worldflow_drop_ext.json" "$LAYER_DIR/"
  VK_ENV="export VK_ICD_FILENAMES=$LVP/lvp_icd.json VK_LAYER_PATH=$LAYER_DIR VK_INSTANCE_LAYERS=VK_LAYER_WORLDFLOW_drop_ext
export LD_LIBRARY_PATH=$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}  # the backports libdrm lavapipe needs"
  say "CPU Vulkan: lavapipe $(dpkg-deb -f "$LVP"/debs/mesa-vulkan-drivers_*.deb Version) in $LVP with VK_LAYER_WORLDFLOW_drop_ext"
fi

# 4. the harness's Python, and a check that sapien renders -----------------------------------------------
cat > "$VENV/bin/simpler-python" <<EOF
#!/usr/bin/env bash
# SimplerEnv's Python for worldflow's eval/worker.py, written by scripts/setup_simpler.sh
$VK_ENV
exec "$VENV/bin/python" "\$@"
EOF
chmod +x "$VENV/bin/simpler-python"
"$VENV/bin/simpler-python" - <<'EOF' || die "sapien cannot render with this Vulkan setup (see the error above)"
import numpy, sapien.core as sapien
import simpler_env  # noqa: F401
assert numpy.__version__.startswith("1."), f"numpy {numpy.__version__}: SimplerEnv needs numpy < 2"
engine = sapien.Engine()
engine.set_renderer(sapien.SapienRenderer(offscreen_only=True))
EOF
say "ready: eval/simpler_rollout.py suite=simpler simpler.python=$VENV/bin/simpler-python"
say "tests: SIMPLER_PYTHON=$VENV/bin/simpler-python .venv/bin/python -m pytest -m simpler tests/test_simpler.py"
