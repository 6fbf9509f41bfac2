// Input checks of the glimpse sensor, in plain C++: the Python binding (bindings.cpp) and the fuzzer
// (fuzz/fuzz_sensor.cpp) call the same functions, so what the fuzzer proves safe is what Python users get.
//
// Every check throws std::invalid_argument (pybind11 turns it into ValueError) before any array memory is read,
// except the NaN scan of the locations, which runs only after their shape and layout have been accepted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "sensor.h"

namespace ram {

// Limits that keep every index and block area far inside int64 and every centre computation exact (see centre_pixel).
constexpr int64_t kMaxImageSide = int64_t{1} << 28;
constexpr int64_t kMaxPatchSide = int64_t{1} << 24;
// More scales than this cannot differ (s >= 2 reaches kMaxPatchSide by 24) and, with s = 1, would only repeat the
// first patch; the bound also keeps the check below from looping over an arbitrary int64.
constexpr int64_t kMaxScales = 64;

// A macro, like TORCH_CHECK, so the message is only built when the check fails: at batch 1 building every message
// eagerly cost more than the glimpse itself.
#define RAM_CHECK(ok, message)                       \
  do {                                               \
    if (!(ok)) throw std::invalid_argument(message); \
  } while (false)

// A strided host array as numpy describes it (shape and byte strides), without pybind11.
struct ArrayView {
  const void* data = nullptr;
  int ndim = 0;
  const std::ptrdiff_t* shape = nullptr;
  const std::ptrdiff_t* strides = nullptr;  // in bytes, may be negative or zero
  bool is_float32 = false;
  bool writeable = true;
  // The dtype's name for the "must be float32" message, built only when that check fails.
  std::string (*dtype_name)(const void* handle) = nullptr;
  const void* handle = nullptr;  // passed to dtype_name (the binding's py::array)
};

// The checked parameters of one call.
struct GlimpseCall {
  SensorSpec spec;
  ImageShape shape;
};

inline std::string shape_string(const std::ptrdiff_t* dims, int ndim) {
  std::string s = "(";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (ndim == 1 ? ",)" : ")");
}

// numpy's C_CONTIGUOUS rule: strides are those of a dense row-major float32 array, ignoring axes of length 1, and an
// empty array is always contiguous.
inline bool is_c_contiguous(const ArrayView& a) {
  for (int i = 0; i < a.ndim; ++i)
    if (a.shape[i] == 0) return true;
  std::ptrdiff_t expected = sizeof(float);
  for (int i = a.ndim - 1; i >= 0; --i) {
    if (a.shape[i] == 1) continue;
    if (a.strides[i] != expected) return false;
    expected *= a.shape[i];
  }
  return true;
}

// numpy's ALIGNED rule for a C-contiguous float32 array: the data pointer is a multiple of alignof(float).
inline bool is_aligned(const ArrayView& a) { return reinterpret_cast<std::uintptr_t>(a.data) % alignof(float) == 0; }

inline void check_float32_c_contiguous(const ArrayView& a, const char* name) {
  RAM_CHECK(a.is_float32, std::string(name) + " must be float32, got " + (a.dtype_name ? a.dtype_name(a.handle) : "?"));
  RAM_CHECK(is_c_contiguous(a), std::string(name) + " must be C-contiguous");
  RAM_CHECK(is_aligned(a), std::string(name) + " must be aligned");
}

inline SensorSpec check_spec(int64_t glimpse_size, int64_t num_scales, int64_t scale_factor) {
  RAM_CHECK(glimpse_size >= 1, "glimpse_size must be >= 1, got " + std::to_string(glimpse_size));
  RAM_CHECK(num_scales >= 1, "num_scales must be >= 1, got " + std::to_string(num_scales));
  RAM_CHECK(num_scales <= kMaxScales,
            "num_scales must be <= " + std::to_string(kMaxScales) + ", got " + std::to_string(num_scales));
  RAM_CHECK(scale_factor >= 1, "scale_factor must be >= 1, got " + std::to_string(scale_factor));
  int64_t side = glimpse_size;
  for (int64_t i = 1; i < num_scales; ++i) {
    RAM_CHECK(
        side <= kMaxPatchSide / scale_factor,
        "largest patch side glimpse_size * scale_factor^(num_scales - 1) must be <= " + std::to_string(kMaxPatchSide));
    side *= scale_factor;
  }
  RAM_CHECK(side <= kMaxPatchSide, "glimpse_size must be <= " + std::to_string(kMaxPatchSide));
  return {glimpse_size, num_scales, scale_factor};
}

inline ImageShape check_image_shape(int64_t n, int64_t c, int64_t h, int64_t w) {
  RAM_CHECK(n >= 0 && c >= 1 && h >= 1 && w >= 1, "images must have shape (N, C, H, W) with C, H, W >= 1, got (" +
                                                      std::to_string(n) + ", " + std::to_string(c) + ", " +
                                                      std::to_string(h) + ", " + std::to_string(w) + ")");
  RAM_CHECK(h <= kMaxImageSide && w <= kMaxImageSide,
            "image height and width must be <= " + std::to_string(kMaxImageSide));
  return {n, c, h, w};
}

inline void check_locations_finite(const float* locations, int64_t n) {
  const int64_t row = first_nan_row(locations, n);
  RAM_CHECK(row < 0, "locations must not be NaN (row " + std::to_string(row) + ")");
}

// Every check of extract_glimpses_cpu, in the binding's order; `out` is null when the caller allocates the result.
// On return, images, locations and out (if given) may be read and written as dense arrays of the returned shapes.
inline GlimpseCall check_glimpse_call(const ArrayView& images, const ArrayView& locations, const ArrayView* out,
                                      int64_t glimpse_size, int64_t num_scales, int64_t scale_factor) {
  const SensorSpec spec = check_spec(glimpse_size, num_scales, scale_factor);
  check_float32_c_contiguous(images, "images");
  RAM_CHECK(images.ndim == 4, "images must have shape (N, C, H, W), got " + shape_string(images.shape, images.ndim));
  const ImageShape shape = check_image_shape(images.shape[0], images.shape[1], images.shape[2], images.shape[3]);
  check_float32_c_contiguous(locations, "locations");
  RAM_CHECK(locations.ndim == 2 && locations.shape[0] == shape.batch && locations.shape[1] == 2,
            "locations must have shape (" + std::to_string(shape.batch) + ", 2), got " +
                shape_string(locations.shape, locations.ndim));
  check_locations_finite(static_cast<const float*>(locations.data), shape.batch);
  if (out != nullptr) {
    const std::ptrdiff_t want[5] = {shape.batch, spec.num_scales, shape.channels, spec.glimpse_size, spec.glimpse_size};
    check_float32_c_contiguous(*out, "out");
    RAM_CHECK(out->writeable, "out must be writeable");
    bool same = out->ndim == 5;
    for (int i = 0; same && i < 5; ++i) same = out->shape[i] == want[i];
    RAM_CHECK(same, "out must have shape (N, k, C, g, g) = " + shape_string(want, 5) + ", got " +
                        shape_string(out->shape, out->ndim));
  }
  return {spec, shape};
}

}  // namespace ram
