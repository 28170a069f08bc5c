// The metrics registry and its Prometheus text exposition (format 0.0.4),
// checked byte for byte.
#include "server/metrics.h"

#include <httplib.h>

#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics_http.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CountersAndGaugesRenderWithHelpTypeAndSortedLabels) {
  MetricsRegistry registry;
  CounterFamily* enqueued = registry.AddCounter("adjutant_jobs_enqueued_total",
                                                "Jobs stored.", {"queue"});
  GaugeFamily* waiting =
      registry.AddGauge("adjutant_long_polls_waiting", "Parked calls.");
  enqueued->WithLabels({"q"})->Increment(3);
  enqueued->WithLabels({"a"})->Increment();
  waiting->WithLabels({})->Set(2);
  waiting->WithLabels({})->Add(-0.5);

  EXPECT_EQ(registry.Render(),
            "# HELP adjutant_jobs_enqueued_total Jobs stored.\n"
            "# TYPE adjutant_jobs_enqueued_total counter\n"
            "adjutant_jobs_enqueued_total{queue=\"a\"} 1\n"
            "adjutant_jobs_enqueued_total{queue=\"q\"} 3\n"
            "# HELP adjutant_long_polls_waiting Parked calls.\n"
            "# TYPE adjutant_long_polls_waiting gauge\n"
            "adjutant_long_polls_waiting 1.5\n");
}

TEST(MetricsTest, AFamilyWithoutLabelsShowsZeroAndOneWithLabelsOnlyItsHeader) {
  MetricsRegistry registry;
  registry.AddCounter("plain_total", "No labels.");
  registry.AddCounter("labelled_total", "Labels.", {"queue"});
  EXPECT_EQ(registry.Render(),
            "# HELP plain_total No labels.\n"
            "# TYPE plain_total counter\n"
            "plain_total 0\n"
            "# HELP labelled_total Labels.\n"
            "# TYPE labelled_total counter\n");
}

TEST(MetricsTest, TheSameLabelsGiveTheSameChild) {
  MetricsRegistry registry;
  CounterFamily* family = registry.AddCounter("c_total", "h", {"a", "b"});
  Counter* first = family->WithLabels({"x", "y"});
  EXPECT_EQ(family->WithLabels({"x", "y"}), first);
  EXPECT_NE(family->WithLabels({"y", "x"}), first);
}

