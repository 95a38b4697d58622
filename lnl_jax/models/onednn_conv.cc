// The network's stride-1 2-D convolution and its two gradients, run by oneDNN's CPU kernels (the
// library behind PyTorch's CPU convolutions), as XLA FFI handlers: lnl_jax/models/onednn.py builds
// this file and calls it. Arrays are float32, activations (..., N, H, W, C) and kernels
// (..., k, k, C, O), row-major, as JAX lays them out; leading dimensions are groups.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

// The engine and the primitives below live as long as the process (never destroyed: no static
// destructor runs while another still holds them).
dnnl::engine& Engine() {
  static auto* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// (N, H, W, C) ⋆ (k, k, C, O) -> (N, Ho, Wo, O), `pad` zeros each side.
struct Shape {
  int64_t n, h, w, c, k, o, pad;
  int64_t ho() const { return h + 2 * pad - k + 1; }
  int64_t wo() const { return w + 2 * pad - k + 1; }
  auto key() const { return std::make_tuple(n, h, w, c, k, o, pad); }
  memory::desc src() const { return {{n, c, h, w}, memory::data_type::f32, tag::nhwc}; }
  memory::desc dst() const { return {{n, o, ho(), wo()}, memory::data_type::f32, tag::nhwc}; }
  memory::desc weights(tag t) const { return {{o, c, k, k}, memory::data_type::f32, t}; }
};

// The forward convolution the gradients' primitives are chosen for.
dnnl::convolution_forward::primitive_desc ForwardDesc(const Shape& s) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, s.src(),
      s.weights(tag::any), s.dst(), {1, 1}, {s.pad, s.pad}, {s.pad, s.pad});
}

// One primitive per op and shape, with the reorder between the kernel's HWIO and the primitive's
// weights format where they differ; built once, then reused. Every primitive takes its scratchpad
// from the caller (`Buffers`), so no call allocates.
struct Op {
  dnnl::primitive primitive;
  memory::desc weights;      // the primitive's weights format
  dnnl::primitive reorder;   // HWIO -> weights, or weights -> HWIO for the kernel gradient
  bool reordered = false;
  size_t scratchpad = 0;     // bytes, the most any of the two needs
};

enum Kind { kForward, kBackwardData, kBackwardWeights };

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

Op& GetOp(Kind kind, const Shape& s) {
  static auto* ops = new std::map<
      std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>,
      std::unique_ptr<Op>>();
  auto key = std::tuple_cat(std::make_tuple(static_cast<int>(kind)), s.key());
  auto& op = (*ops)[key];
  if (op) return *op;
  auto attr = UserScratchpad();
  auto hint = ForwardDesc(s);
  auto user = s.weights(tag::hwio);
  auto next = std::make_unique<Op>();
  memory::desc scratchpad;
  if (kind == kForward) {
    dnnl::convolution_forward::primitive_desc pd(
        Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, s.src(),
        s.weights(tag::any), s.dst(), {1, 1}, {s.pad, s.pad}, {s.pad, s.pad}, attr);
    next->primitive = dnnl::convolution_forward(pd);
    next->weights = pd.weights_desc();
    scratchpad = pd.scratchpad_desc();
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, s.src(), s.weights(tag::any), s.dst(),
        {1, 1}, {s.pad, s.pad}, {s.pad, s.pad}, hint, attr);
    next->primitive = dnnl::convolution_backward_data(pd);
    next->weights = pd.weights_desc();
    scratchpad = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, s.src(), s.weights(tag::any), s.dst(),
        {1, 1}, {s.pad, s.pad}, {s.pad, s.pad}, hint, attr);
    next->primitive = dnnl::convolution_backward_weights(pd);
    next->weights = pd.diff_weights_desc();
    scratchpad = pd.scratchpad_desc();
  }
  next->scratchpad = scratchpad.get_size();
  next->reordered = next->weights != user;
  if (next->reordered) {
    bool to_user = kind == kBackwardWeights;
    dnnl::reorder::primitive_desc pd(Engine(), to_user ? next->weights : user, Engine(),
                                     to_user ? user : next->weights, attr);
    next->reorder = dnnl::reorder(pd);
    next->scratchpad = std::max(next->scratchpad, pd.scratchpad_desc().get_size());
  }
  op = std::move(next);
  return *op;
}

// Memory the calls reuse: the scratchpad and the kernel in the primitive's format, grown to the
// largest asked for.
struct Buffers {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> scratchpad, weights;
  size_t scratchpad_size = 0, weights_size = 0;

  static void* Grow(std::unique_ptr<void, Free>& buffer, size_t& size, size_t need) {
    if (need > size) {
      size_t rounded = (need + 4095) / 4096 * 4096;
      buffer.reset(std::aligned_alloc(4096, rounded));
      size = buffer ? rounded : 0;
      if (!buffer) throw std::bad_alloc();
    }
    return buffer.get();
  }
};

// The leading dimensions before the last four are groups (a vmapped ensemble's members): one
// convolution each, on consecutive slices.
int64_t Groups(ffi::AnyBuffer::Dimensions d) {
  int64_t g = 1;
  for (size_t i = 0; i + 4 < d.size(); ++i) g *= d[i];
  return g;
}

Shape ShapeOf(ffi::AnyBuffer::Dimensions x, ffi::AnyBuffer::Dimensions kernel, int64_t pad) {
  size_t r = x.size(), q = kernel.size();
  return {x[r - 4], x[r - 3], x[r - 2], x[r - 1], kernel[q - 4], kernel[q - 1], pad};
}

