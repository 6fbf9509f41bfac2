// The glimpse sensor on CUDA: one thread per output element in a grid-stride loop, calling the contract's
// glimpse_pixel.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "sensor.h"

namespace ram {
namespace {

constexpr int kThreadsPerBlock = 256;

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// Output index i enumerates (n, scale, c, oy, ox) in row-major order of out [N, k, C, g, g]. A NaN location (only
// possible when the caller skipped the host-side check) gives NaN glimpses: NaN has no pixel to read.
__global__ void glimpse_kernel(const float* __restrict__ images, const float* __restrict__ locations,
                               float* __restrict__ out, ImageShape shape, SensorSpec spec, int64_t total) {
  const int64_t g = spec.glimpse_size;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ox = i % g;
    const int64_t oy = (i / g) % g;
    const int64_t c = (i / (g * g)) % shape.channels;
    const int64_t scale = (i / (g * g * shape.channels)) % spec.num_scales;
    const int64_t n = i / (g * g * shape.channels * spec.num_scales);
    const float x = locations[2 * n], y = locations[2 * n + 1];
    if (isnan(x) || isnan(y)) {
      out[i] = nanf("");
      continue;
    }
    const int64_t cx = centre_pixel(x, shape.width);
    const int64_t cy = centre_pixel(y, shape.height);
    const float* plane = images + (n * shape.channels + c) * shape.height * shape.width;
    out[i] = glimpse_pixel(plane, shape.height, shape.width, cx, cy, spec, scale, oy, ox);
  }
}

// The contract's NaN check: copies the locations to the host, which waits for the work queued on the stream.
void throw_if_nan(const float* locations, int64_t batch, cudaStream_t stream) {
  std::vector<float> host_locations(2 * batch);
  check_cuda(cudaMemcpyAsync(host_locations.data(), locations, host_locations.size() * sizeof(float),
                             cudaMemcpyDeviceToHost, stream),
             "reading locations failed");
  check_cuda(cudaStreamSynchronize(stream), "reading locations failed");
  const int64_t nan_row = first_nan_row(host_locations.data(), batch);
  if (nan_row >= 0) throw std::invalid_argument("locations must not be NaN (row " + std::to_string(nan_row) + ")");
}

}  // namespace

void extract_glimpses_cuda(const float* images, const float* locations, float* out, const ImageShape& shape,
                           const SensorSpec& spec, void* stream, bool check_nan) {
  const int64_t total = glimpse_numel(shape, spec);
  if (total == 0) return;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  if (check_nan) throw_if_nan(locations, shape.batch, cuda_stream);
  const int64_t wanted = (total + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const int blocks = static_cast<int>(wanted < 65535 ? wanted : 65535);
  glimpse_kernel<<<blocks, kThreadsPerBlock, 0, cuda_stream>>>(images, locations, out, shape, spec, total);
  check_cuda(cudaGetLastError(), "glimpse kernel launch failed");
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls start clean
    return 0;
  }
  return count;
}

}  // namespace ram
