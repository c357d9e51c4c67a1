// Errors thrown across the native boundary. The binding turns fl::Error into a JS Error with `code`; nothing
// here aborts the process.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fl {

struct Error : std::runtime_error {
  std::string code;
  explicit Error(const std::string& message, std::string code_ = "ERR_FLUXLAB_INVALID")
      : std::runtime_error(message), code(std::move(code_)) {}
};

// Codes the TypeScript layer and tests may rely on.
inline constexpr const char* kErrInvalid = "ERR_FLUXLAB_INVALID";      // bad argument, shape or dtype
inline constexpr const char* kErrDisposed = "ERR_FLUXLAB_DISPOSED";    // tensor used after dispose()
inline constexpr const char* kErrOom = "ERR_FLUXLAB_OOM";              // allocation failed
inline constexpr const char* kErrCuda = "ERR_FLUXLAB_CUDA";            // CUDA runtime / kernel error
inline constexpr const char* kErrNoCuda = "ERR_FLUXLAB_NO_CUDA";        // CUDA requested but unavailable
inline constexpr const char* kErrIo = "ERR_FLUXLAB_IO";                // file errors
inline constexpr const char* kErrCapture = "ERR_FLUXLAB_CAPTURE";      // host sync / host copy during graph capture

inline void cat_into(std::ostringstream&) {}
template <class T, class... Rest>
void cat_into(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  cat_into(os, rest...);
}
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  cat_into(os, args...);
  return os.str();
}

[[noreturn]] inline void fail(const std::string& message, const char* code = kErrInvalid) {
  throw Error(message, code);
}

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace fl

#define FL_CHECK(cond, ...)                         \
  do {                                              \
    if (!(cond)) ::fl::fail(::fl::cat(__VA_ARGS__)); \
  } while (0)
