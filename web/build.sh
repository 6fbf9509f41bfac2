#!/usr/bin/env bash
# Builds what the static page needs and git does not keep: vendor/ (ONNX Runtime Web's wasm backend, from the npm
# registry at the version pinned in package-lock.json) and models/ (the episode models and their JSON sidecars).
#
# Usage: bash web/build.sh [MODELS_DIR]   (MODELS_DIR defaults to ram_infer/models/episode)
# Then:  python -m http.server 8000 --bind 127.0.0.1 --directory web   and open http://127.0.0.1:8000/
set -euo pipefail

web="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
models_dir="${1:-$web/../ram_infer/models/episode}"
cd "$web"

# --ignore-scripts: the page needs files, not install hooks (protobufjs's only prints a notice).
npm ci --ignore-scripts --no-audit --no-fund

# Only the wasm backend: its ES module and the one wasm binary (with its loader) it imports. The runtime picks the
# file names from ort.env.wasm.wasmPaths, which app.js points here; the WebGPU/WebGL/JSEP builds are not copied.
dist=node_modules/onnxruntime-web/dist
rm -rf vendor models
mkdir -p vendor models
cp "$dist/ort.wasm.min.mjs" "$dist/ort-wasm-simd-threaded.mjs" "$dist/ort-wasm-simd-threaded.wasm" vendor/

shopt -s nullglob
onnx_files=("$models_dir"/*.onnx)
if [ ${#onnx_files[@]} -eq 0 ]; then
  echo "build.sh: no episode models (*.onnx) in $models_dir" >&2
  exit 1
fi
for onnx in "${onnx_files[@]}"; do
  sidecar="${onnx%.onnx}.json"
  if [ ! -f "$sidecar" ]; then
    echo "build.sh: $onnx has no sidecar $sidecar" >&2
    exit 1
  fi
  cp "$onnx" "$sidecar" models/
done
echo "build.sh: vendor/ ($(du -sh vendor | cut -f1)) and models/ ($(cd models && echo *.onnx)) ready in $web"
