// ringlab_pingpong: raw UDP/TCP round-trip benchmark on any backend preset.
//
//   ringlab_pingpong server --proto=udp --backend=uring-fixed
//   --bind=127.0.0.1:0
//   ringlab_pingpong client --proto=udp --backend=uring-fixed
//       --server=127.0.0.1:PORT --samples=100000 --warmup=5000 --json=out.json
//
// See bench/pingpong_options.h for the contract (flags, output, exit codes).
#include <cstdio>
#include <string>
#include <string_view>

#include "bench/pingpong_options.h"

int main(int argc, char** argv) {
  using namespace ringlab::bench;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "help") {
      std::fputs(PingPongUsage().c_str(), stdout);
      return kExitOk;
    }
  }
  absl::StatusOr<PingPongConfig> config = ParsePingPongArgs(argc, argv);
  if (!config.ok()) {
    std::fprintf(stderr, "ringlab_pingpong: %s\n\n%s",
                 std::string(config.status().message()).c_str(),
                 PingPongUsage().c_str());
    return kExitUsage;
  }
  return config->role == Role::kServer ? RunPingPongServer(*config)
                                       : RunPingPongClient(*config);
}
