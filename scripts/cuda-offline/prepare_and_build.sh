#!/usr/bin/env bash
# Build Switchyard's CUDA embedder binaries on a machine WITHOUT nvcc, from
# kernels that device_build_kernels.sh compiled on the GPU machine.
#
#   1. on the GPU machine (device tool): scripts/cuda-offline/device_build_kernels.sh
#      with .cuda/candle-kernels carried; bring back its tarball and unpack it
#      into .cuda/ (ptx/, libmoe.a, libs/*.soname, libs/*.syms);
#   2. here: scripts/cuda-offline/prepare_and_build.sh
#   3. carry the binaries and the model to the GPU machine and run
#      scripts/cuda-offline/device_run.sh (see docs/embeddings.md, Devices).
#
# Nothing here is used by the CPU build, the tests or CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cuda=$root/.cuda
registry=$(ls -d "$HOME"/.cargo/registry/src/*/candle-kernels-0.11.1 | head -1)

# candle-kernels with a build script that copies the prebuilt PTX instead of
# running nvcc (same crate otherwise).
if [ ! -f "$cuda/candle-kernels/.prebuilt" ]; then
  rm -rf "$cuda/candle-kernels"
  cp -r "$registry" "$cuda/candle-kernels"
  cp scripts/cuda-offline/candle-kernels-build.rs "$cuda/candle-kernels/build.rs"
  sed -i '/^\[build-dependencies.cudaforge\]/,$d' "$cuda/candle-kernels/Cargo.toml"
  touch "$cuda/candle-kernels/.prebuilt"
fi

# Link-time stand-ins for the CUDA libraries: same SONAMEs and symbols, empty
# bodies. At run time the GPU machine's real libraries are loaded instead.
mkdir -p "$cuda/root/lib64"
for lib in cuda cudart cublas cublasLt curand nvrtc; do
  soname=$(cat "$cuda/libs/$lib.soname")
  grep -E '^[A-Za-z_][A-Za-z0-9_]*$' "$cuda/libs/$lib.syms" | sed 's/.*/void &(void){}/' > "$cuda/stub_$lib.c"
  gcc -shared -fPIC -Wl,-soname,"$soname" -o "$cuda/root/lib64/$soname" "$cuda/stub_$lib.c"
  ln -sf "$soname" "$cuda/root/lib64/lib$lib.so"
done
cp "$cuda/libmoe.a" "$cuda/root/lib64/"

export SWITCHYARD_PREBUILT_KERNELS=$cuda CUDARC_CUDA_VERSION=13000 CUDA_ROOT=$cuda/root CARGO_TARGET_DIR=$root/target-cuda
patch="patch.crates-io.candle-kernels.path=\"$cuda/candle-kernels\""
cp Cargo.lock "$cuda/Cargo.lock.orig"
trap 'cp "$cuda/Cargo.lock.orig" Cargo.lock' EXIT
cargo --config "$patch" build --release -p switchyard-benches --bin embed_throughput --features switchyard-embedder/cuda
cargo --config "$patch" test --release -p switchyard-embedder --features cuda --test model --no-run
echo "built: target-cuda/release/embed_throughput and target-cuda/release/deps/model-*"
