// The Scheduler gRPC service through a real grpc::Server on 127.0.0.1:0:
// validation (every field named, nothing changed on refusal), the RPCs'
// behaviour, and firing driven through SetLeadership.
#include "server/scheduler_service.h"

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "adjutant/v1/scheduler.grpc.pb.h"
#include "gtest/gtest.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "server/convert.h"
#include "server/executor.h"
#include "spdlog/spdlog.h"
#include "storage/memory_job_store.h"
#include "tests/fakes/faulty_job_store.h"
#include "tests/fakes/simulated_clock.h"

namespace adjutant {
namespace {

// 2026-01-01 00:00:00 UTC.
const absl::Time kStart = absl::FromUnixSeconds(1767225600);

google::protobuf::Duration Seconds(int64_t s) {
  google::protobuf::Duration d;
  d.set_seconds(s);
  return d;
}

google::protobuf::Timestamp At(absl::Time t) {
  google::protobuf::Timestamp ts;
  ToProto(t, &ts);
  return ts;
}

absl::Time FromTs(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

v1::RegisterCronRequest Request(const std::string& name,
                                const std::string& schedule) {
  v1::RegisterCronRequest r;
  r.set_name(name);
  r.set_schedule(schedule);
  r.mutable_job()->set_queue("q");
  r.mutable_job()->set_job_type("tick");
  return r;
}

// The service's view of a clock: forwards to another, and tells the test
// when the service reads the monotonic time (a grant arriving).
class ObservedClock final : public Clock {
 public:
  explicit ObservedClock(Clock* base) : base_(base) {}

  // Called on the reading thread, after the read. Set it while no call can
  // read it.
  std::function<void()> on_monotonic;

  absl::Time Now() override { return base_->Now(); }
  absl::Duration Monotonic() override {
    const absl::Duration now = base_->Monotonic();
    if (on_monotonic) on_monotonic();  // after the read: the test moves time
    return now;
  }
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return base_->AwaitWithDeadline(mu, cond, deadline);
  }

 private:
  Clock* const base_;
};

class SchedulerServiceTest : public ::testing::Test {
 protected:
  static constexpr int64_t kMaxPayloadBytes = 4096;

  static void SetUpTestSuite() { spdlog::set_level(spdlog::level::warn); }

  void SetUp() override {
    RequestLimits limits;
    limits.max_payload_bytes = kMaxPayloadBytes;
    SchedulerConfig config;
    config.default_max_attempts = 3;
    scheduler_ = std::make_unique<Scheduler>(&faulty_, &clock_, config);
    service_ = std::make_unique<SchedulerService>(
        scheduler_.get(), &service_clock_, &executor_, limits);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::Scheduler::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                            grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    server_->Shutdown();
    scheduler_->Stop();
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(30));
    return context;
  }

  grpc::Status Register(const v1::RegisterCronRequest& request,
                        v1::Cron* out = nullptr) {
    v1::Cron ignored;
    return stub_->RegisterCron(Context().get(), request,
                               out != nullptr ? out : &ignored);
  }

  v1::Cron MustRegister(const v1::RegisterCronRequest& request) {
    v1::Cron cron;
    grpc::Status s = Register(request, &cron);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return cron;
  }

  grpc::Status GetCron(const std::string& name, v1::Cron* out) {
    v1::GetCronRequest request;
    request.set_name(name);
    return stub_->GetCron(Context().get(), request, out);
  }

  grpc::Status SetLeadership(bool leader, uint64_t term, int64_t ttl_seconds,
                             v1::Leadership* out = nullptr) {
    v1::SetLeadershipRequest request;
    request.set_leader(leader);
    request.set_term(term);
    if (ttl_seconds != 0) *request.mutable_ttl() = Seconds(ttl_seconds);
    v1::Leadership ignored;
    return stub_->SetLeadership(Context().get(), request,
                                out != nullptr ? out : &ignored);
  }

