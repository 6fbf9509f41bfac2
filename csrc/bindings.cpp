// Python bindings of the glimpse sensor (module ram_infer._sensor): every input is checked here, before any memory is read.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sensor.h"

namespace py = pybind11;

namespace {

// Limits that keep every index and block area far inside int64 and every centre computation exact (see centre_pixel).
constexpr int64_t kMaxImageSide = int64_t{1} << 28;
constexpr int64_t kMaxPatchSide = int64_t{1} << 24;

std::string shape_string(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// A macro, like TORCH_CHECK, so the message is only built when the check fails: at batch 1 building every message
// eagerly cost more than the glimpse itself.
#define RAM_CHECK(ok, message)                                   \
  do {                                                           \
    if (!(ok)) throw std::invalid_argument(message);             \
  } while (false)

void check_float32_c_contiguous(const py::array& a, const char* name) {
  RAM_CHECK(py::isinstance<py::array_t<float>>(a),
            std::string(name) + " must be float32, got " + py::str(a.dtype()).cast<std::string>());
  RAM_CHECK((a.flags() & py::array::c_style) != 0, std::string(name) + " must be C-contiguous");
  RAM_CHECK((a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0, std::string(name) + " must be aligned");
}

ram::SensorSpec check_spec(int64_t glimpse_size, int64_t num_scales, int64_t scale_factor) {
  RAM_CHECK(glimpse_size >= 1, "glimpse_size must be >= 1, got " + std::to_string(glimpse_size));
  RAM_CHECK(num_scales >= 1, "num_scales must be >= 1, got " + std::to_string(num_scales));
  RAM_CHECK(scale_factor >= 1, "scale_factor must be >= 1, got " + std::to_string(scale_factor));
  int64_t side = glimpse_size;
  for (int64_t i = 1; i < num_scales; ++i) {
    RAM_CHECK(side <= kMaxPatchSide / scale_factor,
              "largest patch side glimpse_size * scale_factor^(num_scales - 1) must be <= " +
                  std::to_string(kMaxPatchSide));
    side *= scale_factor;
  }
  RAM_CHECK(side <= kMaxPatchSide, "glimpse_size must be <= " + std::to_string(kMaxPatchSide));
  return {glimpse_size, num_scales, scale_factor};
}

ram::ImageShape check_image_shape(int64_t n, int64_t c, int64_t h, int64_t w) {
  RAM_CHECK(n >= 0 && c >= 1 && h >= 1 && w >= 1,
            "images must have shape (N, C, H, W) with C, H, W >= 1, got (" + std::to_string(n) + ", " + std::to_string(c) +
                ", " + std::to_string(h) + ", " + std::to_string(w) + ")");
  RAM_CHECK(h <= kMaxImageSide && w <= kMaxImageSide, "image height and width must be <= " + std::to_string(kMaxImageSide));
  return {n, c, h, w};
}

void check_locations_finite(const float* locations, int64_t n) {
  const int64_t row = ram::first_nan_row(locations, n);
  RAM_CHECK(row < 0, "locations must not be NaN (row " + std::to_string(row) + ")");
}

py::array_t<float> extract_glimpses_cpu(const py::array& images, const py::array& locations, int64_t glimpse_size,
                                        int64_t num_scales, int64_t scale_factor, std::optional<py::array> out,
                                        int threads) {
  const ram::SensorSpec spec = check_spec(glimpse_size, num_scales, scale_factor);
  check_float32_c_contiguous(images, "images");
  RAM_CHECK(images.ndim() == 4, "images must have shape (N, C, H, W), got " + shape_string(images));
  const ram::ImageShape shape = check_image_shape(images.shape(0), images.shape(1), images.shape(2), images.shape(3));
  check_float32_c_contiguous(locations, "locations");
  RAM_CHECK(locations.ndim() == 2 && locations.shape(0) == shape.batch && locations.shape(1) == 2,
            "locations must have shape (" + std::to_string(shape.batch) + ", 2), got " + shape_string(locations));
  const float* loc = static_cast<const float*>(locations.data());
  check_locations_finite(loc, shape.batch);

  const std::vector<py::ssize_t> out_shape{shape.batch, spec.num_scales, shape.channels, spec.glimpse_size,
                                           spec.glimpse_size};
  py::array_t<float> result;
  if (out) {
    check_float32_c_contiguous(*out, "out");
    RAM_CHECK(out->writeable(), "out must be writeable");
    RAM_CHECK(std::vector<py::ssize_t>(out->shape(), out->shape() + out->ndim()) == out_shape,
              "out must have shape (N, k, C, g, g) = " + shape_string(py::array_t<float>(out_shape)) + ", got " +
                  shape_string(*out));
    result = py::reinterpret_borrow<py::array_t<float>>(*out);
  } else {
    result = py::array_t<float>(out_shape);
  }
  const float* img = static_cast<const float*>(images.data());
  float* dst = result.mutable_data();
  {
    py::gil_scoped_release release;
    ram::extract_glimpses_cpu(img, loc, dst, shape, spec, threads);
  }
  return result;
}

#if defined(RAM_INFER_WITH_CUDA)
// Device arrays arrive as raw pointers from __cuda_array_interface__; ram_infer/sensor.py has checked their dtype,
// shape and contiguity. The kernel file checks the locations for NaN.
void extract_glimpses_cuda(uintptr_t images, uintptr_t locations, uintptr_t out, std::vector<int64_t> image_shape,
                           int64_t glimpse_size, int64_t num_scales, int64_t scale_factor, uintptr_t stream) {
  const ram::SensorSpec spec = check_spec(glimpse_size, num_scales, scale_factor);
  RAM_CHECK(image_shape.size() == 4, "images must have shape (N, C, H, W)");
  const ram::ImageShape shape = check_image_shape(image_shape[0], image_shape[1], image_shape[2], image_shape[3]);
  if (shape.batch == 0) return;
  RAM_CHECK(images != 0 && locations != 0 && out != 0, "device pointers must not be null");
  py::gil_scoped_release release;
  ram::extract_glimpses_cuda(reinterpret_cast<const float*>(images), reinterpret_cast<const float*>(locations),
                             reinterpret_cast<float*>(out), shape, spec, reinterpret_cast<void*>(stream));
}
#endif

int cuda_device_count() {
#if defined(RAM_INFER_WITH_CUDA)
  return ram::cuda_device_count();
#else
  return 0;
#endif
}

}  // namespace

PYBIND11_MODULE(_sensor, m) {
  m.doc() = "Compiled glimpse sensor rho(x, l) of the Recurrent Attention Model (contract: csrc/sensor.h).";
  m.def("extract_glimpses_cpu", &extract_glimpses_cpu, py::arg("images"), py::arg("locations"),
        py::arg("glimpse_size"), py::arg("num_scales"), py::arg("scale_factor") = 2, py::arg("out") = py::none(),
        py::arg("threads") = 0,
        "Glimpses [N, k, C, g, g] of float32 images [N, C, H, W] at locations [N, 2]; writes into `out` if given.");
#if defined(RAM_INFER_WITH_CUDA)
  m.def("extract_glimpses_cuda", &extract_glimpses_cuda, py::arg("images"), py::arg("locations"), py::arg("out"),
        py::arg("image_shape"), py::arg("glimpse_size"), py::arg("num_scales"), py::arg("scale_factor"),
        py::arg("stream") = 0, "The same on device pointers (from __cuda_array_interface__) on `stream`.");
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  m.def("cuda_device_count", &cuda_device_count, "Number of usable CUDA devices (0 without a GPU, driver or CUDA build).");
}
