// The one extension module of deploylm's C++ kernels (runtime/cpp_kernels.py builds it from every csrc/*.cpp).
#include <torch/extension.h>

#include <vector>

torch::Tensor slab_decode_attention(torch::Tensor q, torch::Tensor k_new, torch::Tensor v_new,
                                    std::vector<torch::Tensor> slabs, std::vector<int64_t> starts, int64_t layer,
                                    double scale, int64_t window);
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor packed, torch::Tensor wsum, torch::Tensor scale,
                          c10::optional<torch::Tensor> bias, int64_t block);
bool has_vnni();
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps);
torch::Tensor add_rms_norm_(torch::Tensor x, torch::Tensor residual, torch::Tensor weight, double eps);
void rotary_(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, int64_t heads, int64_t head_dim);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("slab_decode_attention", &slab_decode_attention, "decode attention over per-sequence KV slabs");
  m.def("int8_linear", &int8_linear, "rotate, quantise and multiply with packed int8 weights");
  m.def("has_vnni", &has_vnni, "whether int8_linear runs AVX-512 VNNI (else a scalar loop)");
  m.def("rms_norm", &rms_norm, "RMSNorm over the last axis of [tokens, hidden]");
  m.def("add_rms_norm_", &add_rms_norm_, "x += residual in place, then RMSNorm of x");
  m.def("rotary_", &rotary_, "rotary embedding in place on the query and key heads of fused qkv rows");
}
