#include "client/worker.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

// Limits the server enforces (server/validation.h); checked here so that a
// bad option fails Start() instead of every call.
constexpr size_t kMaxNameBytes = 128;
constexpr size_t kMaxErrorBytes = 64 * 1024;
constexpr int kMaxConcurrency = 1000;
constexpr absl::Duration kMinLease = absl::Seconds(1);
constexpr absl::Duration kMaxLease = absl::Hours(24);
constexpr absl::Duration kMaxPollWait = absl::Minutes(5);
constexpr absl::Duration kMaxRetryAfter = absl::Hours(24 * 30);
// The shortest deadline given to an ExtendLease call.
constexpr absl::Duration kMinExtendDeadline = absl::Milliseconds(200);

absl::Status InvalidOption(absl::string_view field, absl::string_view reason) {
  return absl::InvalidArgumentError(
      absl::StrCat("WorkerOptions.", field, ": ", reason));
}

// Errors that say nothing about the request, only about the way to the
// server: the same call may succeed later.
bool IsTransient(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

// The lease is gone: the job was cancelled, finished elsewhere, or its lease
// expired.
bool IsLeaseLost(const absl::Status& status) {
  return absl::IsFailedPrecondition(status) || absl::IsNotFound(status);
}

// Nack's `error` is a proto3 string: it must be valid UTF-8 (an exception's
// what() need not be) and at most kMaxErrorBytes long. Invalid bytes become
// '?'; a long text is cut at a character boundary.
std::string NackErrorText(absl::string_view text) {
  std::string out;
  out.reserve(std::min(text.size(), kMaxErrorBytes));
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = text[i];
    size_t length = 0;
    uint32_t min_code = 0;
    if (c < 0x80) {
      length = 1;
    } else if ((c & 0xE0) == 0xC0) {
      length = 2;
      min_code = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3;
      min_code = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4;
      min_code = 0x10000;
    }
    bool valid = length > 0 && i + length <= text.size();
    if (valid && length > 1) {
      uint32_t code = c & (0x7F >> length);
      for (size_t k = 1; k < length && valid; ++k) {
        const unsigned char cc = text[i + k];
        valid = (cc & 0xC0) == 0x80;
        code = (code << 6) | (cc & 0x3F);
      }
      valid = valid && code >= min_code && code <= 0x10FFFF &&
              !(code >= 0xD800 && code <= 0xDFFF);
    }
    if (!valid) length = 1;
    if (out.size() + length > kMaxErrorBytes) break;
    if (valid) {
      out.append(text.data() + i, length);
    } else {
      out.push_back('?');
    }
    i += length;
  }
  return out;
}

std::string DefaultWorkerId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    return absl::StrCat("worker-", getpid());
  }
  std::string id = absl::StrCat(host, "-", getpid());
  if (id.size() > kMaxNameBytes) id.erase(0, id.size() - kMaxNameBytes);
  return id;
}

bool IsLastAttempt(const v1::Job& job) {
  return job.max_attempts() > 0 && job.attempts() >= job.max_attempts();
}

}  // namespace

// ---- JobContext -----------------------------------------------------------

bool JobContext::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool JobContext::AwaitCancelled(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&cancelled_), timeout);
  return cancelled_;
}

void JobContext::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

// ---- Worker ---------------------------------------------------------------

Worker::Worker(Client* client, WorkerOptions options)
    : client_(client), options_(std::move(options)) {}

Worker::~Worker() { Stop(); }

absl::Status Worker::Register(const std::string& job_type, JobHandler handler) {
  if (job_type.empty()) return absl::InvalidArgumentError("job_type: required");
  if (job_type.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_type: must be at most ", kMaxNameBytes,
                     " bytes (got ", job_type.size(), ")"));
  }
  if (!handler) return absl::InvalidArgumentError("handler: required");
  absl::MutexLock lock(&mu_);
  if (started_) {
    return absl::FailedPreconditionError(
        absl::StrCat("job_type \"", job_type,
                     "\": handlers must be registered before Start()"));
  }
  if (!handlers_.emplace(job_type, std::move(handler)).second) {
    return absl::AlreadyExistsError(absl::StrCat(
        "job_type \"", job_type, "\": a handler is already registered"));
  }
  return absl::OkStatus();
}

