#include "server/store_notifier.h"

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

// What Session::Serve ended with.
enum class SessionEnd { kStopping, kBroken };

std::string ConnectionError(PGconn* conn) {
  std::string message =
      conn == nullptr ? "out of memory" : PQerrorMessage(conn);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
    message.pop_back();
  return message;
}

// Runs `sql` with text parameters; true if it succeeded.
bool Exec(PGconn* conn, const char* sql, const std::vector<std::string>& args) {
  std::vector<const char*> values;
  for (const std::string& arg : args) values.push_back(arg.c_str());
  PGresult* result = PQexecParams(conn, sql, static_cast<int>(values.size()),
                                  nullptr, values.data(), nullptr, nullptr, 0);
  const ExecStatusType status = PQresultStatus(result);
  PQclear(result);
  return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}

}  // namespace

// One connected, listening libpq session; lives inside Run().
class PgNotifier::Session {
 public:
  Session(PgNotifier* notifier, PGconn* conn)
      : notifier_(notifier), conn_(conn), own_pid_(PQbackendPID(conn)) {}
  ~Session() { PQfinish(conn_); }

  bool Listen() {
    return Exec(conn_, absl::StrCat("LISTEN ", kAvailableChannel).c_str(),
                {}) &&
           Exec(conn_, absl::StrCat("LISTEN ", kLaterChannel).c_str(), {});
  }

  // Sends pending publications and dispatches notifications until the
  // connection breaks or the notifier stops.
  SessionEnd Serve() {
    const int socket = PQsocket(conn_);
    while (true) {
      std::set<std::string> available;
      absl::Time later;
      {
        absl::MutexLock l(&notifier_->mu_);
        if (notifier_->stopping_) return SessionEnd::kStopping;
        available.swap(notifier_->pending_available_);
        later =
            std::exchange(notifier_->pending_later_, absl::InfiniteFuture());
      }
      if (!Send(available, later)) {
        // Keep them for the next session.
        absl::MutexLock l(&notifier_->mu_);
        notifier_->pending_available_.merge(available);
        notifier_->pending_later_ = std::min(notifier_->pending_later_, later);
        return SessionEnd::kBroken;
      }
      Dispatch();

      pollfd fds[2] = {{socket, POLLIN, 0}, {notifier_->event_fd_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        spdlog::warn("notifier: poll failed: {}", std::strerror(errno));
        return SessionEnd::kBroken;
      }
      if (fds[1].revents & POLLIN) {
        uint64_t count;
        (void)!read(notifier_->event_fd_, &count, sizeof(count));
      }
      if (fds[0].revents != 0) {
        if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) != CONNECTION_OK) {
          spdlog::warn("notifier: connection to PostgreSQL lost: {}",
                       ConnectionError(conn_));
          return SessionEnd::kBroken;
        }
        Dispatch();
      }
    }
  }

 private:
  bool Send(const std::set<std::string>& available, absl::Time later) {
    for (const std::string& queue : available) {
      if (!Exec(conn_, "SELECT pg_notify($1, $2)", {kAvailableChannel, queue}))
        return false;
    }
    if (later != absl::InfiniteFuture() &&
        !Exec(conn_, "SELECT pg_notify($1, $2)",
              {kLaterChannel, absl::StrCat(absl::ToUnixNanos(later))})) {
      return false;
    }
    return true;
  }

  void Dispatch() {
    while (PGnotify* notify = PQnotifies(conn_)) {
      // Our own: the local registry heard of the write directly.
      if (notify->be_pid != own_pid_) {
        const std::string channel = notify->relname;
        const std::string payload = notify->extra;
        if (channel == kAvailableChannel) {
          notifier_->targets_.on_available(payload);
        } else if (channel == kLaterChannel) {
          int64_t nanos;
          if (absl::SimpleAtoi(payload, &nanos)) {
            notifier_->targets_.on_later(absl::FromUnixNanos(nanos));
          }
        }
      }
      PQfreemem(notify);
    }
  }

  PgNotifier* const notifier_;
  PGconn* const conn_;
  const int own_pid_;
};

PgNotifier::PgNotifier(PgNotifierConfig config) : config_(std::move(config)) {}

PgNotifier::~PgNotifier() {
  Stop();
  if (event_fd_ >= 0) close(event_fd_);
}

absl::Status PgNotifier::Start(PgNotifierTargets targets) {
  if (config_.conninfo.empty()) {
    return absl::InvalidArgumentError("notifier: conninfo must not be empty");
  }
  if (!targets.on_available || !targets.on_later || !targets.on_resync) {
    return absl::InvalidArgumentError(
        "notifier: targets.on_available, on_later and on_resync are required");
  }
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) {
    return absl::InternalError(
        absl::StrCat("notifier: eventfd failed: ", std::strerror(errno)));
  }
  targets_ = std::move(targets);
  thread_ = std::thread([this] { Run(); });
  pthread_setname_np(thread_.native_handle(), "store-notifier");
  return absl::OkStatus();
}

