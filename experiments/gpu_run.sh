#!/usr/bin/env bash
# The GPU check (experiments/gpu_check.py) on a lent device of this workplace, in one command.
#
# 1. Here, with the package registry (once per checkout; ~1 GB downloaded, ~30 MB kept):
#        bash experiments/gpu_run.sh prepare
#    downloads, for the device's Python 3.12 on x86-64, the packages neurosym needs there and the
#    device image lacks (pydantic for the config; bitsandbytes for NF4; textgrad, litellm, openai and
#    their missing needs for the hybrid job's symbolic route), drops what nothing here loads
#    (bitsandbytes' libraries for other CUDA and ROCm versions, litellm's proxy web UI), packs them in
#    .whl/site.tar.xz and makes git ignore .whl/ (.git/info/exclude), as the device README says.
# 2. Through the device tool, from the repository root (the checkout the session was started in):
#        run(command="bash experiments/gpu_run.sh", carry=[".whl"], timeout_s=600)
#    It unpacks the packages to /tmp/site, runs the whole check (8 minutes: --budget-s 480) and writes
#    gpu_check.md, gpu_check.json and log.txt to $OUT; the table is the end of the output.
#    A rerun of some parts after a fix (models are rebuilt: env and build always run):
#        run(command="bash experiments/gpu_run.sh --only 'resume nf4,merge nf4' --budget-s 240", carry=[".whl"])
#    Then give the machine back (give_back).
set -euo pipefail
cd "$(dirname "$0")/.."

# the versions neurosym's own environment runs (each tested together there); --no-deps: exactly these
WHEELS=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  bitsandbytes==0.50.2
  textgrad==0.1.8 litellm==1.110.2 openai==3.57.0 pydantic-settings==2.16.3 diskcache==5.6.3
  python-dotenv==1.2.4 tenacity==9.2.1 platformdirs==4.14.9 fastuuid==0.14.0 importlib-metadata==8.9.0
  distro==1.9.0 jiter==0.19.0 sniffio==1.3.1 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5
)
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

if [[ "${1:-}" == "prepare" ]]; then
  dest="${2:-.whl}"
  py="${PYTHON:-python3}"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$tmp/wheels" "${WHEELS[@]}"
  "$py" -m pip install -q --no-deps --no-compile "${PLATFORM[@]}" --target "$tmp/site" "$tmp/wheels"/*.whl
  # the device's torch is built for CUDA 13.0: bitsandbytes loads libbitsandbytes_cuda130.so (and the CPU one)
  find "$tmp/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*_cuda130.so' ! -name '*_cpu.so' -delete
  rm -rf "$tmp/site/litellm/proxy/_experimental" "$tmp/site/litellm/proxy/swagger"
  rm -rf "$tmp/site/bin"
  mkdir -p "$dest"
  tar -C "$tmp/site" -cf - . | xz -T0 -6 > "$dest/site.tar.xz"
  if [[ "$dest" == ".whl" ]] && ! git check-ignore -q .whl/site.tar.xz; then
    echo "/.whl/" >> "$(git rev-parse --git-path info/exclude)"
  fi
  ls -l "$dest/site.tar.xz"
  echo "ready: run(command=\"bash experiments/gpu_run.sh\", carry=[\".whl\"], timeout_s=600)"
  exit 0
fi

# ---- on the device ------------------------------------------------------------------------------
if [[ ! -f .whl/site.tar.xz ]]; then
  echo "no .whl/site.tar.xz: run 'bash experiments/gpu_run.sh prepare' here first, and carry .whl" >&2
  exit 2
fi
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT" /tmp/site
python3 - <<'EOF'
import tarfile
with tarfile.open(".whl/site.tar.xz") as t:
    t.extractall("/tmp/site", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
EOF
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
set -o pipefail
python3 experiments/gpu_check.py --out "$OUT" --work /tmp/gpu_check_work "$@" 2>&1 | tee "$OUT/log.txt"