absl::Status Worker::Start() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  const WorkerOptions& o = options_;
  if (o.queue.size() > kMaxNameBytes) {
    return InvalidOption(
        "queue", absl::StrCat("must be at most ", kMaxNameBytes, " bytes"));
  }
  if (o.concurrency < 1 || o.concurrency > kMaxConcurrency) {
    return InvalidOption("concurrency",
                         absl::StrCat("must be between 1 and ", kMaxConcurrency,
                                      " (got ", o.concurrency, ")"));
  }
  if (o.lease_duration < kMinLease || o.lease_duration > kMaxLease) {
    return InvalidOption(
        "lease_duration",
        absl::StrCat("must be between 1s and 24h (got ",
                     absl::FormatDuration(o.lease_duration), ")"));
  }
  if (o.poll_wait <= absl::ZeroDuration() || o.poll_wait > kMaxPollWait) {
    return InvalidOption(
        "poll_wait", absl::StrCat("must be more than 0 and at most 5m (got ",
                                  absl::FormatDuration(o.poll_wait), ")"));
  }
  if (!(o.extend_fraction > 0 && o.extend_fraction <= 0.9)) {
    return InvalidOption(
        "extend_fraction",
        absl::StrCat("must be in (0, 0.9] (got ", o.extend_fraction, ")"));
  }
  if (o.worker_id.size() > kMaxNameBytes) {
    return InvalidOption(
        "worker_id", absl::StrCat("must be at most ", kMaxNameBytes, " bytes"));
  }
  if (o.failure_retry_after.has_value() &&
      (*o.failure_retry_after < absl::ZeroDuration() ||
       *o.failure_retry_after > kMaxRetryAfter)) {
    return InvalidOption("failure_retry_after",
                         "must be between 0 and 30 days");
  }
  if (o.retry_initial_backoff <= absl::ZeroDuration()) {
    return InvalidOption("retry_initial_backoff", "must be positive");
  }
  if (o.retry_max_backoff < o.retry_initial_backoff) {
    return InvalidOption("retry_max_backoff",
                         "must be at least retry_initial_backoff");
  }
  {
    absl::MutexLock lock(&mu_);
    if (started_) {
      return absl::FailedPreconditionError("worker: already started");
    }
    if (handlers_.empty()) {
      return absl::FailedPreconditionError(
          "worker: no handler registered (call Register first)");
    }
    started_ = true;
  }
  if (options_.worker_id.empty()) options_.worker_id = DefaultWorkerId();
  lease_keeper_ = std::thread([this] { LeaseKeeperLoop(); });
  pthread_setname_np(lease_keeper_.native_handle(), "lease-keeper");
  for (int i = 0; i < options_.concurrency; ++i) {
    handler_threads_.emplace_back([this] { HandlerLoop(); });
    pthread_setname_np(handler_threads_.back().native_handle(), "job-handler");
  }
  poller_ = std::thread([this] { ReceiveLoop(); });
  pthread_setname_np(poller_.native_handle(), "work-receiver");
  return absl::OkStatus();
}

