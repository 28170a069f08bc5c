// A small Prometheus metrics registry: counters, gauges and histograms with
// fixed buckets, each in a family of label sets, and the text exposition
// format 0.0.4 that a Prometheus server scrapes.
//
// Two ways a number gets into the exposition:
//  * Instruments updated as things happen (a job enqueued, an RPC finished):
//    a family hands out one child per label set with WithLabels(); the
//    child's pointer stays valid for the registry's life, so a hot path can
//    resolve it once and then update it with an atomic add (counter, gauge)
//    or one short mutex (histogram).
//  * Collectors called at scrape time (jobs by state, read from the store):
//    they return whole families, rendered after the instruments.
//
// Names must follow Prometheus' rules ([a-zA-Z_:][a-zA-Z0-9_:]* for metrics,
// [a-zA-Z_][a-zA-Z0-9_]* for labels, no "le" label on a histogram); a bad
// name is a programming error and aborts at registration.
#ifndef ADJUTANT_SERVER_METRICS_H_
#define ADJUTANT_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace adjutant {

enum class MetricType { kCounter, kGauge, kHistogram };

// A value that only goes up. Thread-safe, lock-free.
class Counter {
 public:
  // REQUIRES: by >= 0.
  void Increment(double by = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down. Thread-safe, lock-free.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double by);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into fixed buckets, with their sum. Thread-safe: one
// short mutex per observation, so that a scrape sees buckets, sum and count
// that agree.
class Histogram {
 public:
  // `bounds`: the buckets' upper bounds (inclusive), strictly increasing,
  // without +Inf (always present). Must outlive the histogram.
  explicit Histogram(const std::vector<double>* bounds);

  void Observe(double value);

  struct Snapshot {
    // Cumulative: cumulative[i] observations <= bounds[i]; one more entry
    // for +Inf, equal to count.
    std::vector<uint64_t> cumulative;
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double>& bounds_;
  mutable absl::Mutex mu_;
  // State below is protected by mu_.
  // Per bucket (not cumulative); the last one is (bounds_.back(), +Inf).
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// One metric name and its children, one per label set. Thread-safe.
template <typename Metric>
class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help,
               std::vector<std::string> label_names,
               std::function<std::unique_ptr<Metric>()> make)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_(std::move(make)) {}

  // The child for `label_values` (one per label name, in order), created at
  // zero on first use. The pointer stays valid as long as the family.
  // REQUIRES: label_values.size() == label_names().size().
  Metric* WithLabels(const std::vector<std::string>& label_values);

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Calls `fn(label_values, metric)` for each child in label-value order.
  void ForEach(const std::function<void(const std::vector<std::string>&,
                                        const Metric&)>& fn) const;

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<Metric>()> make_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> children_
      ABSL_GUARDED_BY(mu_);
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

// A family computed at scrape time by a collector (counters and gauges).
struct CollectedFamily {
  std::string name;
  std::string help;
  MetricType type = MetricType::kGauge;  // kCounter or kGauge
  std::vector<std::string> label_names;
  struct Sample {
    std::vector<std::string> label_values;  // one per label name
    double value = 0;
  };
  std::vector<Sample> samples;
};

// Called at every scrape, on the scraping thread; may block briefly (it
// should bound its own waits). Returns the families it knows now.
using MetricsCollector = std::function<std::vector<CollectedFamily>()>;

// Owns the families. Thread-safe: registration, updates and Render() may
// run at once from any threads.
class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registers a family; the pointer is valid for the registry's life. A
  // family without labels has its one child from the start (it shows as 0).
  // Aborts on a bad or duplicate name.
  CounterFamily* AddCounter(const std::string& name, const std::string& help,
                            std::vector<std::string> label_names = {});
  GaugeFamily* AddGauge(const std::string& name, const std::string& help,
                        std::vector<std::string> label_names = {});
  // `bounds` as for Histogram (aborts otherwise).
  HistogramFamily* AddHistogram(const std::string& name,
                                const std::string& help,
                                std::vector<std::string> label_names,
                                std::vector<double> bounds);

  // Adds a collector, called by every Render() after the instruments are
  // rendered, in the order added.
  void AddCollector(MetricsCollector collector);

  // The text exposition format 0.0.4: every registered family in
  // registration order (# HELP, # TYPE, then its samples in label-value
  // order), then the collectors' families.
  std::string Render() const;

 private:
  struct Entry {
    MetricType type = MetricType::kCounter;
    std::unique_ptr<CounterFamily> counter;
    std::unique_ptr<GaugeFamily> gauge;
    std::unique_ptr<HistogramFamily> histogram;
    std::unique_ptr<std::vector<double>> bounds;
  };
  void CheckNew(const std::string& name, const std::vector<std::string>& labels,
                MetricType type) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // State below is protected by mu_.
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<MetricsCollector> collectors_ ABSL_GUARDED_BY(mu_);
};

// The content type a /metrics response carries.
inline constexpr char kPrometheusContentType[] =
    "text/plain; version=0.0.4; charset=utf-8";

// Exposition helpers, public for the collectors and for tests.
// A sample value: integers exactly ("3"), others shortest round-trip
// ("0.005"), "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double value);
// Escapes a label value: backslash, double quote and newline.
std::string EscapeLabelValue(const std::string& value);
// Appends one family computed by a collector.
void RenderCollectedFamily(const CollectedFamily& family, std::string* out);

// ---- Template definitions -------------------------------------------------

template <typename Metric>
Metric* MetricFamily<Metric>::WithLabels(
    const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size()) {
    std::fprintf(stderr, "metric %s: %zu label values for %zu labels\n",
                 name_.c_str(), label_values.size(), label_names_.size());
    std::abort();
  }
  absl::MutexLock l(&mu_);
  std::unique_ptr<Metric>& child = children_[label_values];
  if (child == nullptr) child = make_();
  return child.get();
}

template <typename Metric>
void MetricFamily<Metric>::ForEach(
    const std::function<void(const std::vector<std::string>&, const Metric&)>&
        fn) const {
  absl::MutexLock l(&mu_);
  for (const auto& [labels, metric] : children_) fn(labels, *metric);
}

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_METRICS_H_
