// libFuzzer target of the CPU glimpse sensor: random shapes, strides, alignment, locations, parameters and `out`,
// through the binding's own checks (csrc/checks.h), then the kernel (csrc/cpu/sensor_cpu.cpp).
//
// Every array is a buffer of exactly the bytes its view can address, so AddressSanitizer reports any read or write
// that the checks let through beyond them. A call the checks accept must then give, bit for bit, the output of a
// naive per-pixel loop written from the contract (docs/design.md) and the same output on 1 and on several threads.
// A call they refuse must throw std::invalid_argument and nothing else. Build and run: fuzz/README.md.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#include "checks.h"
#include "sensor.h"

namespace {

// Bounds on what one input may allocate and compute, so the fuzzer runs thousands of calls a second. They bound the
// test, not the sensor: the binding accepts any size numpy can allocate.
constexpr int64_t kMaxBufferFloats = 1 << 16;
constexpr int64_t kMaxWork = 1 << 20;  // input pixels read by the reference loop

std::string fake_dtype(const void*) { return "float64"; }

// A strided array over its own heap block of exactly the addressed bytes (plus a misalignment offset).
struct Buffer {
  std::vector<std::ptrdiff_t> shape, strides;
  std::unique_ptr<unsigned char[]> bytes;
  std::ptrdiff_t size_bytes = 0;
  ram::ArrayView view;
};

// Makes an array of the given shape: usually dense row-major, else with one stride altered (zero, negative,
// doubled, or swapped with another axis), and sometimes misaligned or mislabelled as another dtype.
bool make_buffer(FuzzedDataProvider& in, std::vector<std::ptrdiff_t> shape, Buffer& b) {
  const int ndim = static_cast<int>(shape.size());
  b.shape = std::move(shape);
  b.strides.assign(ndim, 0);
  std::ptrdiff_t stride = sizeof(float);
  for (int i = ndim - 1; i >= 0; --i) {
    b.strides[i] = stride;
    stride *= std::max<std::ptrdiff_t>(b.shape[i], 1);
  }
  if (ndim > 0 && in.ConsumeIntegralInRange<int>(0, 7) == 0) {
    const int axis = in.ConsumeIntegralInRange<int>(0, ndim - 1);
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
        b.strides[axis] = 0;
        break;
      case 1:
        b.strides[axis] = -b.strides[axis];
        break;
      case 2:
        b.strides[axis] *= 2;
        break;
      default:
        std::swap(b.strides[axis], b.strides[in.ConsumeIntegralInRange<int>(0, ndim - 1)]);
        break;
    }
  }
  // The lowest and highest byte offsets any element has: the block holds exactly [lowest, highest + 4).
  std::ptrdiff_t lowest = 0, highest = 0, count = 1;
  for (int i = 0; i < ndim; ++i) count *= b.shape[i];
  for (int i = 0; i < ndim && count > 0; ++i) {
    const std::ptrdiff_t span = (b.shape[i] - 1) * b.strides[i];
    (span < 0 ? lowest : highest) += span;
  }
  const std::ptrdiff_t floats = count == 0 ? 0 : (highest - lowest) / 4 + 1;
  if (floats > kMaxBufferFloats) return false;
  const int misalign = in.ConsumeIntegralInRange<int>(0, 15) == 0 ? in.ConsumeIntegralInRange<int>(1, 3) : 0;
  b.size_bytes = floats * 4 + misalign;
  b.bytes.reset(new unsigned char[std::max<std::ptrdiff_t>(b.size_bytes, 1)]);
  unsigned char* origin = b.bytes.get() + misalign - lowest;
  // Values: finite, huge, infinite, NaN, negative zero, denormal; written bytewise (the block may be misaligned).
  for (std::ptrdiff_t i = 0; i < floats; ++i) {
    static const float specials[] = {0.0f,
                                     -0.0f,
                                     1.0f,
                                     -1.0f,
                                     0.5f,
                                     1e30f,
                                     -1e30f,
                                     std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(),
                                     std::numeric_limits<float>::quiet_NaN(),
                                     std::numeric_limits<float>::denorm_min(),
                                     std::numeric_limits<float>::max()};
    const float value = in.ConsumeBool() ? specials[in.ConsumeIntegralInRange<size_t>(0, std::size(specials) - 1)]
                                         : in.ConsumeFloatingPointInRange<float>(-2.0f, 2.0f);
    std::memcpy(b.bytes.get() + misalign + i * 4, &value, 4);
  }
  b.view.data = origin;
  b.view.ndim = ndim;
  b.view.shape = b.shape.data();
  b.view.strides = b.strides.data();
  b.view.is_float32 = in.ConsumeIntegralInRange<int>(0, 31) != 0;
  b.view.writeable = in.ConsumeIntegralInRange<int>(0, 31) != 0;
  b.view.dtype_name = fake_dtype;
  return true;
}

