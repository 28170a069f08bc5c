// AckBatch and the Work stream through real gRPC (generated stubs against an
// in-process AdjutantServer on 127.0.0.1:0), on every store backend, with a
// SimulatedClock: time passes only when a test moves it.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/convert.h"
#include "server/long_poll.h"
#include "tests/server/server_test_util.h"

namespace adjutant {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

google::protobuf::Duration D(absl::Duration d) {
  google::protobuf::Duration out;
  ToProto(d, &out);
  return out;
}

// One Work stream with the synchronous stub: the test thread reads and
// writes.
class WorkSession {
 public:
  explicit WorkSession(v1::JobQueue::Stub* stub) {
    // Real time: only a guard against a hung test.
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(60));
    stream_ = stub->Work(&context_);
  }
  ~WorkSession() {
    if (!finished_) {
      context_.TryCancel();
      Finish();
    }
  }

  bool Start(const std::string& queue, int capacity,
             absl::Duration lease = absl::Seconds(30),
             std::vector<std::string> job_types = {}) {
    v1::WorkRequest request;
    v1::WorkStart* start = request.mutable_start();
    start->set_queue(queue);
    start->set_capacity(capacity);
    *start->mutable_lease_duration() = D(lease);
    start->set_worker_id("stream-worker");
    for (const std::string& type : job_types) start->add_job_types(type);
    return stream_->Write(request);
  }
  bool Send(const v1::WorkRequest& request) { return stream_->Write(request); }
  bool Ack(const std::string& job_id, const std::string& token) {
    v1::WorkRequest request;
    request.mutable_ack()->set_job_id(job_id);
    request.mutable_ack()->set_lease_token(token);
    return stream_->Write(request);
  }
  bool Nack(const std::string& job_id, const std::string& token,
            absl::Duration retry_after) {
    v1::WorkRequest request;
    request.mutable_nack()->set_job_id(job_id);
    request.mutable_nack()->set_lease_token(token);
    request.mutable_nack()->set_error("failed");
    *request.mutable_nack()->mutable_retry_after() = D(retry_after);
    return stream_->Write(request);
  }
  bool Read(v1::WorkResponse* response) { return stream_->Read(response); }
  // Reads one message, which must be a job.
  v1::LeasedJob ReadJob() {
    v1::WorkResponse response;
    EXPECT_TRUE(stream_->Read(&response));
    EXPECT_TRUE(response.has_job()) << response.DebugString();
    return response.job();
  }
  // Reads until the result for `job_id` comes; jobs read meanwhile go to
  // `jobs`.
  v1::SettleResult ReadSettled(const std::string& job_id,
                               std::vector<v1::LeasedJob>* jobs = nullptr) {
    v1::WorkResponse response;
    while (stream_->Read(&response)) {
      if (response.has_settled() && response.settled().job_id() == job_id) {
        return response.settled();
      }
      EXPECT_TRUE(response.has_job()) << response.DebugString();
      if (jobs != nullptr) jobs->push_back(response.job());
    }
    ADD_FAILURE() << "the stream ended before job " << job_id << " was settled";
    return v1::SettleResult();
  }
  void CloseSend() { stream_->WritesDone(); }
  void Cancel() { context_.TryCancel(); }
  // Reads what is left, then the status.
  grpc::Status Finish(std::vector<v1::WorkResponse>* rest = nullptr) {
    v1::WorkResponse response;
    while (stream_->Read(&response)) {
      if (rest != nullptr) rest->push_back(response);
    }
    finished_ = true;
    return stream_->Finish();
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkRequest, v1::WorkResponse>>
      stream_;
  bool finished_ = false;
};

class WorkStreamTest : public ServerTest {
 protected:
  int CountInState(const std::string& queue, v1::JobState state) {
    v1::ListJobsRequest request;
    request.set_queue(queue);
    request.set_state(state);
    request.set_page_size(1000);
    v1::ListJobsResponse response;
    grpc::Status status = stub_->ListJobs(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.jobs_size();
  }

  grpc::Status AckBatch(
      const std::vector<std::pair<std::string, std::string>>& acks,
      v1::AckBatchResponse* response) {
    v1::AckBatchRequest request;
    for (const auto& [id, token] : acks) {
      v1::AckRequest* ack = request.add_acks();
      ack->set_job_id(id);
      ack->set_lease_token(token);
    }
    return stub_->AckBatch(Context().get(), request, response);
  }

  std::string Metrics() { return server_->metrics()->registry()->Render(); }
};

// ---- AckBatch
// ----------------------------------------------------------------

TEST_P(WorkStreamTest, AckBatchJudgesEachItemOnItsOwn) {
  const std::string a = Enqueue("q");
  const std::string b = Enqueue("q");
  const std::string c = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30), 3);
  ASSERT_EQ(leased.size(), 3u);
  std::map<std::string, std::string> token;
  for (const v1::LeasedJob& l : leased)
    token[l.job().job_id()] = l.lease_token();

