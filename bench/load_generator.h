// The load generator behind `adjutant_bench` (bench/loadgen.cc): closed-loop
// scenarios driven through gRPC's callback API against a running adjutantd,
// each caller a chain of callbacks (no thread per caller), with a warm-up
// whose operations are not counted.
//
// The scenarios (docs/BENCHMARKS.md says what each one measures):
//   echo            grpc.health.v1.Health/Check, the gRPC ceiling
//   enqueue         Enqueue, one job per call
//   lifecycle       Enqueue -> Dequeue(1) -> Ack, one job per loop
//   batched         EnqueueBatch(batch) -> Dequeue(batch) -> AckBatch
//   batched_stream  EnqueueBatch producers, Work stream workers
//   latency         one job at a time from enqueue to a parked consumer
//   cron            per-second schedules: fire lateness
//   cron_idle       schedules due next week: the daemon's idle CPU
//   scale           dequeue + ack with a small, then a huge backlog; RSS
//
// Thread-safety: RunScenario() blocks its caller until the scenario ended;
// it may not run twice at once against the same daemon (queues and schedule
// names are fixed per scenario).
#ifndef ADJUTANT_BENCH_LOAD_GENERATOR_H_
#define ADJUTANT_BENCH_LOAD_GENERATOR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace adjutant::bench {

// What to run and how hard. Filled by loadgen.cc's flags (same names).
struct LoadConfig {
  // --target: HOST:PORT of a running adjutantd (plaintext). Required.
  std::string target;
  // --scenario: one of the names above. Required.
  std::string scenario;
  // --seconds: measured time of each measured phase. Default 10.
  double seconds = 10;
  // --warmup-seconds: time run before measuring, not counted. Default 1.
  double warmup_seconds = 1;
  // --concurrency: concurrent callers (workers, streams). Default 64.
  int concurrency = 64;
  // --payload-bytes: payload of every job. Default 256 (at least 8 for
  // `latency`, which carries its send time in the payload).
  int payload_bytes = 256;
  // --batch: jobs per EnqueueBatch / Dequeue / AckBatch, and the capacity
  // of each Work stream. Default 100.
  int batch = 100;
  // --latency-rate: jobs per second `latency` sends, one at a time (each
  // Enqueue answered before the next), paced like the peers' producers so
  // that the figures compare; 0: closed loop (the next job once the last
  // one arrived). Default 50.
  double latency_rate = 50;
  // --channels: gRPC channels (HTTP/2 connections) the callers share,
  // round robin. Default 2.
  int channels = 2;
  // --daemon-pid: the daemon's process id, for its CPU time and RSS
  // (/proc/PID/stat, /proc/PID/status); cron_idle and scale need it.
  // Default 0: not known.
  int daemon_pid = 0;
  // --durability: how the daemon stores jobs, copied into the output
  // (e.g. "sqlite synchronous=FULL"). Default "".
  std::string durability;
  // --cron-schedules: per-second schedules of `cron`. Default 1000.
  int cron_schedules = 1000;
  // --idle-schedules: next-week schedules of `cron_idle`. Default 10000.
  int idle_schedules = 10000;
  // --scale-jobs: the huge backlog of `scale`. Default 1000000.
  int64_t scale_jobs = 1000000;
  // --scale-baseline-jobs: the small backlog of `scale`. Default 1000.
  int64_t scale_baseline_jobs = 1000;
};

// The outcome of one measured phase: one JSON line.
struct ScenarioResult {
  std::string scenario;
  // "ok", "unimplemented" (the server answered UNIMPLEMENTED: the RPC it
  // needs is not there yet) or "error" (see message).
  std::string status = "ok";
  std::string message;
  // Operations (jobs, ticks, checks) completed inside the measured window,
  // per second of it. Absent for cron_idle.
  std::optional<double> ops_per_s;
  std::optional<double> p50_ms;
  std::optional<double> p99_ms;
  int64_t ops = 0;
  double measured_seconds = 0;
  // Scenario-specific figures (cpu_percent, rss_mb, queued, ...).
  std::vector<std::pair<std::string, double>> extras;
};

// The names RunScenario() accepts.
const std::vector<std::string>& ScenarioNames();

// Runs config.scenario. INVALID_ARGUMENT names a bad field (unknown
// scenario, a size out of range, a missing --daemon-pid); otherwise the
// results, which carry their own errors (status "error").
absl::StatusOr<std::vector<ScenarioResult>> RunScenario(
    const LoadConfig& config);

// One line of JSON: {"system":"adjutant","scenario":...,"ops_per_s":...,
// "p50_ms":...,"p99_ms":...,"durability":...,"status":..., then the counts,
// the configuration and the extras}. No trailing newline.
std::string ToJsonLine(const LoadConfig& config, const ScenarioResult& result);

}  // namespace adjutant::bench

#endif  // ADJUTANT_BENCH_LOAD_GENERATOR_H_