void Worker::Stop() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
    stats_.stopping = true;
  }
  poll_canceller_.Cancel();
  std::shared_ptr<WorkStream> stream;
  {
    absl::MutexLock lock(&mu_);
    stream = stream_;
  }
  if (stream != nullptr) {
    // The server answers the settlements already sent, sends the jobs it
    // leased meanwhile (handed back below) and ends the stream.
    stream->Close();
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(&receiver_done_),
                              kStopStreamGrace) &&
        stream_ != nullptr) {
      stream_->Cancel();
    }
  }
  poller_.join();

  // Every lease the poller received is in leases_ now. Hand the unstarted
  // ones back, except those on their last attempt: a Nack would make them
  // DEAD, so the handlers run them instead.
  std::vector<std::pair<std::string, std::string>> to_return;  // id, token
  {
    absl::MutexLock lock(&mu_);
    std::deque<std::string> last_attempts;
    for (const std::string& id : unstarted_) {
      const HeldLease& lease = leases_.at(id);
      if (IsLastAttempt(lease.context->job())) {
        last_attempts.push_back(id);
      } else {
        to_return.emplace_back(id, lease.token);
      }
    }
    unstarted_ = std::move(last_attempts);
    handoff_done_ = true;
  }
  for (const auto& [id, token] : to_return) {
    static const std::string kStopping = "worker stopping; not started";
    absl::Status status = Settle(id, token, &kStopping, absl::ZeroDuration());
    if (!status.ok()) ReportError(absl::StrCat("Nack job ", id), status);
    absl::MutexLock lock(&mu_);
    leases_.erase(id);
    --stats_.in_hand;
    ++(status.ok() ? stats_.returned : stats_.lost);
  }
  for (std::thread& t : handler_threads_) t.join();
  handler_threads_.clear();
  {
    absl::MutexLock lock(&mu_);
    keeper_stopping_ = true;
  }
  lease_keeper_.join();
}

WorkerStats Worker::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Worker::PauseHandlersForTest(bool paused) {
  absl::MutexLock lock(&mu_);
  paused_for_test_ = paused;
}

bool Worker::AwaitStatsForTest(
    std::function<bool(const WorkerStats&)> predicate,
    absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto holds = [this, &predicate]()
                   ABSL_NO_THREAD_SAFETY_ANALYSIS { return predicate(stats_); };
  return mu_.AwaitWithTimeout(absl::Condition(&holds), timeout);
}

