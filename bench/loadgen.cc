// adjutant_bench: the load generator (bench/load_generator.h) against a
// running adjutantd. Prints one JSON line per measured phase on stdout; exits
// 0 when every phase ran or met an RPC the server does not have yet
// ("unimplemented"), 1 when one failed, 2 on a bad flag.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "absl/strings/str_join.h"
#include "bench/load_generator.h"

int main(int argc, char** argv) {
  adjutant::bench::LoadConfig config;
  CLI::App app{"adjutant_bench: load scenarios against a running adjutantd"};
  app.add_option("--target", config.target, "HOST:PORT of adjutantd")
      ->required();
  app.add_option("--scenario", config.scenario,
                 absl::StrJoin(adjutant::bench::ScenarioNames(), ", "))
      ->required();
  app.add_option("--seconds", config.seconds, "measured seconds (10)");
  app.add_option("--warmup-seconds", config.warmup_seconds,
                 "seconds run before measuring (1)");
  app.add_option("--concurrency", config.concurrency,
                 "concurrent callers, workers or streams (64)");
  app.add_option("--payload-bytes", config.payload_bytes,
                 "payload of each job (256)");
  app.add_option("--batch", config.batch,
                 "jobs per batch call, capacity per Work stream (100)");
  app.add_option("--latency-rate", config.latency_rate,
                 "jobs/s of latency, paced; 0: closed loop (50)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--channels", config.channels, "gRPC connections (2)");
  app.add_option("--daemon-pid", config.daemon_pid,
                 "adjutantd's pid, for CPU and RSS (cron_idle, scale)");
  app.add_option("--durability", config.durability,
                 "the daemon's durability, copied into the output");
  app.add_option("--cron-schedules", config.cron_schedules,
                 "per-second schedules of cron (1000)");
  app.add_option("--idle-schedules", config.idle_schedules,
                 "next-week schedules of cron_idle (10000)");
  app.add_option("--scale-jobs", config.scale_jobs,
                 "the huge backlog of scale (1000000)");
  app.add_option("--scale-baseline-jobs", config.scale_baseline_jobs,
                 "the small backlog of scale (1000)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  auto results = adjutant::bench::RunScenario(config);
  if (!results.ok()) {
    std::fprintf(stderr, "adjutant_bench: %s\n",
                 std::string(results.status().message()).c_str());
    return 2;
  }
  int exit_code = 0;
  for (const auto& result : *results) {
    std::printf("%s\n", adjutant::bench::ToJsonLine(config, result).c_str());
    if (result.status == "error") {
      std::fprintf(stderr, "adjutant_bench: %s: %s\n", result.scenario.c_str(),
                   result.message.c_str());
      exit_code = 1;
    }
  }
  std::fflush(stdout);
  return exit_code;
}
