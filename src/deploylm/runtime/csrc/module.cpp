// The one extension module of deploylm's C++ kernels (runtime/cpp_kernels.py builds it from every csrc/*.cpp).
#include <torch/extension.h>

#include <string>
#include <vector>

torch::Tensor slab_decode_attention(torch::Tensor q, torch::Tensor k_new, torch::Tensor v_new,
                                    std::vector<torch::Tensor> slabs, std::vector<int64_t> starts, int64_t layer,
                                    double scale, int64_t window);
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor packed, torch::Tensor wsum, torch::Tensor scale,
                          c10::optional<torch::Tensor> bias, int64_t block);
std::string int8_simd();
torch::Tensor float_linear(torch::Tensor x, torch::Tensor packed, c10::optional<torch::Tensor> bias, int64_t n);
std::string float_simd();
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps);
torch::Tensor add_rms_norm_(torch::Tensor x, torch::Tensor residual, torch::Tensor weight, double eps);
void rotary_(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, int64_t heads, int64_t head_dim);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // Every kernel runs without the GIL: it touches no Python object, and a kernel holding it for a whole call
  // keeps the server's event loop thread (which sends the streamed tokens) waiting until the step's next
  // Python bytecode, for as long as the call lasts.
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("slab_decode_attention", &slab_decode_attention, "decode attention over per-sequence KV slabs",
        nogil);
  m.def("int8_linear", &int8_linear, "rotate, quantise and multiply with packed int8 weights",
        nogil);
  m.def("int8_simd", &int8_simd, "int8_linear's instruction set: avx512-vnni, avx2, or '' (a scalar loop)");
  m.def("float_linear", &float_linear, "float32/bf16 linear over panel-packed weights, for a few rows",
        nogil);
  m.def("float_simd", &float_simd, "float_linear's instruction set: avx512, avx2, or '' (a scalar loop)");
  m.def("rms_norm", &rms_norm, "RMSNorm over the last axis of [tokens, hidden]",
        nogil);
  m.def("add_rms_norm_", &add_rms_norm_, "x += residual in place, then RMSNorm of x",
        nogil);
  m.def("rotary_", &rotary_, "rotary embedding in place on the query and key heads of fused qkv rows",
        nogil);
}