void Worker::ReceiveLoop() {
  v1::WorkStart start;
  start.set_queue(options_.queue);
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [type, handler] : handlers_) start.add_job_types(type);
  }
  const int64_t lease_ns = absl::ToInt64Nanoseconds(options_.lease_duration);
  start.mutable_lease_duration()->set_seconds(lease_ns / 1000000000);
  start.mutable_lease_duration()->set_nanos(lease_ns % 1000000000);
  start.set_worker_id(options_.worker_id);
  const auto done = [this] {
    absl::MutexLock lock(&mu_);
    receiver_done_ = true;
  };
  absl::Duration backoff = absl::ZeroDuration();
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto can_receive = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return stopping_ || stats_.in_hand < options_.concurrency;
      };
      mu_.Await(absl::Condition(&can_receive));
      if (stopping_) {
        receiver_done_ = true;
        return;
      }
      start.set_capacity(options_.concurrency -
                         static_cast<int>(stats_.in_hand));
    }
    absl::StatusOr<std::unique_ptr<WorkStream>> opened = client_->Work(start);
    absl::Status status;
    bool received = false;
    if (!opened.ok()) {
      status = opened.status();
    } else {
      std::shared_ptr<WorkStream> stream = *std::move(opened);
      uint64_t id = 0;
      bool close = false;
      {
        absl::MutexLock lock(&mu_);
        id = ++stream_id_;
        stream_ = stream;
        stream_capacity_ = start.capacity();
        ++stats_.streams;
        close = stopping_;  // Stop() may have looked before stream_ was set
      }
      if (close) stream->Close();
      v1::WorkResponse message;
      while (stream->Read(&message)) {
        received = true;
        absl::MutexLock lock(&mu_);
        if (message.has_job()) {
          const v1::LeasedJob& leased = message.job();
          // Taken on receipt, so later than the server's lease time by the
          // message's transit: small beside the extension's margin.
          const absl::Time received_at = absl::Now();
          HeldLease lease;
          lease.job_id = leased.job().job_id();
          lease.token = leased.lease_token();
          lease.stream_id = id;
          lease.context =
              std::shared_ptr<JobContext>(new JobContext(leased.job()));
          lease.expires_at = received_at + options_.lease_duration;
          lease.next_extension =
              received_at + options_.lease_duration * options_.extend_fraction;
          const std::string job_id = lease.job_id;
          auto [held, inserted] = leases_.emplace(job_id, lease);
          if (!inserted) {
            // Our earlier lease of this job ran out and the server leased
            // it to us again: its run goes on under the new lease, which
            // is the one it settles (RunJob reads the token when it
            // settles), so the stream's slot is freed.
            held->second.token = lease.token;
            held->second.stream_id = lease.stream_id;
            held->second.expires_at = lease.expires_at;
            held->second.next_extension = lease.next_extension;
            held->second.extend_backoff = absl::ZeroDuration();
            held->second.lost = false;
            ++leases_generation_;
            continue;
          }
          unstarted_.push_back(job_id);
          ++stats_.leased;
          ++stats_.in_hand;
          ++leases_generation_;
        } else if (message.has_settled()) {
          const v1::SettleResult& result = message.settled();
          auto it = stream_settlements_.find(result.job_id());
          if (it != stream_settlements_.end() && it->second.stream_id == id &&
              !it->second.answered) {
            it->second.answered = true;
            it->second.status = absl::Status(
                static_cast<absl::StatusCode>(result.code()), result.message());
          }
        }
      }
      status = stream->Finish();
      absl::MutexLock lock(&mu_);
      if (stream_ == stream) stream_ = nullptr;
      for (auto& [job_id, settlement] : stream_settlements_) {
        if (settlement.stream_id == id) settlement.answered = true;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        receiver_done_ = true;
        return;
      }
    }
    if (absl::IsUnimplemented(status)) {
      ReportError("Work (not served here; long-polling Dequeue instead)",
                  status);
      {
        absl::MutexLock lock(&mu_);
        stats_.polling = true;
      }
      PollLoop();
      done();
      return;
    }
    if (status.ok()) {
      // Closed by us to reopen with the whole concurrency.
      backoff = absl::ZeroDuration();
      continue;
    }
    ReportError("Work", status);
    if (received) backoff = absl::ZeroDuration();
    backoff = NextBackoff(backoff);
    absl::MutexLock lock(&mu_);
    if (SleepUntil(absl::Now() + backoff)) {
      receiver_done_ = true;
      return;
    }
  }
}