// The contract as a direct loop: the centre pixel is (min(floor((x + 1) / 2 * W), W - 1), likewise y with H), and
// output (n, i, c, oy, ox) is the mean over the s^i x s^i block of the patch of side g * s^i whose first pixel is
// (centre - side / 2), pixels outside the image counting as 0.
std::vector<float> reference(const float* images, const float* locations, const ram::ImageShape& shape,
                             const ram::SensorSpec& spec) {
  const int64_t g = spec.glimpse_size;
  std::vector<float> out(static_cast<size_t>(ram::glimpse_numel(shape, spec)));
  size_t o = 0;
  for (int64_t n = 0; n < shape.batch; ++n) {
    const double x = std::min(1.0, std::max(-1.0, static_cast<double>(locations[2 * n])));
    const double y = std::min(1.0, std::max(-1.0, static_cast<double>(locations[2 * n + 1])));
    const auto pixel = [](double l, int64_t size) {
      return std::min<int64_t>(static_cast<int64_t>(std::floor((l + 1.0) / 2.0 * static_cast<double>(size))), size - 1);
    };
    const int64_t cx = pixel(x, shape.width), cy = pixel(y, shape.height);
    int64_t b = 1;
    for (int64_t i = 0; i < spec.num_scales; ++i, b *= spec.scale_factor) {
      const int64_t side = g * b;
      for (int64_t c = 0; c < shape.channels; ++c) {
        const float* plane = images + (n * shape.channels + c) * shape.height * shape.width;
        for (int64_t oy = 0; oy < g; ++oy) {
          for (int64_t ox = 0; ox < g; ++ox) {
            double sum = 0.0;
            for (int64_t r = cy - side / 2 + oy * b; r < cy - side / 2 + (oy + 1) * b; ++r)
              for (int64_t q = cx - side / 2 + ox * b; q < cx - side / 2 + (ox + 1) * b; ++q)
                if (r >= 0 && r < shape.height && q >= 0 && q < shape.width) sum += plane[r * shape.width + q];
            out[o++] = static_cast<float>(sum / static_cast<double>(b * b));
          }
        }
      }
    }
  }
  return out;
}

bool same_bits(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))) || std::signbit(a[i]) != std::signbit(b[i]))
      return false;
  return true;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_sensor: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // Parameters: mostly small valid values, sometimes any int64 (zero, negative, overflowing).
  auto parameter = [&](int64_t low, int64_t high) {
    return in.ConsumeIntegralInRange<int>(0, 7) == 0 ? in.ConsumeIntegral<int64_t>()
                                                     : in.ConsumeIntegralInRange<int64_t>(low, high);
  };
  const int64_t g = parameter(1, 8), k = parameter(1, 4), s = parameter(1, 4);
  // Images: rank 4 usually; 0–6 otherwise. Sides 0–40 (0 is refused, 1 is the thinnest image).
  const int rank = in.ConsumeIntegralInRange<int>(0, 7) == 0 ? in.ConsumeIntegralInRange<int>(0, 6) : 4;
  std::vector<std::ptrdiff_t> image_shape(rank);
  for (int i = 0; i < rank; ++i) image_shape[i] = in.ConsumeIntegralInRange<std::ptrdiff_t>(0, i < 2 ? 3 : 40);
  const std::ptrdiff_t batch = rank > 0 ? image_shape[0] : 0;
  std::vector<std::ptrdiff_t> location_shape{batch, 2};
  if (in.ConsumeIntegralInRange<int>(0, 15) == 0)
    location_shape = {in.ConsumeIntegralInRange<std::ptrdiff_t>(0, 3), in.ConsumeIntegralInRange<std::ptrdiff_t>(0, 3)};
  const bool with_out = in.ConsumeBool();
  const int threads = in.ConsumeIntegralInRange<int>(-1, 4);

  Buffer images, locations, out;
  if (!make_buffer(in, image_shape, images) || !make_buffer(in, location_shape, locations)) return -1;
  if (with_out) {
    // The expected output shape when the parameters are sane, else (or sometimes) a wrong one.
    std::vector<std::ptrdiff_t> out_shape{batch, std::max<int64_t>(0, std::min<int64_t>(k, 4)),
                                          rank > 1 ? image_shape[1] : 1, std::max<int64_t>(0, std::min<int64_t>(g, 8)),
                                          std::max<int64_t>(0, std::min<int64_t>(g, 8))};
    if (in.ConsumeIntegralInRange<int>(0, 7) == 0) out_shape[in.ConsumeIntegralInRange<int>(0, 4)] += 1;
    if (!make_buffer(in, out_shape, out)) return -1;
  }

  ram::GlimpseCall call;
  try {
    call = ram::check_glimpse_call(images.view, locations.view, with_out ? &out.view : nullptr, g, k, s);
  } catch (const std::invalid_argument&) {
    return 0;  // refused before touching the data: what the binding turns into ValueError
  }
  // Accepted: skip calls too large for a quick fuzz iteration (numpy would allocate them; the kernel is linear).
  const int64_t numel = ram::glimpse_numel(call.shape, call.spec);
  int64_t area = 0;  // sum of the patch areas, at most kMaxScales * kMaxPatchSide^2 < 2^55
  for (int64_t i = 0; i < call.spec.num_scales; ++i) {
    const int64_t side = call.spec.glimpse_size * ram::block_side(call.spec, i);
    area += side * side;
  }
  if (numel > kMaxBufferFloats || area > kMaxWork / std::max<int64_t>(1, call.shape.batch * call.shape.channels))
    return -1;

  std::vector<float> own(static_cast<size_t>(numel));
  float* result = with_out ? static_cast<float*>(const_cast<void*>(out.view.data)) : own.data();
  const auto* x = static_cast<const float*>(images.view.data);
  const auto* l = static_cast<const float*>(locations.view.data);
  ram::extract_glimpses_cpu(x, l, result, call.shape, call.spec, threads);
  const std::vector<float> expected = reference(x, l, call.shape, call.spec);
  if (!same_bits(result, expected.data(), numel)) fail("kernel differs from the contract's loop");
  std::vector<float> single(static_cast<size_t>(numel));
  ram::extract_glimpses_cpu(x, l, single.data(), call.shape, call.spec, 1);
  if (!same_bits(result, single.data(), numel)) fail("result depends on the thread count");
  return 0;
}