  v1::AckBatchResponse response;
  grpc::Status status = AckBatch({{a, token[a]},
                                  {b, "not-the-token"},
                                  {"no-such-job", "t"},
                                  {c, token[c]}},
                                 &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 4);
  EXPECT_EQ(response.results(0).job_id(), a);
  EXPECT_EQ(response.results(0).code(), grpc::StatusCode::OK);
  EXPECT_EQ(response.results(1).job_id(), b);
  EXPECT_EQ(response.results(1).code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(response.results(1).message(), Not(HasSubstr(token[b])));
  EXPECT_EQ(response.results(2).code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(response.results(3).code(), grpc::StatusCode::OK);
  EXPECT_EQ(GetJob(a).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(GetJob(b).state(), v1::JOB_STATE_LEASED);
  EXPECT_EQ(GetJob(c).state(), v1::JOB_STATE_SUCCEEDED);
  // Metered as acks and as one store write.
  EXPECT_THAT(Metrics(), HasSubstr("adjutant_jobs_acked_total{queue=\"q\"} 2"));
  EXPECT_THAT(Metrics(),
              HasSubstr("adjutant_store_batch_size_count{op=\"ack_batch\"} 1"));

  // Retried with the tokens that succeeded: OK again, as for Ack.
  v1::AckBatchResponse again;
  ASSERT_TRUE(AckBatch({{a, token[a]}, {c, token[c]}}, &again).ok());
  EXPECT_EQ(again.results(0).code(), grpc::StatusCode::OK);
  EXPECT_EQ(again.results(1).code(), grpc::StatusCode::OK);
}

TEST_P(WorkStreamTest, AMalformedAckBatchIsRejectedWholeAndAcksNothing) {
  const std::string a = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  const std::string before = StoreSnapshot();
  const std::string token = leased[0].lease_token();

  struct Case {
    std::vector<std::pair<std::string, std::string>> acks;
    std::string message;
  };
  std::vector<std::pair<std::string, std::string>> too_many(1001, {a, token});
  for (const Case& c : std::vector<Case>{
           {{}, "acks: must hold 1 to 1000 items (got 0"},
           {too_many, "acks: must hold 1 to 1000 items (got 1001"},
           {{{a, token}, {a, token}},
            "acks[1].job_id: the job is already in the batch at acks[0]"},
           {{{a, token}, {"", "t"}}, "acks[1].job_id: required"},
           {{{a, ""}}, "acks[0].lease_token: required"},
       }) {
    v1::AckBatchResponse response;
    grpc::Status status = AckBatch(c.acks, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.message;
    EXPECT_THAT(status.error_message(), StartsWith(c.message));
    EXPECT_EQ(StoreSnapshot(), before) << c.message;
  }
}

// ---- Work
// --------------------------------------------------------------------

TEST_P(WorkStreamTest, PushesAtMostCapacityAndEachSettlementFreesASlot) {
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.insert(Enqueue("q"));
  WorkSession session(stub_.get());
  ASSERT_TRUE(session.Start("q", 2));
  std::vector<v1::LeasedJob> held = {session.ReadJob(), session.ReadJob()};
  EXPECT_EQ(CountInState("q", v1::JOB_STATE_LEASED), 2);
  EXPECT_EQ(held[0].job().worker_id(), "stream-worker");

  std::set<std::string> seen;
  int acked = 0, nacked = 0;
  while (!held.empty()) {
    v1::LeasedJob job = held.front();
    held.erase(held.begin());
    seen.insert(job.job().job_id());
    // Never more than capacity unsettled.
    EXPECT_LE(CountInState("q", v1::JOB_STATE_LEASED), 2);
    v1::SettleResult result;
    if (acked + nacked == 1) {
      // One nack, retried later (a minute on the simulated clock).
      ASSERT_TRUE(session.Nack(job.job().job_id(), job.lease_token(),
                               absl::Minutes(1)));
      result = session.ReadSettled(job.job().job_id(), &held);
      ++nacked;
    } else {
      ASSERT_TRUE(session.Ack(job.job().job_id(), job.lease_token()));
      result = session.ReadSettled(job.job().job_id(), &held);
      ++acked;
    }
    EXPECT_EQ(result.code(), grpc::StatusCode::OK) << result.message();
    if (acked + nacked == 5) break;
    if (held.empty() && seen.size() < ids.size())
      held.push_back(session.ReadJob());
  }
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(CountInState("q", v1::JOB_STATE_SUCCEEDED), 4);
  EXPECT_EQ(CountInState("q", v1::JOB_STATE_PENDING), 1);  // the nacked one
  session.CloseSend();
  EXPECT_TRUE(session.Finish().ok());
  EXPECT_THAT(Metrics(), HasSubstr("adjutant_jobs_acked_total{queue=\"q\"} 4"));
  EXPECT_THAT(Metrics(),
              HasSubstr("adjutant_jobs_nacked_total{queue=\"q\"} 1"));
  EXPECT_THAT(Metrics(),
              HasSubstr("adjutant_jobs_leased_total{queue=\"q\"} 5"));
  EXPECT_THAT(Metrics(),
              HasSubstr("adjutant_rpcs_total{method=\"adjutant.v1.JobQueue/"
                        "Work\",code=\"OK\"} 1"));
}

TEST_P(WorkStreamTest, PushesJobsEnqueuedLaterWithoutPolling) {
  WorkSession session(stub_.get());
  ASSERT_TRUE(session.Start("q", 3, absl::Seconds(30), {"t"}));
  // Nothing to lease: the stream parks, holding no thread.
  server_->long_poll()->AwaitParkedForTest(1);
  const int sweeps = server_->long_poll()->SweepCountForTest();
  const std::string id = Enqueue("q");
  v1::LeasedJob job = session.ReadJob();
  EXPECT_EQ(job.job().job_id(), id);
  EXPECT_EQ(job.job().state(), v1::JOB_STATE_LEASED);
  EXPECT_FALSE(job.lease_token().empty());
  // Parked again for its two free slots; another type does not wake it.
  server_->long_poll()->AwaitParkedForTest(1);
  v1::EnqueueRequest other;
  other.set_queue("q");
  other.set_job_type("other");
  Enqueue(other);
  const std::string second = Enqueue("q");
  EXPECT_EQ(session.ReadJob().job().job_id(), second);
  // No time passed: no sweep beyond the attempts' own.
  EXPECT_LE(server_->long_poll()->SweepCountForTest() - sweeps, 0);
  session.CloseSend();
  EXPECT_TRUE(session.Finish().ok());
  server_->long_poll()->AwaitParkedForTest(0);
}

TEST_P(WorkStreamTest, SettlementsOfForeignJobsOrStaleTokensAreRefused) {
  const std::string foreign = Enqueue("q");
  std::vector<v1::LeasedJob> leased = Lease("q", absl::Seconds(30));
  ASSERT_EQ(leased.size(), 1u);
  const std::string mine = Enqueue("q");
  WorkSession session(stub_.get());
  ASSERT_TRUE(session.Start("q", 1));
  v1::LeasedJob job = session.ReadJob();
  ASSERT_EQ(job.job().job_id(), mine);

  // Leased by Dequeue, not pushed on this stream: refused, though the
  // token is right.
  ASSERT_TRUE(session.Ack(foreign, leased[0].lease_token()));
  v1::SettleResult result = session.ReadSettled(foreign);
  EXPECT_EQ(result.code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(result.message(), HasSubstr("not held on this stream"));
  EXPECT_EQ(GetJob(foreign).state(), v1::JOB_STATE_LEASED);

  // A stale token: refused, the job stays held (its slot too).
  ASSERT_TRUE(session.Ack(mine, "stale-token"));
  result = session.ReadSettled(mine);
  EXPECT_EQ(result.code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(result.message(), HasSubstr("lease_token"));
  EXPECT_EQ(GetJob(mine).state(), v1::JOB_STATE_LEASED);

  // A malformed settlement is answered INVALID_ARGUMENT; the stream goes on.
  v1::WorkRequest bad;
  bad.mutable_nack()->set_job_id(mine);
  bad.mutable_nack()->set_lease_token(job.lease_token());
  bad.mutable_nack()->mutable_retry_after()->set_seconds(-1);
  ASSERT_TRUE(session.Send(bad));
  result = session.ReadSettled(mine);
  EXPECT_EQ(result.code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.message(), StartsWith("nack.retry_after:"));
  EXPECT_EQ(GetJob(mine).state(), v1::JOB_STATE_LEASED);

  ASSERT_TRUE(session.Ack(mine, job.lease_token()));
  EXPECT_EQ(session.ReadSettled(mine).code(), grpc::StatusCode::OK);
  // Settled: a second ack is no longer this stream's.
  ASSERT_TRUE(session.Ack(mine, job.lease_token()));
  EXPECT_EQ(session.ReadSettled(mine).code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GetJob(mine).state(), v1::JOB_STATE_SUCCEEDED);
  session.CloseSend();
  EXPECT_TRUE(session.Finish().ok());
}

TEST_P(WorkStreamTest, AMalformedFirstMessageEndsTheStream) {
  const std::string id = Enqueue("q");
  const std::string before = StoreSnapshot();
  struct Case {
    std::function<void(WorkSession*)> send;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {[](WorkSession* s) { s->Ack("x", "t"); },
            "start: required as the first message"},
           {[](WorkSession* s) { s->Start("q", 0); },
            "start.capacity: must be between 1 and 1000 (got 0"},
           {[](WorkSession* s) { s->Start("q", 1001); },
            "start.capacity: must be between 1 and 1000 (got 1001"},
           {[](WorkSession* s) { s->Start("q", 1, absl::Milliseconds(10)); },
            "start.lease_duration:"},
           {[](WorkSession* s) { s->Start("q\n", 1); },
            "start.queue: contains a control character"},
           {[](WorkSession* s) { s->Start("q", 1, absl::Seconds(30), {""}); },
            "start.job_types[0]: required"},
           {[](WorkSession*) {}, "start: required as the first message"},
       }) {
    WorkSession session(stub_.get());
    c.send(&session);
    session.CloseSend();
    grpc::Status status = session.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.message;
    EXPECT_THAT(status.error_message(), StartsWith(c.message));
    EXPECT_EQ(StoreSnapshot(), before) << c.message;
  }
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_PENDING);
}

TEST_P(WorkStreamTest, AMalformedLaterMessageEndsTheStream) {
  for (int kind = 0; kind < 2; ++kind) {
    WorkSession session(stub_.get());
    ASSERT_TRUE(session.Start("q", 1));
    server_->long_poll()->AwaitParkedForTest(1);
    v1::WorkRequest request;
    if (kind == 0) request.mutable_start()->set_capacity(1);
    ASSERT_TRUE(session.Send(request));
    grpc::Status status = session.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(),
                StartsWith(kind == 0 ? "start: only the first message"
                                     : "kind: empty message"));
    // Its park ends with it.
    server_->long_poll()->AwaitParkedForTest(0);
  }
}

TEST_P(WorkStreamTest, HalfCloseAnswersOutstandingSettlementsThenEndsOk) {
  const std::string a = Enqueue("q");
  const std::string b = Enqueue("q");
  WorkSession session(stub_.get());
  ASSERT_TRUE(session.Start("q", 2));
  v1::LeasedJob first = session.ReadJob();
  v1::LeasedJob second = session.ReadJob();
  ASSERT_TRUE(session.Ack(first.job().job_id(), first.lease_token()));
  ASSERT_TRUE(session.Ack(second.job().job_id(), second.lease_token()));
  session.CloseSend();
  std::vector<v1::WorkResponse> rest;
  grpc::Status status = session.Finish(&rest);
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(rest.size(), 2u);
  for (const v1::WorkResponse& r : rest) {
    ASSERT_TRUE(r.has_settled());
    EXPECT_EQ(r.settled().code(), grpc::StatusCode::OK);
  }
  EXPECT_EQ(GetJob(a).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(GetJob(b).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_P(WorkStreamTest, ACancelledStreamsJobsStayLeasedUntilTheirLeasesExpire) {
  const std::string id = Enqueue("q");
  {
    WorkSession gone(stub_.get());
    ASSERT_TRUE(gone.Start("q", 1, absl::Seconds(10)));
    EXPECT_EQ(gone.ReadJob().job().job_id(), id);
    gone.Cancel();
    EXPECT_EQ(gone.Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_LEASED);
  WorkSession next(stub_.get());
  ASSERT_TRUE(next.Start("q", 1));
  server_->long_poll()->AwaitParkedForTest(1);
  clock_.Advance(absl::Seconds(9));
  SettleTimer();
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_LEASED);
  clock_.Advance(absl::Seconds(1));
  v1::LeasedJob job = next.ReadJob();
  EXPECT_EQ(job.job().job_id(), id);
  EXPECT_EQ(job.job().attempts(), 2);
  next.CloseSend();
  EXPECT_TRUE(next.Finish().ok());
}

// Jobs leased for a stream but still queued to be written when it ends
// never reached the worker: their leases are taken back, attempt and all,
// so they run again at once rather than after their leases expire (and a
// job with one attempt does not go DEAD unseen). A client that reads
// nothing stalls the server's writes after its flow-control window: held
// at HTTP/2's initial 64 KiB (no BDP probing, which would grow it with the
// machine's speed), that is a few dozen of these jobs, so most of the 1000
// are still queued when it leaves.
TEST_P(WorkStreamTest, JobsNeverSentAreGivenBackWhenTheStreamEnds) {
  constexpr int kJobs = 1000;
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < kJobs; ++i) {
    v1::EnqueueRequest* job = batch.add_jobs();
    job->set_queue("q");
    job->set_job_type("t");
    job->set_payload(std::string(kMaxPayloadBytes, 'p'));
  }
  v1::EnqueueBatchResponse enqueued;
  ASSERT_TRUE(stub_->EnqueueBatch(Context().get(), batch, &enqueued).ok());
  auto leased = [this]() -> int64_t {
    absl::StatusOr<std::vector<QueueStats>> stats =
        store_->QueueStatistics(clock_.Now());
    return stats.ok() && stats->size() == 1 ? (*stats)[0].leased : -1;
  };
  grpc::ChannelArguments fixed_window;
  fixed_window.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  std::unique_ptr<v1::JobQueue::Stub> stub =
      v1::JobQueue::NewStub(grpc::CreateCustomChannel(
          absl::StrCat("127.0.0.1:", server_->port()),
          grpc::InsecureChannelCredentials(), fixed_window));
  WorkSession gone(stub.get());
  ASSERT_TRUE(gone.Start("q", kJobs));
  // Real time, bounded: the lease task runs on the server's executor.
  for (int i = 0; i < 2000 && leased() < kJobs; ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(leased(), kJobs);
  gone.Cancel();
  EXPECT_EQ(gone.Finish().error_code(), grpc::StatusCode::CANCELLED);

  // The leases come back in one store call, after the stream ended.
  int64_t still_leased = kJobs;
  for (int i = 0; i < 2000 && still_leased == kJobs; ++i) {
    still_leased = leased();
    if (still_leased == kJobs) absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_LT(still_leased, kJobs / 2) << "the unsent jobs were given back";
  absl::StatusOr<std::vector<QueueStats>> stats =
      store_->QueueStatistics(clock_.Now());
  ASSERT_TRUE(stats.ok() && stats->size() == 1);
  EXPECT_EQ((*stats)[0].pending, kJobs - still_leased);
  v1::ListJobsRequest request;
  request.set_queue("q");
  request.set_state(v1::JOB_STATE_PENDING);
  request.set_page_size(500);  // under the client's 4 MB for one answer
  v1::ListJobsResponse listed;
  ASSERT_TRUE(stub_->ListJobs(Context().get(), request, &listed).ok());
  ASSERT_GT(listed.jobs_size(), 0);
  for (const v1::Job& job : listed.jobs()) {
    EXPECT_EQ(job.attempts(), 0) << job.job_id();
  }
  // The next worker gets one of them now, not after a lease runs out.
  WorkSession next(stub_.get());
  ASSERT_TRUE(next.Start("q", 1));
  EXPECT_EQ(next.ReadJob().job().attempts(), 1);
  next.CloseSend();
}

TEST_P(WorkStreamTest, ShutdownEndsStreamsWithUnavailable) {
  Enqueue("full");
  WorkSession full(stub_.get());
  ASSERT_TRUE(full.Start("full", 1));
  full.ReadJob();  // every slot taken: not parked
  WorkSession parked(stub_.get());
  ASSERT_TRUE(parked.Start("empty", 1));
  server_->long_poll()->AwaitParkedForTest(1);
  server_->Shutdown();
  for (WorkSession* session : {&full, &parked}) {
    grpc::Status status = session->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(status.error_message(), HasSubstr("server shutting down"));
  }
}

TEST_P(WorkStreamTest, TwoStreamsOnOneQueueNeverGetTheSameJob) {
  constexpr int kJobs = 40;
  std::set<std::string> all;
  for (int i = 0; i < kJobs; ++i) all.insert(Enqueue("q"));
  WorkSession sessions[2] = {WorkSession(stub_.get()),
                             WorkSession(stub_.get())};
  std::vector<std::string> got[2];
  absl::Mutex mu;
  int done = 0;
  auto work = [&](int w) {
    WorkSession& session = sessions[w];
    ASSERT_TRUE(session.Start("q", 3));
    std::vector<v1::LeasedJob> held;
    v1::WorkResponse response;
    // Ends when the test cancels the stream, once every job is acked.
    for (;;) {
      if (held.empty()) {
        if (!session.Read(&response)) return;
        if (response.has_job()) held.push_back(response.job());
        continue;
      }
      v1::LeasedJob job = held.front();
      held.erase(held.begin());
      got[w].push_back(job.job().job_id());
      ASSERT_TRUE(session.Ack(job.job().job_id(), job.lease_token()));
      v1::SettleResult result = session.ReadSettled(job.job().job_id(), &held);
      EXPECT_EQ(result.code(), grpc::StatusCode::OK) << result.message();
      absl::MutexLock l(&mu);
      ++done;
    }
  };
  std::thread a(work, 0), b(work, 1);
  {
    absl::MutexLock l(&mu);
    auto all_done = [&done]() { return done == kJobs; };
    mu.Await(absl::Condition(&all_done));
  }
  sessions[0].Cancel();
  sessions[1].Cancel();
  a.join();
  b.join();
  std::set<std::string> seen(got[0].begin(), got[0].end());
  for (const std::string& id : got[1]) {
    EXPECT_TRUE(seen.insert(id).second) << id << " went to both streams";
  }
  EXPECT_EQ(seen, all);
}

INSTANTIATE_TEST_SUITE_P(Stores, WorkStreamTest,
                         ::testing::ValuesIn(AllStoreBackends()),
                         ServerTest::Name);

}  // namespace
}  // namespace adjutant