void Worker::PollLoop() {
  std::vector<std::string> job_types;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [type, handler] : handlers_) job_types.push_back(type);
  }
  absl::Duration backoff = absl::ZeroDuration();
  for (;;) {
    int free_slots = 0;
    {
      absl::MutexLock lock(&mu_);
      auto can_poll = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return stopping_ || stats_.in_hand < options_.concurrency;
      };
      mu_.Await(absl::Condition(&can_poll));
      if (stopping_) return;
      free_slots = options_.concurrency - static_cast<int>(stats_.in_hand);
    }

    v1::DequeueRequest request;
    request.set_queue(options_.queue);
    for (const std::string& type : job_types) request.add_job_types(type);
    request.set_max_jobs(free_slots);
    const int64_t lease_ns = absl::ToInt64Nanoseconds(options_.lease_duration);
    request.mutable_lease_duration()->set_seconds(lease_ns / 1000000000);
    request.mutable_lease_duration()->set_nanos(lease_ns % 1000000000);
    const int64_t wait_ns = absl::ToInt64Nanoseconds(options_.poll_wait);
    request.mutable_wait()->set_seconds(wait_ns / 1000000000);
    request.mutable_wait()->set_nanos(wait_ns % 1000000000);
    request.set_worker_id(options_.worker_id);

    CallOptions call;
    call.canceller = &poll_canceller_;
    // Taken before the call: the server's expiry is no earlier than this
    // plus lease_duration.
    const absl::Time sent = absl::Now();
    absl::StatusOr<v1::DequeueResponse> response =
        client_->Dequeue(request, call);

    if (!response.ok()) {
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
      }
      ReportError("Dequeue", response.status());
      // Any error is retried: a bad option was caught by Start(), so this is
      // the server or the network, which may recover.
      backoff = NextBackoff(backoff);
      absl::MutexLock lock(&mu_);
      if (SleepUntil(absl::Now() + backoff)) return;
      continue;
    }
    backoff = absl::ZeroDuration();
    absl::MutexLock lock(&mu_);
    for (const v1::LeasedJob& leased : response->jobs()) {
      HeldLease lease;
      lease.job_id = leased.job().job_id();
      lease.token = leased.lease_token();
      lease.context = std::shared_ptr<JobContext>(new JobContext(leased.job()));
      lease.expires_at = sent + options_.lease_duration;
      lease.next_extension =
          sent + options_.lease_duration * options_.extend_fraction;
      const std::string id = lease.job_id;
      if (!leases_.emplace(id, std::move(lease)).second) continue;
      unstarted_.push_back(id);
      ++stats_.leased;
      ++stats_.in_hand;
    }
    ++leases_generation_;
  }
}

void Worker::HandlerLoop() {
  for (;;) {
    std::string job_id;
    {
      absl::MutexLock lock(&mu_);
      // Once stopping, only the jobs Stop() left for the handlers are run.
      auto has_work = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        if (stopping_) return handoff_done_;
        return !paused_for_test_ && !unstarted_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (unstarted_.empty()) return;  // stopping, nothing left
      job_id = std::move(unstarted_.front());
      unstarted_.pop_front();
      ++stats_.running;
    }
    RunJob(job_id);
  }
}

