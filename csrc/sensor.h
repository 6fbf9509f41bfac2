// The glimpse sensor rho(x, l) of the Recurrent Attention Model: the one definition of the contract.
//
// images [N, C, H, W] float32 and locations [N, 2] float32 as (x, y) in [-1, 1] (x along the width, (-1, -1) the
// top-left corner) give glimpses [N, k, C, g, g]. Scale i (0-based) is the square patch of side g * s^i centred on (cx,
// cy) = (min(floor((x + 1) / 2 * W), W - 1), min(floor((y + 1) / 2 * H), H - 1)), starting at cx - side / 2, reduced to
// g x g by averaging non-overlapping s^i x s^i blocks; pixels outside the image count as 0. Locations outside [-1, 1]
// are clamped. The CPU and the CUDA kernels both call glimpse_pixel(), so they cannot drift; ram_infer/sensor.py is the
// numpy twin.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define RAM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RAM_HOST_DEVICE inline
#endif

namespace ram {

struct SensorSpec {
  int64_t glimpse_size;  // g: output side of every scale
  int64_t num_scales;    // k: patches per glimpse
  int64_t scale_factor;  // s: patch i has side g * s^i
};

struct ImageShape {
  int64_t batch, channels, height, width;
};

// s^i, the side of one averaging block at scale i.
RAM_HOST_DEVICE int64_t block_side(const SensorSpec& spec, int64_t scale) {
  int64_t b = 1;
  for (int64_t i = 0; i < scale; ++i) b *= spec.scale_factor;
  return b;
}

// Centre pixel along an axis of `size` pixels. Computed in double, where (l + 1) / 2 * size is exact for float32 l and
// size < 2^29, so every implementation (numpy, C++, CUDA, ONNX) agrees on the floor at pixel boundaries. l = 1 maps
// to the last pixel, like every l just below it: a saturated tanh policy gives 1.0 in one runtime and 0.99999994 in
// another, and both must glimpse the same place.
RAM_HOST_DEVICE int64_t centre_pixel(float l, int64_t size) {
  const double clamped = l < -1.0f ? -1.0 : (l > 1.0f ? 1.0 : static_cast<double>(l));
  const int64_t pixel = static_cast<int64_t>(floor((clamped + 1.0) * 0.5 * static_cast<double>(size)));
  return pixel < size ? pixel : size - 1;
}

// Pixels [begin, end) along one axis, already clipped to the image.
struct Span {
  int64_t begin, end;
};

// Along an axis of `size` pixels: block `o` of the patch of blocks of side b centred on pixel `centre`, clipped.
RAM_HOST_DEVICE Span block_span(int64_t centre, int64_t o, int64_t b, const SensorSpec& spec, int64_t size) {
  const int64_t start = centre - spec.glimpse_size * b / 2 + o * b;
  return {start < 0 ? 0 : start, start + b > size ? size : start + b};
}

// The mean of one clipped block of `plane` ([H, W]): its sum divided by the full block area b², so outside pixels
// count as 0. Accumulation in double in row-major order makes the result independent of threads and devices.
RAM_HOST_DEVICE float block_mean(const float* plane, int64_t width, Span rows, Span cols, int64_t b) {
  double sum = 0.0;
  for (int64_t r = rows.begin; r < rows.end; ++r) {
    const float* row = plane + r * width;
    for (int64_t c = cols.begin; c < cols.end; ++c) sum += row[c];
  }
  return static_cast<float>(sum / static_cast<double>(b * b));
}

// One output pixel: block (oy, ox) of scale `scale` in channel plane `plane` ([H, W]) around (cx, cy).
RAM_HOST_DEVICE float glimpse_pixel(const float* plane, int64_t height, int64_t width, int64_t cx, int64_t cy,
                                    const SensorSpec& spec, int64_t scale, int64_t oy, int64_t ox) {
  const int64_t b = block_side(spec, scale);
  return block_mean(plane, width, block_span(cy, oy, b, spec, height), block_span(cx, ox, b, spec, width), b);
}

// Row of the first NaN in locations [n, 2] (host memory), or -1: NaN has no pixel, so it is an error, not a clamp.
inline int64_t first_nan_row(const float* locations, int64_t n) {
  for (int64_t i = 0; i < 2 * n; ++i)
    if (std::isnan(locations[i])) return i / 2;
  return -1;
}

// Number of floats in the output [N, k, C, g, g].
inline int64_t glimpse_numel(const ImageShape& shape, const SensorSpec& spec) {
  return shape.batch * spec.num_scales * shape.channels * spec.glimpse_size * spec.glimpse_size;
}

// CPU kernel (cpu/sensor_cpu.cpp). Inputs must already be validated by the caller (bindings.cpp).
// threads <= 0 picks the hardware concurrency; small batches always run on the calling thread. Threads the system
// refuses to start (a process or memory limit) are done without: the result is the same, only slower.
void extract_glimpses_cpu(const float* images, const float* locations, float* out, const ImageShape& shape,
                          const SensorSpec& spec, int threads);

#if defined(RAM_INFER_WITH_CUDA)
// CUDA kernel (cuda/sensor_cuda.cu). Device pointers; `stream` is a cudaStream_t (0 = default stream). With
// check_nan it copies the locations to the host first to reject NaN (std::invalid_argument), which synchronises the
// stream; without, it stays asynchronous and a NaN location gives NaN glimpses.
// Throws std::runtime_error with the CUDA error text if a copy or launch fails.
void extract_glimpses_cuda(const float* images, const float* locations, float* out, const ImageShape& shape,
                           const SensorSpec& spec, void* stream, bool check_nan);
// Number of usable CUDA devices; 0 without a GPU or driver.
int cuda_device_count();
#endif

}  // namespace ram