TEST(MetricsTest, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry registry;
  registry
      .AddCounter("escaped_total", "A \\ backslash\nand a newline", {"queue"})
      ->WithLabels({"a\\b\"c\nd"})
      ->Increment();
  EXPECT_EQ(registry.Render(),
            "# HELP escaped_total A \\\\ backslash\\nand a newline\n"
            "# TYPE escaped_total counter\n"
            "escaped_total{queue=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(MetricsTest, HistogramsRenderCumulativeBucketsSumAndCount) {
  MetricsRegistry registry;
  HistogramFamily* family =
      registry.AddHistogram("adjutant_rpc_duration_seconds", "Latency.",
                            {"method", "code"}, {0.005, 0.1, 1});
  Histogram* h = family->WithLabels({"Enqueue", "OK"});
  h->Observe(0.005);  // a bound is inclusive
  h->Observe(0.05);
  h->Observe(0.5);
  h->Observe(3);
  family->WithLabels({"Ack", "NOT_FOUND"})->Observe(0);

  EXPECT_EQ(
      registry.Render(),
      "# HELP adjutant_rpc_duration_seconds Latency.\n"
      "# TYPE adjutant_rpc_duration_seconds histogram\n"
      "adjutant_rpc_duration_seconds_bucket{method=\"Ack\",code=\"NOT_FOUND\","
      "le=\"0.005\"} 1\n"
      "adjutant_rpc_duration_seconds_bucket{method=\"Ack\",code=\"NOT_FOUND\","
      "le=\"0.1\"} 1\n"
      "adjutant_rpc_duration_seconds_bucket{method=\"Ack\",code=\"NOT_FOUND\","
      "le=\"1\"} 1\n"
      "adjutant_rpc_duration_seconds_bucket{method=\"Ack\",code=\"NOT_FOUND\","
      "le=\"+Inf\"} 1\n"
      "adjutant_rpc_duration_seconds_sum{method=\"Ack\",code=\"NOT_FOUND\"} "
      "0\n"
      "adjutant_rpc_duration_seconds_count{method=\"Ack\",code=\"NOT_FOUND\"} "
      "1\n"
      "adjutant_rpc_duration_seconds_bucket{method=\"Enqueue\",code=\"OK\","
      "le=\"0.005\"} 1\n"
      "adjutant_rpc_duration_seconds_bucket{method=\"Enqueue\",code=\"OK\","
      "le=\"0.1\"} 2\n"
      "adjutant_rpc_duration_seconds_bucket{method=\"Enqueue\",code=\"OK\","
      "le=\"1\"} 3\n"
      "adjutant_rpc_duration_seconds_bucket{method=\"Enqueue\",code=\"OK\","
      "le=\"+Inf\"} 4\n"
      "adjutant_rpc_duration_seconds_sum{method=\"Enqueue\",code=\"OK\"} "
      "3.555\n"
      "adjutant_rpc_duration_seconds_count{method=\"Enqueue\",code=\"OK\"} "
      "4\n");
}

TEST(MetricsTest, AHistogramWithoutLabelsHasOnlyTheLeLabel) {
  MetricsRegistry registry;
  registry.AddHistogram("batch", "Sizes.", {}, {1, 10})
      ->WithLabels({})
      ->Observe(7);
  EXPECT_EQ(registry.Render(),
            "# HELP batch Sizes.\n"
            "# TYPE batch histogram\n"
            "batch_bucket{le=\"1\"} 0\n"
            "batch_bucket{le=\"10\"} 1\n"
            "batch_bucket{le=\"+Inf\"} 1\n"
            "batch_sum 7\n"
            "batch_count 1\n");
}

TEST(MetricsTest, CollectorsRenderAfterTheInstrumentsAtEveryScrape) {
  MetricsRegistry registry;
  registry.AddCounter("first_total", "Instrument.");
  int scrapes = 0;
  registry.AddCollector([&scrapes] {
    ++scrapes;
    CollectedFamily family{"adjutant_jobs",
                           "By state.",
                           MetricType::kGauge,
                           {"queue", "state"},
                           {{{"q", "pending"}, 2}, {{"q", "dead"}, 1}}};
    return std::vector<CollectedFamily>{family};
  });
  const std::string expected =
      "# HELP first_total Instrument.\n"
      "# TYPE first_total counter\n"
      "first_total 0\n"
      "# HELP adjutant_jobs By state.\n"
      "# TYPE adjutant_jobs gauge\n"
      "adjutant_jobs{queue=\"q\",state=\"pending\"} 2\n"
      "adjutant_jobs{queue=\"q\",state=\"dead\"} 1\n";
  EXPECT_EQ(registry.Render(), expected);
  EXPECT_EQ(registry.Render(), expected);
  EXPECT_EQ(scrapes, 2);
}

TEST(MetricsTest, ValuesFormatAsPrometheusReadsThem) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(3), "3");
  EXPECT_EQ(FormatMetricValue(-2), "-2");
  EXPECT_EQ(FormatMetricValue(12345678901234), "12345678901234");
  EXPECT_EQ(FormatMetricValue(0.005), "0.005");
  EXPECT_EQ(FormatMetricValue(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()),
            "-Inf");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(FormatMetricValue(1e300), "1e+300");
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry registry;
  CounterFamily* counter = registry.AddCounter("c_total", "h", {"t"});
  HistogramFamily* histogram = registry.AddHistogram("h", "h", {"t"}, {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        counter->WithLabels({"x"})->Increment();
        histogram->WithLabels({"x"})->Observe(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(counter->WithLabels({"x"})->Value(), 40000);
  const Histogram::Snapshot snapshot = histogram->WithLabels({"x"})->Read();
  EXPECT_EQ(snapshot.count, 40000u);
  EXPECT_EQ(snapshot.sum, 40000);
  EXPECT_EQ(snapshot.cumulative, (std::vector<uint64_t>{40000, 40000}));
}

TEST(MetricsDeathTest, BadNamesAreProgrammingErrors) {
  EXPECT_DEATH(MetricsRegistry().AddCounter("1bad", "h"), "not a valid");
  EXPECT_DEATH(MetricsRegistry().AddCounter("ok_total", "h", {"bad-label"}),
               "not a valid label");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h", "h", {"le"}, {1}),
               "not a valid label");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h", "h", {}, {2, 1}),
               "increasing");
  EXPECT_DEATH(
      {
        MetricsRegistry registry;
        registry.AddGauge("twice", "h");
        registry.AddGauge("twice", "h");
      },
      "registered twice");
  EXPECT_DEATH(MetricsRegistry().AddCounter("c", "h", {"a"})->WithLabels({}),
               "0 label values for 1 labels");
}

TEST(HostPortTest, ParsesHostAndPortAndNamesTheFlagOtherwise) {
  std::string host;
  int port = -1;
  ASSERT_TRUE(
      ParseHostPort("--metrics-listen", "127.0.0.1:9090", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9090);
  ASSERT_TRUE(ParseHostPort("--metrics-listen", "[::1]:0", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  for (const char* bad :
       {"9090", ":9090", "host:", "host:x", "host:70000", "host:-1"}) {
    const absl::Status s = ParseHostPort("--metrics-listen", bad, &host, &port);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("--metrics-listen")) << bad;
    EXPECT_THAT(s.message(), HasSubstr(bad)) << bad;
  }
}

TEST(MetricsHttpServerTest, ServesMetricsAnd404ElsewhereThenStops) {
  MetricsRegistry registry;
  registry.AddCounter("served_total", "h")->WithLabels({})->Increment(7);
  MetricsHttpServer server(&registry);
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  ASSERT_GT(server.port(), 0);

  httplib::Client client("127.0.0.1", server.port());
  httplib::Result metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->get_header_value("Content-Type"),
            "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(metrics->body, registry.Render());
  EXPECT_THAT(metrics->body, HasSubstr("served_total 7\n"));

  httplib::Result other = client.Get("/");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);

  server.Stop();
  server.Stop();  // idempotent
  httplib::Client after("127.0.0.1", server.port());
  EXPECT_FALSE(after.Get("/metrics"));
}

TEST(MetricsHttpServerTest, APortInUseIsUnavailable) {
  MetricsRegistry registry;
  MetricsHttpServer first(&registry);
  ASSERT_TRUE(first.Start("127.0.0.1:0").ok());
  MetricsHttpServer second(&registry);
  const absl::Status s =
      second.Start("127.0.0.1:" + std::to_string(first.port()));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("--metrics-listen"));
}

TEST(MetricsHttpServerTest, AStopRightAfterStartReturns) {
  MetricsRegistry registry;
  for (int i = 0; i < 20; ++i) {
    MetricsHttpServer server(&registry);
    ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
    server.Stop();
  }
}

}  // namespace
}  // namespace adjutant