void Worker::RunJob(const std::string& job_id) {
  std::shared_ptr<JobContext> context;
  std::string token;
  const JobHandler* handler = nullptr;
  {
    absl::MutexLock lock(&mu_);
    const HeldLease& lease = leases_.at(job_id);
    context = lease.context;
    token = lease.token;
    auto it = handlers_.find(context->job().job_type());
    // handlers_ never changes after Start(), so the pointer stays valid.
    if (it != handlers_.end()) handler = &it->second;
  }

  // Set when the job failed: the Nack's error text.
  std::optional<std::string> failure;
  if (handler == nullptr) {
    // The Dequeue filter asks only for registered types.
    failure = absl::StrCat("no handler for job_type \"",
                           context->job().job_type(), "\"");
  } else {
    try {
      absl::Status result = (*handler)(*context);
      if (!result.ok()) failure = result.ToString();
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (...) {
      failure = "unknown exception (not a std::exception)";
    }
  }

  {
    // The lease to settle is the latest one held for the job (it may have
    // been pushed again on the stream while the handler ran).
    absl::MutexLock lock(&mu_);
    token = leases_.at(job_id).token;
  }
  absl::Status settled;
  if (context->cancelled()) {
    settled = absl::FailedPreconditionError(
        "lease lost while the handler ran; result not reported");
    // The server holds the job's slot on the stream until it is settled:
    // a Nack frees it (the lost lease makes the store refuse it).
    static const std::string kLost = "lease lost; result not reported";
    SettleOnStream(job_id, token, &kLost, std::nullopt);
  } else {
    settled = Settle(job_id, token, failure ? &*failure : nullptr,
                     options_.failure_retry_after);
    if (!settled.ok()) {
      ReportError(absl::StrCat(failure ? "Nack" : "Ack", " job ", job_id),
                  settled);
    }
  }

  std::shared_ptr<WorkStream> to_resize;
  {
    absl::MutexLock lock(&mu_);
    leases_.erase(job_id);
    --stats_.running;
    --stats_.in_hand;
    if (!settled.ok()) {
      ++stats_.lost;
    } else if (!failure) {
      ++stats_.acked;
    } else {
      ++stats_.nacked;
    }
    to_resize = StreamToResizeLocked();
  }
  if (to_resize != nullptr) to_resize->Close();
}

std::shared_ptr<WorkStream> Worker::StreamToResizeLocked() {
  if (stopping_ || stream_ == nullptr || stats_.in_hand != 0 ||
      stream_capacity_ >= options_.concurrency) {
    return nullptr;
  }
  stream_capacity_ = options_.concurrency;  // close it once
  return stream_;
}

v1::NackRequest Worker::MakeNack(const std::string& job_id,
                                 const std::string& token,
                                 const std::string& error,
                                 std::optional<absl::Duration> retry_after) {
  v1::NackRequest request;
  request.set_job_id(job_id);
  request.set_lease_token(token);
  request.set_error(NackErrorText(error));
  if (retry_after.has_value()) {
    const int64_t ns = absl::ToInt64Nanoseconds(*retry_after);
    request.mutable_retry_after()->set_seconds(ns / 1000000000);
    request.mutable_retry_after()->set_nanos(ns % 1000000000);
  }
  return request;
}

std::optional<absl::Status> Worker::SettleOnStream(
    const std::string& job_id, const std::string& token,
    const std::string* error, std::optional<absl::Duration> retry_after) {
  std::shared_ptr<WorkStream> stream;
  {
    absl::MutexLock lock(&mu_);
    auto it = leases_.find(job_id);
    if (it == leases_.end() || it->second.stream_id == 0 ||
        it->second.stream_id != stream_id_ || stream_ == nullptr) {
      return std::nullopt;
    }
    stream = stream_;
    // Registered before the write: the answer may come at once.
    stream_settlements_[job_id] = StreamSettlement{stream_id_, false, {}};
  }
  absl::Status sent;
  if (error == nullptr) {
    v1::AckRequest ack;
    ack.set_job_id(job_id);
    ack.set_lease_token(token);
    sent = stream->Ack(ack);
  } else {
    sent = stream->Nack(MakeNack(job_id, token, *error, retry_after));
  }
  absl::MutexLock lock(&mu_);
  auto it = stream_settlements_.find(job_id);
  if (!sent.ok()) {
    stream_settlements_.erase(it);
    return std::nullopt;
  }
  // The receiver answers it, or marks it answered (without a status) when
  // the stream ends.
  auto answered = [&it]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return it->second.answered;
  };
  mu_.Await(absl::Condition(&answered));
  std::optional<absl::Status> status = it->second.status;
  stream_settlements_.erase(it);
  return status;
}

absl::Status Worker::Settle(const std::string& job_id, const std::string& token,
                            const std::string* error,
                            std::optional<absl::Duration> retry_after) {
  // On the stream that pushed the job while it is open; otherwise (or
  // after a transient store error) with the RPCs, which retry.
  std::optional<absl::Status> on_stream =
      SettleOnStream(job_id, token, error, retry_after);
  if (on_stream.has_value() && (on_stream->ok() || !IsTransient(*on_stream))) {
    return *on_stream;
  }
  absl::Duration backoff = absl::ZeroDuration();
  for (;;) {
    absl::Status status;
    if (error == nullptr) {
      v1::AckRequest request;
      request.set_job_id(job_id);
      request.set_lease_token(token);
      status = client_->Ack(request).status();
    } else {
      status =
          client_->Nack(MakeNack(job_id, token, *error, retry_after)).status();
    }
    if (status.ok() || !IsTransient(status)) return status;
    ReportError(absl::StrCat(error == nullptr ? "Ack" : "Nack", " job ", job_id,
                             " (will retry)"),
                status);
    backoff = NextBackoff(backoff);
    // Past the lease's expiry the server refuses the token anyway.
    if (absl::Now() + backoff >= LeaseExpiry(job_id)) return status;
    absl::SleepFor(backoff);
  }
}