  grpc::Status Preview(const v1::PreviewCronRequest& request,
                       std::vector<absl::Time>* out) {
    v1::PreviewCronResponse response;
    grpc::Status s = stub_->PreviewCron(Context().get(), request, &response);
    out->clear();
    for (const auto& ts : response.fire_times()) out->push_back(FromTs(ts));
    return s;
  }

  int CronCount() {
    absl::StatusOr<CronPage> page = store_.ListCrons(1000, "");
    EXPECT_TRUE(page.ok());
    return page.ok() ? static_cast<int>(page->crons.size()) : -1;
  }

  SimulatedClock clock_{kStart};
  ObservedClock service_clock_{&clock_};
  MemoryJobStore store_;
  // What the scheduler uses: store_, with calls a test can hold.
  FaultyJobStore faulty_{&store_};
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<SchedulerService> service_;
  // Destroyed before the service and the scheduler its tasks use: it runs
  // what is queued and joins its threads first (which also shows
  // ThreadSanitizer that those tasks are over).
  Executor executor_{2};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Scheduler::Stub> stub_;
};

TEST_F(SchedulerServiceTest, RegisterFillsTheDefaultsAndGetReturnsIt) {
  clock_.SetNow(kStart + absl::Minutes(5));
  v1::RegisterCronRequest request = Request("nightly/report", "0 3 * * *");
  request.mutable_job()->set_queue("");
  request.mutable_job()->set_payload("p");
  request.mutable_job()->set_priority(-4);
  v1::Cron cron = MustRegister(request);
  EXPECT_EQ(cron.name(), "nightly/report");
  EXPECT_EQ(cron.schedule(), "0 3 * * *");
  EXPECT_EQ(cron.timezone(), "UTC");
  EXPECT_EQ(cron.job().queue(), "default");
  EXPECT_EQ(cron.job().job_type(), "tick");
  EXPECT_EQ(cron.job().payload(), "p");
  EXPECT_EQ(cron.job().priority(), -4);
  EXPECT_EQ(cron.job().max_attempts(), 0);  // the default, at fire time
  EXPECT_EQ(cron.misfire_policy(), v1::MISFIRE_POLICY_FIRE_ONCE);
  EXPECT_EQ(cron.overlap_policy(), v1::OVERLAP_POLICY_ALLOW);
  EXPECT_EQ(cron.catchup_window().seconds(), 3600);
  EXPECT_FALSE(cron.paused());
  EXPECT_EQ(FromTs(cron.next_fire_time()), kStart + absl::Hours(3));
  EXPECT_FALSE(cron.has_last_fire_time());
  EXPECT_FALSE(cron.has_waiting_tick_time());
  EXPECT_EQ(FromTs(cron.created_at()), kStart + absl::Minutes(5));
  EXPECT_EQ(cron.fired_count(), 0);

  v1::Cron got;
  ASSERT_TRUE(GetCron("nightly/report", &got).ok());
  EXPECT_EQ(got.SerializeAsString(), cron.SerializeAsString());
}

TEST_F(SchedulerServiceTest, ReRegisteringIsAnUpsert) {
  v1::Cron first = MustRegister(Request("c", "0 * * * *"));
  clock_.Advance(absl::Minutes(30));
  v1::Cron same = MustRegister(Request("c", "0 * * * *"));
  EXPECT_EQ(same.SerializeAsString(), first.SerializeAsString());

  v1::RegisterCronRequest changed = Request("c", "*/20 * * * *");
  changed.set_misfire_policy(v1::MISFIRE_POLICY_FIRE_ALL);
  changed.set_overlap_policy(v1::OVERLAP_POLICY_WAIT);
  *changed.mutable_catchup_window() = Seconds(600);
  v1::Cron after = MustRegister(changed);
  EXPECT_EQ(FromTs(after.next_fire_time()), kStart + absl::Minutes(40));
  EXPECT_EQ(after.misfire_policy(), v1::MISFIRE_POLICY_FIRE_ALL);
  EXPECT_EQ(after.overlap_policy(), v1::OVERLAP_POLICY_WAIT);
  EXPECT_EQ(after.catchup_window().seconds(), 600);
  EXPECT_EQ(FromTs(after.updated_at()), kStart + absl::Minutes(30));
  EXPECT_EQ(FromTs(after.created_at()), kStart);

  v1::RegisterCronRequest paused = changed;
  paused.set_paused(true);
  v1::Cron p = MustRegister(paused);
  EXPECT_TRUE(p.paused());
  EXPECT_FALSE(p.has_next_fire_time());
}

TEST_F(SchedulerServiceTest, BadRegistrationsNameTheFieldAndChangeNothing) {
  MustRegister(Request("existing", "0 * * * *"));
  v1::Cron before;
  ASSERT_TRUE(GetCron("existing", &before).ok());

  struct Case {
    std::string field;
    std::function<void(v1::RegisterCronRequest*)> mutate;
  };
  const std::vector<Case> cases = {
      {"name", [](auto* r) { r->set_name(""); }},
      {"name", [](auto* r) { r->set_name(std::string(201, 'a')); }},
      {"name", [](auto* r) { r->set_name("has space"); }},
      {"name", [](auto* r) { r->set_name("semi;colon"); }},
      {"schedule", [](auto* r) { r->set_schedule(""); }},
      {"schedule", [](auto* r) { r->set_schedule("61 * * * *"); }},
      {"schedule", [](auto* r) { r->set_schedule("* * *"); }},
      {"schedule", [](auto* r) { r->set_schedule(std::string(1025, '*')); }},
      {"timezone", [](auto* r) { r->set_timezone("Mars/Olympus"); }},
      {"timezone", [](auto* r) { r->set_timezone("../../etc/passwd"); }},
      {"job", [](auto* r) { r->clear_job(); }},
      {"job.job_type", [](auto* r) { r->mutable_job()->set_job_type(""); }},
      {"job.job_type",
       [](auto* r) { r->mutable_job()->set_job_type(std::string(129, 't')); }},
      {"job.queue",
       [](auto* r) { r->mutable_job()->set_queue(std::string(129, 'q')); }},
      {"job.queue", [](auto* r) { r->mutable_job()->set_queue("bad\nq"); }},
      {"job.payload",
       [](auto* r) {
         r->mutable_job()->set_payload(std::string(kMaxPayloadBytes + 1, 'x'));
       }},
      {"job.max_attempts",
       [](auto* r) { r->mutable_job()->set_max_attempts(-1); }},
      {"job.max_attempts",
       [](auto* r) { r->mutable_job()->set_max_attempts(1001); }},
      {"misfire_policy",
       [](auto* r) {
         r->set_misfire_policy(static_cast<v1::MisfirePolicy>(9));
       }},
      {"overlap_policy",
       [](auto* r) {
         r->set_overlap_policy(static_cast<v1::OverlapPolicy>(-1));
       }},
      {"catchup_window",
       [](auto* r) { *r->mutable_catchup_window() = Seconds(0); }},
      {"catchup_window",
       [](auto* r) { *r->mutable_catchup_window() = Seconds(7 * 86400 + 1); }},
      {"catchup_window",
       [](auto* r) { *r->mutable_catchup_window() = Seconds(-5); }},
  };
  for (const Case& c : cases) {
    // Each case also tries to change the existing schedule's expression.
    v1::RegisterCronRequest request = Request("existing", "*/5 * * * *");
    c.mutate(&request);
    grpc::Status s = Register(request);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.field << ": " << s.error_message();
    EXPECT_TRUE(absl::StartsWith(s.error_message(), c.field + ":"))
        << c.field << " vs " << s.error_message();
  }
  EXPECT_EQ(CronCount(), 1);
  v1::Cron after;
  ASSERT_TRUE(GetCron("existing", &after).ok());
  EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString());
}

