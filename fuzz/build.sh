#!/usr/bin/env bash
# Builds the libFuzzer target of the CPU glimpse sensor (fuzz/fuzz_sensor.cpp) into OUT_DIR (default build/fuzz);
# usage: fuzz/build.sh [OUT_DIR [TARGET...]], TARGET among the two below (default: both).
#   fuzz_sensor      libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer (any report aborts the run)
#   fuzz_sensor_cov  libFuzzer + source-based coverage, to replay a corpus and measure line coverage
# Needs clang++ with its fuzzer runtime (Debian: apt-get install -y clang libclang-rt-14-dev). See fuzz/README.md.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/build/fuzz}"
if (($# > 1)); then targets=("${@:2}"); else targets=(fuzz_sensor fuzz_sensor_cov); fi
cxx="${CXX_FUZZ:-clang++}"
mkdir -p "$out"
sources=("$repo/fuzz/fuzz_sensor.cpp" "$repo/csrc/cpu/sensor_cpu.cpp")
common=(-std=c++17 -g -I"$repo/csrc" -pthread -Wall -Wextra -Werror)

for target in "${targets[@]}"; do
  case "$target" in
    fuzz_sensor) flags=(-O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all) ;;
    fuzz_sensor_cov) flags=(-O0 -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping) ;;
    *) echo "unknown target $target (fuzz_sensor, fuzz_sensor_cov)" >&2; exit 2 ;;
  esac
  "$cxx" "${common[@]}" "${flags[@]}" "${sources[@]}" -o "$out/$target"
  echo "built $out/$target"
done
