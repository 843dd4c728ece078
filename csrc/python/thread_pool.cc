// pybind11 face of the thread pool's LingerScope (runtime/thread_pool.h): `with
// _C.workers_awake():` keeps the pool's workers spinning between the kernels called inside,
// as they do between a decode step's kernels. benchmarks/linear.py times projections so:
// with a sleeping worker woken for every call, the wake-up (tens of µs on these VMs) cost
// more than a hot 768 × 3072 int8 projection at m = 1 itself.
#include <pybind11/pybind11.h>

#include <memory>
#include <stdexcept>
#include <thread>

#include "runtime/thread_pool.h"

namespace py = pybind11;

namespace aigc::python {
namespace {

// The scope counts per thread, so it must end on the thread that began it.
class WorkersAwake {
 public:
  WorkersAwake() = default;
  WorkersAwake(const WorkersAwake&) = delete;
  WorkersAwake& operator=(const WorkersAwake&) = delete;
  // Collected while still open on another thread: left open rather than closed on the wrong
  // thread's count.
  ~WorkersAwake() {
    if (scope_ && std::this_thread::get_id() != owner_) (void)scope_.release();
  }

  WorkersAwake& enter() {
    if (scope_) throw std::runtime_error("workers_awake: already entered; use a new one to nest");
    owner_ = std::this_thread::get_id();
    scope_ = std::make_unique<LingerScope>();
    return *this;
  }
  void exit() {
    if (!scope_) return;
    if (std::this_thread::get_id() != owner_) {
      throw std::runtime_error("workers_awake: exited on another thread than the one that entered it");
    }
    scope_.reset();
  }

 private:
  std::unique_ptr<LingerScope> scope_;
  std::thread::id owner_;
};

}  // namespace

void bind_thread_pool(py::module_& m) {
  py::class_<WorkersAwake>(m, "workers_awake")
      .def(py::init<>())
      .def("__enter__", &WorkersAwake::enter, py::return_value_policy::reference_internal)
      .def("__exit__", [](WorkersAwake& self, py::object, py::object, py::object) { self.exit(); });
  m.def("workers_lingering", &lingering, "whether a workers_awake (or a decode step) is open on this thread");
}

}  // namespace aigc::python
