// Python bindings of the glimpse sensor (module ram_infer._sensor): every input goes through checks.h before any memory
// is read.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "sensor.h"

namespace py = pybind11;

namespace {

static_assert(std::is_same<py::ssize_t, std::ptrdiff_t>::value, "numpy shapes are read as std::ptrdiff_t");

std::string dtype_name(const void* handle) {
  return py::str(static_cast<const py::array*>(handle)->dtype()).cast<std::string>();
}

// What checks.h needs of a numpy array; valid while `a` lives.
ram::ArrayView view_of(const py::array& a) {
  ram::ArrayView v;
  v.data = a.data();
  v.ndim = static_cast<int>(a.ndim());
  v.shape = a.shape();
  v.strides = a.strides();
  v.is_float32 = py::isinstance<py::array_t<float>>(a);
  v.writeable = a.writeable();
  v.dtype_name = dtype_name;
  v.handle = &a;
  return v;
}

py::array_t<float> extract_glimpses_cpu(const py::array& images, const py::array& locations, int64_t glimpse_size,
                                        int64_t num_scales, int64_t scale_factor, std::optional<py::array> out,
                                        int threads) {
  const ram::ArrayView out_view = out ? view_of(*out) : ram::ArrayView{};
  const ram::GlimpseCall call = ram::check_glimpse_call(view_of(images), view_of(locations), out ? &out_view : nullptr,
                                                        glimpse_size, num_scales, scale_factor);
  const ram::SensorSpec& spec = call.spec;
  const ram::ImageShape& shape = call.shape;
  py::array_t<float> result;
  if (out) {
    result = py::reinterpret_borrow<py::array_t<float>>(*out);
  } else {
    result = py::array_t<float>(
        std::vector<py::ssize_t>{shape.batch, spec.num_scales, shape.channels, spec.glimpse_size, spec.glimpse_size});
  }
  const float* img = static_cast<const float*>(images.data());
  const float* loc = static_cast<const float*>(locations.data());
  float* dst = result.mutable_data();
  {
    py::gil_scoped_release release;
    ram::extract_glimpses_cpu(img, loc, dst, shape, spec, threads);
  }
  return result;
}

#if defined(RAM_INFER_WITH_CUDA)
// Device arrays arrive as raw pointers from __cuda_array_interface__; ram_infer/sensor.py has checked their dtype,
// shape and contiguity. The kernel file checks the locations for NaN if asked.
void extract_glimpses_cuda(uintptr_t images, uintptr_t locations, uintptr_t out, std::vector<int64_t> image_shape,
                           int64_t glimpse_size, int64_t num_scales, int64_t scale_factor, uintptr_t stream,
                           bool check_nan) {
  const ram::SensorSpec spec = ram::check_spec(glimpse_size, num_scales, scale_factor);
  RAM_CHECK(image_shape.size() == 4, "images must have shape (N, C, H, W)");
  const ram::ImageShape shape = ram::check_image_shape(image_shape[0], image_shape[1], image_shape[2], image_shape[3]);
  if (shape.batch == 0) return;
  RAM_CHECK(images != 0 && locations != 0 && out != 0, "device pointers must not be null");
  py::gil_scoped_release release;
  ram::extract_glimpses_cuda(reinterpret_cast<const float*>(images), reinterpret_cast<const float*>(locations),
                             reinterpret_cast<float*>(out), shape, spec, reinterpret_cast<void*>(stream), check_nan);
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
  m.def("extract_glimpses_cpu", &extract_glimpses_cpu, py::arg("images"), py::arg("locations"), py::arg("glimpse_size"),
        py::arg("num_scales"), py::arg("scale_factor") = 2, py::arg("out") = py::none(), py::arg("threads") = 0,
        "Glimpses [N, k, C, g, g] of float32 images [N, C, H, W] at locations [N, 2]; writes into `out` if given.");
#if defined(RAM_INFER_WITH_CUDA)
  m.def("extract_glimpses_cuda", &extract_glimpses_cuda, py::arg("images"), py::arg("locations"), py::arg("out"),
        py::arg("image_shape"), py::arg("glimpse_size"), py::arg("num_scales"), py::arg("scale_factor"),
        py::arg("stream") = 0, py::arg("check_nan") = true,
        "The same on device pointers (from __cuda_array_interface__) on `stream`; check_nan=False skips the NaN\n"
        "check and its stream synchronisation (NaN locations then give NaN glimpses).");
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  // The sensor's limits (checks.h), so that the numpy reference's copies can be checked against them.
  m.attr("MAX_IMAGE_SIDE") = ram::kMaxImageSide;
  m.attr("MAX_PATCH_SIDE") = ram::kMaxPatchSide;
  m.attr("MAX_SCALES") = ram::kMaxScales;
  m.def("cuda_device_count", &cuda_device_count,
        "Number of usable CUDA devices (0 without a GPU, driver or CUDA build).");
}