void Worker::LeaseKeeperLoop() {
  uint64_t seen_generation = 0;
  for (;;) {
    std::string due;
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        if (keeper_stopping_) return;
        absl::Time earliest = absl::InfiniteFuture();
        for (const auto& [id, lease] : leases_) {
          if (!lease.lost && lease.next_extension < earliest) {
            earliest = lease.next_extension;
            due = id;
          }
        }
        if (earliest <= absl::Now()) break;
        seen_generation = leases_generation_;
        // New leases are due no earlier than the ones held, but the first
        // after an empty spell must be noticed.
        auto woken = [this, seen_generation]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return keeper_stopping_ || leases_generation_ != seen_generation;
        };
        mu_.AwaitWithDeadline(absl::Condition(&woken), earliest);
      }
    }
    ExtendOnce(due);
  }
}

void Worker::ExtendOnce(const std::string& job_id) {
  std::string token;
  {
    absl::MutexLock lock(&mu_);
    auto it = leases_.find(job_id);
    if (it == leases_.end() || it->second.lost) return;
    token = it->second.token;
  }
  v1::ExtendLeaseRequest request;
  request.set_job_id(job_id);
  request.set_lease_token(token);
  const int64_t lease_ns = absl::ToInt64Nanoseconds(options_.lease_duration);
  request.mutable_lease_duration()->set_seconds(lease_ns / 1000000000);
  request.mutable_lease_duration()->set_nanos(lease_ns % 1000000000);
  // Leave time for a retry before the lease runs out.
  CallOptions call;
  call.deadline =
      std::max(kMinExtendDeadline,
               options_.lease_duration * (1 - options_.extend_fraction) / 2);
  const absl::Time sent = absl::Now();
  absl::StatusOr<v1::ExtendLeaseResponse> response =
      client_->ExtendLease(request, call);

  std::shared_ptr<JobContext> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    auto it = leases_.find(job_id);
    if (it == leases_.end()) return;  // settled meanwhile
    HeldLease& lease = it->second;
    if (response.ok()) {
      lease.expires_at = sent + options_.lease_duration;
      lease.next_extension =
          sent + options_.lease_duration * options_.extend_fraction;
      lease.extend_backoff = absl::ZeroDuration();
      ++stats_.extended;
      return;
    }
    if (IsLeaseLost(response.status())) {
      lease.lost = true;
      to_cancel = lease.context;
    } else {
      // Transient (or unexpected): retry soon, well before the expiry.
      lease.extend_backoff = NextBackoff(lease.extend_backoff);
      const absl::Time now = absl::Now();
      const absl::Duration half_left =
          std::max((lease.expires_at - now) / 2, absl::Milliseconds(10));
      lease.next_extension = now + std::min(lease.extend_backoff, half_left);
    }
  }
  ReportError(absl::StrCat("ExtendLease job ", job_id), response.status());
  if (to_cancel != nullptr) to_cancel->Cancel();
}

bool Worker::SleepUntil(absl::Time deadline) {
  mu_.AwaitWithDeadline(absl::Condition(&stopping_), deadline);
  return stopping_;
}

absl::Time Worker::LeaseExpiry(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(job_id);
  return it == leases_.end() ? absl::InfinitePast() : it->second.expires_at;
}

void Worker::ReportError(absl::string_view what, const absl::Status& status) {
  if (options_.on_error) {
    options_.on_error(what, status);
  } else {
    spdlog::warn("adjutant worker {}: {}: {}", options_.worker_id,
                 std::string(what), status.ToString());
  }
}

absl::Duration Worker::NextBackoff(absl::Duration previous) const {
  if (previous <= absl::ZeroDuration()) return options_.retry_initial_backoff;
  return std::min(previous * 2, options_.retry_max_backoff);
}

}  // namespace adjutant