void PgNotifier::Stop() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    pending_available_.clear();
  }
  Signal();
  if (thread_.joinable()) thread_.join();
}

void PgNotifier::Signal() {
  if (event_fd_ < 0) return;
  const uint64_t one = 1;
  (void)!write(event_fd_, &one, sizeof(one));
}

void PgNotifier::PublishAvailable(const std::string& queue) {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    pending_available_.insert(queue);
  }
  Signal();
}

void PgNotifier::PublishLater(absl::Time at) {
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    pending_later_ = std::min(pending_later_, at);
  }
  Signal();
}

bool PgNotifier::ListeningForTest() {
  absl::MutexLock l(&mu_);
  return listening_;
}

int PgNotifier::ConnectionsForTest() {
  absl::MutexLock l(&mu_);
  return connections_;
}

bool PgNotifier::Backoff(absl::Duration delay) {
  absl::MutexLock l(&mu_);
  // Real time on purpose: this paces reconnection to a real server.
  mu_.AwaitWithTimeout(absl::Condition(&stopping_), delay);
  return !stopping_;
}

void PgNotifier::Run() {
  const std::string timeout_seconds = absl::StrCat(
      std::max<int64_t>(2, absl::ToInt64Seconds(config_.connect_timeout)));
  const char* keys[] = {"dbname",     "connect_timeout", "application_name",
                        "keepalives", "keepalives_idle", nullptr};
  const char* values[] = {config_.conninfo.c_str(),
                          timeout_seconds.c_str(),
                          "adjutantd-notifier",
                          "1",
                          "10",
                          nullptr};
  absl::Duration delay = config_.reconnect_initial;
  bool logged_failure = false;
  while (true) {
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
    }
    // expand_dbname = 1: `dbname` holds the whole conninfo or URI; the keys
    // after it add to it.
    PGconn* conn = PQconnectdbParams(keys, values, 1);
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
      if (!logged_failure) {
        spdlog::warn("notifier: cannot connect to PostgreSQL (retrying): {}",
                     ConnectionError(conn));
        logged_failure = true;
      }
      PQfinish(conn);
      if (!Backoff(delay)) return;
      delay = std::min(delay * 2, config_.reconnect_max);
      continue;
    }
    Session session(this, conn);
    if (!session.Listen()) {
      spdlog::warn("notifier: LISTEN failed: {}", ConnectionError(conn));
      if (!Backoff(delay)) return;
      delay = std::min(delay * 2, config_.reconnect_max);
      continue;
    }
    if (logged_failure) spdlog::info("notifier: listening again");
    logged_failure = false;
    delay = config_.reconnect_initial;
    {
      absl::MutexLock l(&mu_);
      listening_ = true;
      ++connections_;
    }
    targets_.on_resync();
    const SessionEnd end = session.Serve();
    {
      absl::MutexLock l(&mu_);
      listening_ = false;
    }
    if (end == SessionEnd::kStopping) return;
  }
}

// ---- NotifyingJobStore ------------------------------------------------------

NotifyingJobStore::NotifyingJobStore(std::unique_ptr<JobStore> inner,
                                     PgNotifier* notifier)
    : inner_(std::move(inner)), notifier_(notifier) {}

void NotifyingJobStore::PublishAt(const std::string& queue, absl::Time at,
                                  absl::Time now) {
  if (at <= now) {
    notifier_->PublishAvailable(queue);
  } else {
    notifier_->PublishLater(at);
  }
}

absl::Status NotifyingJobStore::Ping() { return inner_->Ping(); }

absl::StatusOr<std::vector<EnqueueResult>> NotifyingJobStore::Enqueue(
    const std::vector<NewJob>& jobs, absl::Time now) {
  absl::StatusOr<std::vector<EnqueueResult>> results =
      inner_->Enqueue(jobs, now);
  if (results.ok()) {
    for (size_t i = 0; i < jobs.size() && i < results->size(); ++i) {
      if (!(*results)[i].duplicate)
        PublishAt(jobs[i].queue, jobs[i].run_at, now);
    }
  }
  return results;
}

absl::StatusOr<std::vector<Lease>> NotifyingJobStore::Dequeue(
    const DequeueOptions& options, absl::Time now) {
  absl::StatusOr<std::vector<Lease>> leases = inner_->Dequeue(options, now);
  if (leases.ok() && !leases->empty()) {
    // If this daemon dies, the others must take these back at expiry.
    absl::Time earliest = absl::InfiniteFuture();
    for (const Lease& lease : *leases) {
      earliest = std::min(earliest, lease.expires_at);
    }
    notifier_->PublishLater(earliest);
  }
  return leases;
}

absl::Status NotifyingJobStore::Ack(const std::string& job_id,
                                    const std::string& token, absl::Time now) {
  return inner_->Ack(job_id, token, now);
}

