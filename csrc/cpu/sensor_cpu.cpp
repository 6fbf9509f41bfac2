// The glimpse sensor on the CPU: loops over (n, scale, c, oy, ox) calling the contract's block_mean, threads over n.
#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "sensor.h"

namespace ram {
namespace {

// Below this many input pixels read per call, starting threads costs more than it saves.
constexpr int64_t kMinWorkPerThread = 1 << 16;

void extract_range(const float* images, const float* locations, float* out, const ImageShape& shape,
                   const SensorSpec& spec, int64_t n_begin, int64_t n_end) {
  const int64_t g = spec.glimpse_size;
  const int64_t plane_size = shape.height * shape.width;
  std::vector<Span> row_spans(g), col_spans(g);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int64_t cx = centre_pixel(locations[2 * n], shape.width);
    const int64_t cy = centre_pixel(locations[2 * n + 1], shape.height);
    const float* image = images + n * shape.channels * plane_size;
    float* glimpse = out + n * spec.num_scales * shape.channels * g * g;  // (k, C, g, g)
    for (int64_t scale = 0; scale < spec.num_scales; ++scale) {
      // The blocks' clipped spans are the same for every channel and row: computed once per scale, not per pixel
      // (glimpse_pixel's per-pixel form, which CUDA uses, spent most of its time on them).
      const int64_t b = block_side(spec, scale);
      for (int64_t o = 0; o < g; ++o) {
        row_spans[o] = block_span(cy, o, b, spec, shape.height);
        col_spans[o] = block_span(cx, o, b, spec, shape.width);
      }
      for (int64_t c = 0; c < shape.channels; ++c) {
        const float* plane = image + c * plane_size;
        float* patch = glimpse + (scale * shape.channels + c) * g * g;  // (g, g)
        for (int64_t oy = 0; oy < g; ++oy)
          for (int64_t ox = 0; ox < g; ++ox)
            patch[oy * g + ox] = block_mean(plane, shape.width, row_spans[oy], col_spans[ox], b);
      }
    }
  }
}

// std::thread::hardware_concurrency() reads /sys on every call (about 5-8 us here, more than a whole batch-1 glimpse),
// so it is asked once.
int hardware_threads() {
  static const int count = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return count;
}

// Input pixels one glimpse reads: C * sum_i (g s^i)^2.
int64_t work_per_image(const ImageShape& shape, const SensorSpec& spec) {
  int64_t work = 0;
  for (int64_t scale = 0; scale < spec.num_scales; ++scale) {
    const int64_t side = spec.glimpse_size * block_side(spec, scale);
    work += side * side;
  }
  return work * shape.channels;
}

// The batch cut into `chunks` runs of `chunk` images, which the calling thread and the workers it managed to start take
// in turn. The cut depends only on the requested number of workers, and each image is written by one thread with the
// same arithmetic whichever thread takes it, so the result does not depend on how many threads actually ran.
struct SharedWork {
  const float* images;
  const float* locations;
  float* out;
  const ImageShape& shape;
  const SensorSpec& spec;
  int64_t chunk, chunks;
  std::atomic<int64_t> next{0};
  std::mutex failure_mutex{};  // `{}`: the initialisation below leaves them out, which -Wextra reports otherwise
  std::exception_ptr failure{};

  // Takes chunks until none is left. An exception (std::bad_alloc for the spans) is kept for the calling thread to
  // rethrow after the joins: one leaving a std::thread's function would terminate the process.
  void run() noexcept {
    try {
      for (int64_t i = next++; i < chunks; i = next++)
        extract_range(images, locations, out, shape, spec, i * chunk, std::min(shape.batch, (i + 1) * chunk));
    } catch (...) {
      next = chunks;  // the others start no further chunk
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  }
};

}  // namespace

void extract_glimpses_cpu(const float* images, const float* locations, float* out, const ImageShape& shape,
                          const SensorSpec& spec, int threads) {
  if (threads <= 0) threads = hardware_threads();
  const int64_t total_work = work_per_image(shape, spec) * shape.batch;
  const int64_t useful = std::max<int64_t>(1, total_work / kMinWorkPerThread);
  const int64_t workers = std::min<int64_t>({static_cast<int64_t>(threads), useful, shape.batch});
  if (workers <= 1) {
    extract_range(images, locations, out, shape, spec, 0, shape.batch);
    return;
  }
  const int64_t chunk = (shape.batch + workers - 1) / workers;
  SharedWork work{images, locations, out, shape, spec, chunk, (shape.batch + chunk - 1) / chunk};
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);  // so that emplace_back below can only throw from the std::thread constructor
  try {
    for (int64_t w = 1; w < workers; ++w) pool.emplace_back(&SharedWork::run, &work);
  } catch (const std::exception&) {
    // The system refused a thread (std::system_error: EAGAIN under a process or memory limit, or std::bad_alloc for
    // its state): the threads already running and this one take the chunks the missing ones would have had.
  }
  work.run();
  for (auto& t : pool) t.join();
  if (work.failure) std::rethrow_exception(work.failure);
}

}  // namespace ram
