#include "server/metrics.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace adjutant {
namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "metrics registry: %s\n", message.c_str());
  std::abort();
}

bool ValidName(const std::string& name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (alpha || (allow_colon && c == ':') || (i > 0 && digit)) continue;
    return false;
  }
  return true;
}

void AddAtomic(std::atomic<double>* value, double by) {
  double old = value->load(std::memory_order_relaxed);
  while (
      !value->compare_exchange_weak(old, old + by, std::memory_order_relaxed)) {
  }
}

// HELP text escapes backslash and newline.
std::string EscapeHelp(const std::string& help) {
  std::string out;
  out.reserve(help.size());
  for (const char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void RenderHeader(const std::string& name, const std::string& help,
                  MetricType type, std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", EscapeHelp(help), "\n");
  absl::StrAppend(out, "# TYPE ", name, " ", TypeName(type), "\n");
}

// `{a="x",b="y"}` (with `extra`, e.g. le="0.5", last), or "" when there is
// no label at all.
std::string LabelText(const std::vector<std::string>& names,
                      const std::vector<std::string>& values,
                      const std::string& extra = "") {
  if (names.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ",";
    absl::StrAppend(&out, names[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  if (!extra.empty()) {
    if (!names.empty()) out += ",";
    out += extra;
  }
  out += "}";
  return out;
}

void RenderSample(const std::string& name, const std::string& labels,
                  double value, std::string* out) {
  absl::StrAppend(out, name, labels, " ", FormatMetricValue(value), "\n");
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Go's strconv.FormatFloat(v, 'g', -1, 64), as Prometheus' own clients:
  // shortest round-trip digits, an exponent only below 1e-4 or for large
  // numbers. Integers below 2^53 are exact in a double: print them as integers.
  if (value == std::floor(value) && std::fabs(value) < 9007199254740992.0) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buf[64];
  const std::to_chars_result r =
      std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::general);
  return std::string(buf, r.ptr);
}

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void RenderCollectedFamily(const CollectedFamily& family, std::string* out) {
  RenderHeader(family.name, family.help, family.type, out);
  for (const CollectedFamily::Sample& sample : family.samples) {
    RenderSample(family.name,
                 LabelText(family.label_names, sample.label_values),
                 sample.value, out);
  }
}

void Counter::Increment(double by) { AddAtomic(&value_, by); }

void Gauge::Add(double by) { AddAtomic(&value_, by); }

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(*bounds), counts_(bounds->size() + 1, 0) {}

void Histogram::Observe(double value) {
  // The first bound >= value; bounds are few, a linear scan is cheapest.
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  absl::MutexLock l(&mu_);
  ++counts_[bucket];
  sum_ += value;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  absl::MutexLock l(&mu_);
  snapshot.cumulative.reserve(counts_.size());
  uint64_t total = 0;
  for (const uint64_t count : counts_) {
    total += count;
    snapshot.cumulative.push_back(total);
  }
  snapshot.sum = sum_;
  snapshot.count = total;
  return snapshot;
}

void MetricsRegistry::CheckNew(const std::string& name,
                               const std::vector<std::string>& labels,
                               MetricType type) {
  if (!ValidName(name, /*allow_colon=*/true)) {
    Die(absl::StrCat("'", name, "' is not a valid metric name"));
  }
  for (const std::string& label : labels) {
    if (!ValidName(label, /*allow_colon=*/false) ||
        absl::StartsWith(label, "__") ||
        (type == MetricType::kHistogram && label == "le")) {
      Die(absl::StrCat("metric ", name, ": '", label,
                       "' is not a valid label name"));
    }
  }
  for (const Entry& entry : entries_) {
    const std::string& other = entry.counter ? entry.counter->name()
                               : entry.gauge ? entry.gauge->name()
                                             : entry.histogram->name();
    if (other == name) Die(absl::StrCat("metric ", name, " registered twice"));
  }
}

CounterFamily* MetricsRegistry::AddCounter(
    const std::string& name, const std::string& help,
    std::vector<std::string> label_names) {
  absl::MutexLock l(&mu_);
  CheckNew(name, label_names, MetricType::kCounter);
  const bool unlabelled = label_names.empty();
  Entry entry;
  entry.type = MetricType::kCounter;
  entry.counter = std::make_unique<CounterFamily>(
      name, help, std::move(label_names),
      [] { return std::make_unique<Counter>(); });
  CounterFamily* family = entry.counter.get();
  if (unlabelled) family->WithLabels({});
  entries_.push_back(std::move(entry));
  return family;
}

GaugeFamily* MetricsRegistry::AddGauge(const std::string& name,
                                       const std::string& help,
                                       std::vector<std::string> label_names) {
  absl::MutexLock l(&mu_);
  CheckNew(name, label_names, MetricType::kGauge);
  const bool unlabelled = label_names.empty();
  Entry entry;
  entry.type = MetricType::kGauge;
  entry.gauge =
      std::make_unique<GaugeFamily>(name, help, std::move(label_names),
                                    [] { return std::make_unique<Gauge>(); });
  GaugeFamily* family = entry.gauge.get();
  if (unlabelled) family->WithLabels({});
  entries_.push_back(std::move(entry));
  return family;
}

HistogramFamily* MetricsRegistry::AddHistogram(
    const std::string& name, const std::string& help,
    std::vector<std::string> label_names, std::vector<double> bounds) {
  absl::MutexLock l(&mu_);
  CheckNew(name, label_names, MetricType::kHistogram);
  if (bounds.empty()) Die(absl::StrCat("histogram ", name, ": no buckets"));
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
      Die(absl::StrCat("histogram ", name,
                       ": bucket bounds must be finite and increasing"));
    }
  }
  const bool unlabelled = label_names.empty();
  Entry entry;
  entry.type = MetricType::kHistogram;
  entry.bounds = std::make_unique<std::vector<double>>(std::move(bounds));
  const std::vector<double>* bounds_ptr = entry.bounds.get();
  entry.histogram = std::make_unique<HistogramFamily>(
      name, help, std::move(label_names),
      [bounds_ptr] { return std::make_unique<Histogram>(bounds_ptr); });
  HistogramFamily* family = entry.histogram.get();
  if (unlabelled) family->WithLabels({});
  entries_.push_back(std::move(entry));
  return family;
}

void MetricsRegistry::AddCollector(MetricsCollector collector) {
  absl::MutexLock l(&mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::Render() const {
  std::string out;
  std::vector<MetricsCollector> collectors;
  {
    absl::MutexLock l(&mu_);
    for (const Entry& entry : entries_) {
      switch (entry.type) {
        case MetricType::kCounter:
        case MetricType::kGauge: {
          const auto render = [&out](const auto& family) {
            RenderHeader(
                family.name(), family.help(),
                std::is_same_v<std::decay_t<decltype(family)>, CounterFamily>
                    ? MetricType::kCounter
                    : MetricType::kGauge,
                &out);
            family.ForEach([&](const std::vector<std::string>& labels,
                               const auto& metric) {
              RenderSample(family.name(),
                           LabelText(family.label_names(), labels),
                           metric.Value(), &out);
            });
          };
          if (entry.counter) {
            render(*entry.counter);
          } else {
            render(*entry.gauge);
          }
          break;
        }
        case MetricType::kHistogram: {
          const HistogramFamily& family = *entry.histogram;
          const std::vector<double>& bounds = *entry.bounds;
          RenderHeader(family.name(), family.help(), MetricType::kHistogram,
                       &out);
          family.ForEach([&](const std::vector<std::string>& labels,
                             const Histogram& histogram) {
            const Histogram::Snapshot snapshot = histogram.Read();
            const std::string bucket_name = family.name() + "_bucket";
            for (size_t i = 0; i <= bounds.size(); ++i) {
              const std::string le =
                  i < bounds.size() ? FormatMetricValue(bounds[i]) : "+Inf";
              RenderSample(bucket_name,
                           LabelText(family.label_names(), labels,
                                     absl::StrCat("le=\"", le, "\"")),
                           static_cast<double>(snapshot.cumulative[i]), &out);
            }
            const std::string label_text =
                LabelText(family.label_names(), labels);
            RenderSample(family.name() + "_sum", label_text, snapshot.sum,
                         &out);
            RenderSample(family.name() + "_count", label_text,
                         static_cast<double>(snapshot.count), &out);
          });
          break;
        }
      }
    }
    collectors = collectors_;
  }
  // Outside the lock: a collector may block (a store read).
  for (const MetricsCollector& collect : collectors) {
    for (const CollectedFamily& family : collect()) {
      RenderCollectedFamily(family, &out);
    }
  }
  return out;
}

}  // namespace adjutant