TEST_F(SchedulerServiceTest, LimitsAreInclusive) {
  v1::RegisterCronRequest r = Request(std::string(200, 'n'), "0 * * * *");
  r.mutable_job()->set_max_attempts(1000);
  r.mutable_job()->set_payload(std::string(kMaxPayloadBytes, 'x'));
  *r.mutable_catchup_window() = Seconds(7 * 86400);
  r.set_timezone("America/Argentina/Buenos_Aires");
  EXPECT_TRUE(Register(r).ok());
  r = Request("A-z.0_9:/-", "0 * * * *");
  *r.mutable_catchup_window() = Seconds(1);
  r.set_timezone("Etc/GMT+5");
  EXPECT_TRUE(Register(r).ok());
}

TEST_F(SchedulerServiceTest, UnregisterGetAndList) {
  for (const char* name : {"e", "a", "d", "b", "c"}) {
    MustRegister(Request(name, "0 * * * *"));
  }
  std::vector<std::string> names;
  std::string token;
  int pages = 0;
  do {
    v1::ListCronsRequest request;
    request.set_page_size(2);
    request.set_page_token(token);
    v1::ListCronsResponse response;
    ASSERT_TRUE(stub_->ListCrons(Context().get(), request, &response).ok());
    for (const v1::Cron& c : response.crons()) names.push_back(c.name());
    token = response.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(pages, 3);

  v1::ListCronsRequest all;
  v1::ListCronsResponse response;
  ASSERT_TRUE(stub_->ListCrons(Context().get(), all, &response).ok());
  EXPECT_EQ(response.crons_size(), 5);  // page_size 0 means 100
  for (int size : {-1, 1001}) {
    v1::ListCronsRequest bad;
    bad.set_page_size(size);
    grpc::Status s = stub_->ListCrons(Context().get(), bad, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StartsWith(s.error_message(), "page_size:"));
  }

  v1::UnregisterCronRequest unregister;
  unregister.set_name("c");
  v1::UnregisterCronResponse done;
  EXPECT_TRUE(stub_->UnregisterCron(Context().get(), unregister, &done).ok());
  EXPECT_EQ(
      stub_->UnregisterCron(Context().get(), unregister, &done).error_code(),
      grpc::StatusCode::NOT_FOUND);
  v1::Cron cron;
  EXPECT_EQ(GetCron("c", &cron).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetCron("", &cron).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  unregister.set_name("bad name");
  grpc::Status s = stub_->UnregisterCron(Context().get(), unregister, &done);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(s.error_message(), "name:"));
  EXPECT_EQ(CronCount(), 4);
}

TEST_F(SchedulerServiceTest, PreviewListsFireTimesWithoutRegistering) {
  v1::PreviewCronRequest request;
  request.set_schedule("*/15 * * * *");
  std::vector<absl::Time> times;
  ASSERT_TRUE(Preview(request, &times).ok());  // after = now, count = 10
  ASSERT_EQ(times.size(), 10u);
  EXPECT_EQ(times.front(), kStart + absl::Minutes(15));
  EXPECT_EQ(times.back(), kStart + absl::Minutes(150));

  request.set_count(3);
  *request.mutable_after() = At(kStart + absl::Hours(5) + absl::Minutes(1));
  ASSERT_TRUE(Preview(request, &times).ok());
  EXPECT_EQ(times, (std::vector<absl::Time>{
                       kStart + absl::Hours(5) + absl::Minutes(15),
                       kStart + absl::Hours(5) + absl::Minutes(30),
                       kStart + absl::Hours(5) + absl::Minutes(45)}));

  // @every counts from `after`.
  request.set_schedule("@every 90s");
  *request.mutable_after() = At(kStart + absl::Seconds(7));
  ASSERT_TRUE(Preview(request, &times).ok());
  EXPECT_EQ(times, (std::vector<absl::Time>{kStart + absl::Seconds(97),
                                            kStart + absl::Seconds(187),
                                            kStart + absl::Seconds(277)}));

  // A date that never comes: fewer than asked (none).
  request.set_schedule("0 0 30 2 *");
  ASSERT_TRUE(Preview(request, &times).ok());
  EXPECT_TRUE(times.empty());

  // Spring forward in New York: 02:30 does not exist on 2026-03-08.
  absl::TimeZone ny;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &ny));
  request.set_schedule("30 2 * * *");
  request.set_timezone("America/New_York");
  *request.mutable_after() =
      At(absl::FromCivil(absl::CivilSecond(2026, 3, 7, 0, 0, 0), ny));
  ASSERT_TRUE(Preview(request, &times).ok());
  EXPECT_EQ(times,
            (std::vector<absl::Time>{
                absl::FromCivil(absl::CivilSecond(2026, 3, 7, 2, 30, 0), ny),
                absl::FromCivil(absl::CivilSecond(2026, 3, 8, 3, 0, 0), ny),
                absl::FromCivil(absl::CivilSecond(2026, 3, 9, 2, 30, 0), ny)}));

  request.set_count(1000);
  request.set_schedule("* * * * * *");
  ASSERT_TRUE(Preview(request, &times).ok());
  EXPECT_EQ(times.size(), 1000u);
  EXPECT_EQ(CronCount(), 0);
}