absl::StatusOr<std::vector<AckResult>> NotifyingJobStore::AckBatch(
    const std::vector<AckItem>& items, absl::Time now) {
  return inner_->AckBatch(items, now);
}

absl::StatusOr<Job> NotifyingJobStore::Nack(const std::string& job_id,
                                            const std::string& token,
                                            const NackOptions& options,
                                            absl::Time now) {
  absl::StatusOr<Job> job = inner_->Nack(job_id, token, options, now);
  if (job.ok() && job->state == JobState::kPending) {
    PublishAt(job->queue, job->run_at, now);
  }
  return job;
}

absl::StatusOr<absl::Time> NotifyingJobStore::ExtendLease(
    const std::string& job_id, const std::string& token,
    absl::Duration lease_duration, absl::Time now) {
  return inner_->ExtendLease(job_id, token, lease_duration, now);
}

absl::StatusOr<Job> NotifyingJobStore::GetJob(const std::string& job_id) {
  return inner_->GetJob(job_id);
}

absl::StatusOr<Job> NotifyingJobStore::CancelJob(const std::string& job_id,
                                                 absl::Time now) {
  return inner_->CancelJob(job_id, now);
}

absl::StatusOr<Job> NotifyingJobStore::RequeueJob(const std::string& job_id,
                                                  absl::Time now) {
  absl::StatusOr<Job> job = inner_->RequeueJob(job_id, now);
  if (job.ok()) PublishAt(job->queue, job->run_at, now);
  return job;
}

absl::StatusOr<JobPage> NotifyingJobStore::ListJobs(
    const std::string& queue, JobState state, int page_size,
    const std::string& page_token) {
  return inner_->ListJobs(queue, state, page_size, page_token);
}

absl::StatusOr<std::vector<Job>> NotifyingJobStore::ExpireLeases(
    absl::Time now) {
  absl::StatusOr<std::vector<Job>> jobs = inner_->ExpireLeases(now);
  if (jobs.ok()) {
    for (const Job& job : *jobs) {
      // Back in line with its old run_at: available now.
      if (job.state == JobState::kPending)
        notifier_->PublishAvailable(job.queue);
    }
  }
  return jobs;
}

absl::StatusOr<std::vector<Job>> NotifyingJobStore::ReleaseLeases(
    const std::vector<AckItem>& items, absl::Time now) {
  absl::StatusOr<std::vector<Job>> jobs = inner_->ReleaseLeases(items, now);
  if (jobs.ok()) {
    for (const Job& job : *jobs) PublishAt(job.queue, job.run_at, now);
  }
  return jobs;
}

absl::StatusOr<absl::Time> NotifyingJobStore::NextAvailableTime(
    const std::string& queue, absl::Time now) {
  return inner_->NextAvailableTime(queue, now);
}

absl::StatusOr<uint64_t> NotifyingJobStore::ObserveTerm(uint64_t term) {
  return inner_->ObserveTerm(term);
}

absl::StatusOr<std::vector<QueueStats>> NotifyingJobStore::QueueStatistics(
    absl::Time now) {
  return inner_->QueueStatistics(now);
}

absl::StatusOr<int64_t> NotifyingJobStore::PruneFinishedJobs(
    absl::Time finished_before, absl::Time dead_before, int limit) {
  return inner_->PruneFinishedJobs(finished_before, dead_before, limit);
}

absl::StatusOr<uint64_t> NotifyingJobStore::HighestTerm() {
  return inner_->HighestTerm();
}

absl::StatusOr<CronRecord> NotifyingJobStore::GetCron(const std::string& name) {
  return inner_->GetCron(name);
}

absl::StatusOr<CronRecord> NotifyingJobStore::PutCron(
    const CronDefinition& definition, const CronState& state,
    int64_t expected_version, absl::Time now) {
  return inner_->PutCron(definition, state, expected_version, now);
}

absl::Status NotifyingJobStore::DeleteCron(const std::string& name,
                                           absl::Time now) {
  return inner_->DeleteCron(name, now);
}

absl::StatusOr<CronPage> NotifyingJobStore::ListCrons(
    int page_size, const std::string& page_token) {
  return inner_->ListCrons(page_size, page_token);
}

absl::StatusOr<std::vector<CronRecord>> NotifyingJobStore::DueCrons(
    absl::Time now, int limit) {
  return inner_->DueCrons(now, limit);
}

absl::StatusOr<absl::Time> NotifyingJobStore::NextCronFireTime(
    absl::Time after) {
  return inner_->NextCronFireTime(after);
}

absl::StatusOr<CronRecord> NotifyingJobStore::ApplyCronTransition(
    const CronTransition& transition, absl::Time now) {
  absl::StatusOr<CronRecord> record =
      inner_->ApplyCronTransition(transition, now);
  if (record.ok() && transition.job.has_value()) {
    PublishAt(transition.job->queue, transition.job->run_at, now);
  }
  return record;
}

}  // namespace adjutant