// One call at a time: oneDNN parallelises each convolution over every core itself, and two
// calls from two of XLA's threads at once would each start a team of OpenMP threads.
ffi::Error Run(Kind kind, const Shape& s, int64_t groups, float* x, float* kernel, float* y) {
  static auto* mutex = new std::mutex;
  static auto* buffers = new Buffers;
  std::lock_guard<std::mutex> lock(*mutex);
  const Op& op = GetOp(kind, s);
  dnnl::stream stream(Engine());
  memory scratchpad({{static_cast<int64_t>(op.scratchpad)}, memory::data_type::u8, tag::a},
                    Engine(), Buffers::Grow(buffers->scratchpad, buffers->scratchpad_size,
                                            std::max<size_t>(op.scratchpad, 1)));
  memory weights = op.reordered
                       ? memory(op.weights, Engine(),
                                Buffers::Grow(buffers->weights, buffers->weights_size,
                                              op.weights.get_size()))
                       : memory();
  const int64_t xs = s.n * s.h * s.w * s.c, ks = s.k * s.k * s.c * s.o,
                ys = s.n * s.ho() * s.wo() * s.o;
  for (int64_t g = 0; g < groups; ++g) {
    memory src(s.src(), Engine(), x + g * xs), dst(s.dst(), Engine(), y + g * ys);
    memory user(s.weights(tag::hwio), Engine(), kernel + g * ks);
    memory& w = op.reordered ? weights : user;
    auto reorder = [&](memory& from, memory& to) {
      op.reorder.execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                  {DNNL_ARG_SCRATCHPAD, scratchpad}});
    };
    if (kind == kForward) {
      if (op.reordered) reorder(user, weights);
      op.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, dst},
                                    {DNNL_ARG_SCRATCHPAD, scratchpad}});
    } else if (kind == kBackwardData) {
      if (op.reordered) reorder(user, weights);
      op.primitive.execute(stream, {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, w},
                                    {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
    } else {
      op.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, w},
                                    {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (op.reordered) reorder(weights, user);
    }
  }
  stream.wait();
  return ffi::Error::Success();
}

// No exception leaves a handler: XLA gets an error instead.
template <typename F>
ffi::Error Guard(F f) {
  try {
    return f();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "lnl_jax conv: out of memory");
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("lnl_jax conv: ") + e.what());
  }
}

// The shapes of a call, checked: activations x (..., N, H, W, C), kernels (..., k, k, C, O) and
// outputs y (..., N, Ho, Wo, O), with the same leading (group) dimensions on all three.
ffi::Error Check(ffi::AnyBuffer::Dimensions x, ffi::AnyBuffer::Dimensions kernel,
                 ffi::AnyBuffer::Dimensions y, int64_t pad, Shape* shape, int64_t* groups) {
  const size_t r = x.size();
  bool ok = r >= 4 && kernel.size() == r && y.size() == r && pad >= 0;
  for (size_t i = 0; ok && i + 4 < r; ++i) ok = kernel[i] == x[i] && y[i] == x[i];
  if (ok) {
    *shape = ShapeOf(x, kernel, pad);
    ok = kernel[r - 4] == kernel[r - 3] && kernel[r - 2] == x[r - 1] && shape->ho() >= 1 &&
         shape->wo() >= 1 && y[r - 4] == shape->n && y[r - 3] == shape->ho() &&
         y[r - 2] == shape->wo() && y[r - 1] == shape->o;
  }
  if (!ok) {
    return ffi::Error::InvalidArgument(
        "lnl_jax conv: expected x (..., N, H, W, C), kernel (..., k, k, C, O) and y "
        "(..., N, H + 2 pad - k + 1, W + 2 pad - k + 1, O) with the same leading dimensions");
  }
  *groups = Groups(x);
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                   ffi::ResultBuffer<ffi::F32> y, int64_t pad) {
  Shape s;
  int64_t groups;
  if (auto e = Check(x.dimensions(), kernel.dimensions(), y->dimensions(), pad, &s, &groups);
      e.failure()) {
    return e;
  }
  return Guard([&] {
    return Run(kForward, s, groups, x.typed_data(), kernel.typed_data(), y->typed_data());
  });
}

// dx from dy and the kernel.
ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> kernel,
                        ffi::ResultBuffer<ffi::F32> dx, int64_t pad) {
  Shape s;
  int64_t groups;
  if (auto e = Check(dx->dimensions(), kernel.dimensions(), dy.dimensions(), pad, &s, &groups);
      e.failure()) {
    return e;
  }
  return Guard([&] {
    return Run(kBackwardData, s, groups, dx->typed_data(), kernel.typed_data(), dy.typed_data());
  });
}

// dkernel from x and dy.
ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                           ffi::ResultBuffer<ffi::F32> dkernel, int64_t pad) {
  Shape s;
  int64_t groups;
  if (auto e = Check(x.dimensions(), dkernel->dimensions(), dy.dimensions(), pad, &s, &groups);
      e.failure()) {
    return e;
  }
  return Guard([&] {
    return Run(kBackwardWeights, s, groups, x.typed_data(), dkernel->typed_data(), dy.typed_data());
  });
}

// Every handler takes two float32 arrays and the padding, and returns one float32 array.
auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("pad");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LnlConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(LnlConvBackwardData, BackwardData, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(LnlConvBackwardWeights, BackwardWeights, Binding());