TEST_F(SchedulerServiceTest, BadPreviewsNameTheField) {
  struct Case {
    std::string field;
    std::function<void(v1::PreviewCronRequest*)> mutate;
  };
  const std::vector<Case> cases = {
      {"schedule", [](auto* r) { r->set_schedule(""); }},
      {"schedule", [](auto* r) { r->set_schedule("0 0 32 * *"); }},
      {"timezone", [](auto* r) { r->set_timezone("Nowhere/Town"); }},
      {"count", [](auto* r) { r->set_count(-1); }},
      {"count", [](auto* r) { r->set_count(1001); }},
      {"after", [](auto* r) { r->mutable_after()->set_nanos(-1); }},
      {"after",
       [](auto* r) { r->mutable_after()->set_seconds(300000000000LL); }},
  };
  for (const Case& c : cases) {
    v1::PreviewCronRequest request;
    request.set_schedule("0 * * * *");
    c.mutate(&request);
    std::vector<absl::Time> times;
    grpc::Status s = Preview(request, &times);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_TRUE(absl::StartsWith(s.error_message(), c.field + ":"))
        << c.field << " vs " << s.error_message();
  }
}

TEST_F(SchedulerServiceTest, LeadershipThroughTheApi) {
  v1::Leadership l;
  ASSERT_TRUE(
      stub_->GetLeadership(Context().get(), v1::GetLeadershipRequest(), &l)
          .ok());
  EXPECT_FALSE(l.leader());
  EXPECT_EQ(l.term(), 0u);

  ASSERT_TRUE(SetLeadership(true, 7, 30, &l).ok());
  EXPECT_TRUE(l.leader());
  EXPECT_EQ(l.term(), 7u);
  EXPECT_EQ(l.highest_term(), 7u);
  EXPECT_EQ(FromTs(l.expires_at()), kStart + absl::Seconds(30));

  grpc::Status lower = SetLeadership(true, 6, 0);
  EXPECT_EQ(lower.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StartsWith(lower.error_message(), "term:"))
      << lower.error_message();
  for (int64_t ttl : {-1, 3601}) {
    grpc::Status bad = SetLeadership(true, 8, ttl);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StartsWith(bad.error_message(), "ttl:"));
  }
  // Refusals changed nothing: still term 7, the store's highest still 7.
  ASSERT_TRUE(
      stub_->GetLeadership(Context().get(), v1::GetLeadershipRequest(), &l)
          .ok());
  EXPECT_TRUE(l.leader());
  EXPECT_EQ(l.term(), 7u);
  EXPECT_EQ(l.highest_term(), 7u);

  clock_.Advance(absl::Seconds(30));  // the TTL lapses
  ASSERT_TRUE(
      stub_->GetLeadership(Context().get(), v1::GetLeadershipRequest(), &l)
          .ok());
  EXPECT_FALSE(l.leader());
  EXPECT_FALSE(l.has_expires_at());

  ASSERT_TRUE(SetLeadership(true, 7, 0, &l).ok());
  EXPECT_TRUE(l.leader());
  EXPECT_FALSE(l.has_expires_at());  // until revoked
  ASSERT_TRUE(SetLeadership(false, 9, 0, &l).ok());
  EXPECT_FALSE(l.leader());
  EXPECT_EQ(l.highest_term(), 9u);
}

// The TTL counts from the grant's arrival, not from when the executor and
// the store let it through: the grant waits 2 s behind a burst of slow calls
// in the executor's queue, then 2 s in ObserveTerm (another process has the
// SQLite write lock).
TEST_F(SchedulerServiceTest, LeadershipTtlCountsFromTheGrantsArrival) {
  absl::Notification executor_free;
  for (int i = 0; i < 2; ++i) {  // both executor threads busy
    executor_.Schedule([&] { executor_free.WaitForNotification(); });
  }
  absl::Notification arrived;
  service_clock_.on_monotonic = [&] {
    if (!arrived.HasBeenNotified()) arrived.Notify();
  };
  absl::Notification store_entered;
  absl::Notification store_free;
  faulty_.on_observe_term = [&] {
    store_entered.Notify();
    store_free.WaitForNotification();
  };
  v1::Leadership l;
  grpc::Status status;
  std::thread call([&] { status = SetLeadership(true, 1, 10, &l); });
  // Real-time bounds only so that a regression fails instead of hanging.
  EXPECT_TRUE(arrived.WaitForNotificationWithTimeout(absl::Minutes(1)));
  clock_.Advance(absl::Seconds(2));
  executor_free.Notify();
  EXPECT_TRUE(store_entered.WaitForNotificationWithTimeout(absl::Minutes(1)));
  clock_.Advance(absl::Seconds(2));
  store_free.Notify();
  call.join();
  service_clock_.on_monotonic = nullptr;
  faulty_.on_observe_term = nullptr;
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(l.leader());
  EXPECT_EQ(FromTs(l.expires_at()), kStart + absl::Seconds(10));

  clock_.Advance(absl::Seconds(5));  // 9 s after the grant
  ASSERT_TRUE(
      stub_->GetLeadership(Context().get(), v1::GetLeadershipRequest(), &l)
          .ok());
  EXPECT_TRUE(l.leader());
  clock_.Advance(absl::Seconds(1));  // 10 s: lapsed
  ASSERT_TRUE(
      stub_->GetLeadership(Context().get(), v1::GetLeadershipRequest(), &l)
          .ok());
  EXPECT_FALSE(l.leader());
}

TEST_F(SchedulerServiceTest, FiresOnlyAfterSetLeadership) {
  scheduler_->Start();
  MustRegister(Request("sec", "* * * * * *"));
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(1));
    scheduler_->WaitForIdleForTest();
  }
  v1::Cron cron;
  ASSERT_TRUE(GetCron("sec", &cron).ok());
  EXPECT_EQ(cron.fired_count(), 0);

  ASSERT_TRUE(SetLeadership(true, 1, 0).ok());
  scheduler_->WaitForIdleForTest();
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(absl::Seconds(1));
    scheduler_->WaitForIdleForTest();
  }
  ASSERT_TRUE(GetCron("sec", &cron).ok());
  EXPECT_EQ(cron.fired_count(), 4);  // the latest missed tick, then 3 more
  EXPECT_EQ(FromTs(cron.last_fire_time()), kStart + absl::Seconds(6));
  absl::StatusOr<Job> job = store_.GetJob(cron.last_job_id());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->cron_name, "sec");
  EXPECT_EQ(job->max_attempts, 3);
}

}  // namespace
}  // namespace adjutant
