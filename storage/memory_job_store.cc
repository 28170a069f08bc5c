#include "storage/memory_job_store.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "storage/ids.h"

namespace adjutant {
namespace {

constexpr int64_t kMaxSeq = std::numeric_limits<int64_t>::max();
constexpr absl::string_view kJobTokenPrefix = "jobs/";
constexpr absl::string_view kCronTokenPrefix = "crons/";
constexpr char kLeaseExpired[] = "lease expired";
constexpr int kStateCount = 6;

// Page tokens are "<prefix><position>" in web-safe base64: opaque to clients,
// and most strings not made here fail to decode.
std::string EncodePageToken(absl::string_view prefix,
                            absl::string_view position) {
  return absl::WebSafeBase64Escape(absl::StrCat(prefix, position));
}

// The position in `token`, or INVALID_ARGUMENT.
absl::StatusOr<std::string> DecodePageToken(absl::string_view prefix,
                                            absl::string_view token) {
  std::string raw;
  if (absl::WebSafeBase64Unescape(token, &raw)) {
    absl::string_view position = raw;
    if (absl::ConsumePrefix(&position, prefix)) return std::string(position);
  }
  return absl::InvalidArgumentError(
      "page_token: not a token returned by an earlier call");
}

// Compares lease tokens in time independent of where they differ.
bool SameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

bool IsActive(JobState state) {
  return state == JobState::kPending || state == JobState::kLeased;
}

}  // namespace

MemoryJobStore::MemoryJobStore(BackoffPolicy backoff) : backoff_(backoff) {}

MemoryJobStore::MemoryJobStore(BackoffPolicy backoff,
                               int64_t max_pending_per_queue)
    : backoff_(backoff), max_pending_per_queue_(max_pending_per_queue) {}

MemoryJobStore::~MemoryJobStore() = default;

// ---- Indexes ----------------------------------------------------------------

void MemoryJobStore::Index(const Job& job) {
  QueueIndex& q = queues_[job.queue];
  q.seqs_by_state[static_cast<int>(job.state)].insert(job.seq);
  switch (job.state) {
    case JobState::kPending:
      q.pending_by_run_at.insert({job.run_at, job.seq});
      if (job.run_at <= q.horizon) {
        q.ready_by_type[job.type].insert({job.priority, job.run_at, job.seq});
      }
      break;
    case JobState::kLeased:
      q.leased_by_expiry.insert({job.lease_expires_at, job.seq});
      break;
    default:
      finished_by_time_[static_cast<int>(job.state)].insert(
          {job.updated_at, job.seq});
      break;
  }
}

void MemoryJobStore::Unindex(const Job& job) {
  QueueIndex& q = queues_[job.queue];
  q.seqs_by_state[static_cast<int>(job.state)].erase(job.seq);
  switch (job.state) {
    case JobState::kPending:
      q.pending_by_run_at.erase({job.run_at, job.seq});
      if (job.run_at <= q.horizon) {
        auto it = q.ready_by_type.find(job.type);
        if (it != q.ready_by_type.end()) {
          it->second.erase({job.priority, job.run_at, job.seq});
          if (it->second.empty()) q.ready_by_type.erase(it);
        }
      }
      break;
    case JobState::kLeased:
      q.leased_by_expiry.erase({job.lease_expires_at, job.seq});
      break;
    default:
      finished_by_time_[static_cast<int>(job.state)].erase(
          {job.updated_at, job.seq});
      break;
  }
}

void MemoryJobStore::MoveHorizon(QueueIndex& q, absl::Time now) {
  if (now > q.horizon) {
    for (auto it = q.pending_by_run_at.upper_bound({q.horizon, kMaxSeq});
         it != q.pending_by_run_at.end() && it->first <= now; ++it) {
      const Job& job = jobs_.at(it->second);
      q.ready_by_type[job.type].insert({job.priority, job.run_at, job.seq});
    }
  } else if (now < q.horizon) {
    // The wall clock stepped back: jobs due only after `now` leave the line.
    for (auto it = q.pending_by_run_at.upper_bound({now, kMaxSeq});
         it != q.pending_by_run_at.end() && it->first <= q.horizon; ++it) {
      const Job& job = jobs_.at(it->second);
      auto ready = q.ready_by_type.find(job.type);
      ready->second.erase({job.priority, job.run_at, job.seq});
      if (ready->second.empty()) q.ready_by_type.erase(ready);
    }
  }
  q.horizon = now;
}

// ---- Job helpers ------------------------------------------------------------

absl::StatusOr<Job*> MemoryJobStore::FindJob(const std::string& job_id) {
  auto it = seq_by_id_.find(job_id);
  if (it == seq_by_id_.end()) {
    return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  }
  return &jobs_.at(it->second);
}

absl::StatusOr<Job*> MemoryJobStore::FindLiveLease(const std::string& job_id,
                                                   const std::string& token,
                                                   absl::Time now) {
  absl::StatusOr<Job*> job = FindJob(job_id);
  if (!job.ok()) return job.status();
  const Job& j = **job;
  if (j.state != JobState::kLeased) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " is ", JobStateName(j.state), ", not leased"));
  }
  if (!SameToken(j.lease_token, token)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, ": lease_token is not the job's current lease"));
  }
  if (j.lease_expires_at <= now) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, ": the lease expired at ",
        absl::FormatTime(j.lease_expires_at, absl::UTCTimeZone())));
  }
  return job;
}

Job& MemoryJobStore::InsertJob(const NewJob& new_job, absl::Time now) {
  std::string id = NewJobId();
  // 80 random bits within a millisecond do not collide in practice; if they
  // ever do, draw again rather than let two jobs share an id.
  while (seq_by_id_.count(id) > 0) id = NewJobId();

  int64_t seq = ++last_seq_;
  Job& job = jobs_[seq];
  job.id = id;
  job.queue = new_job.queue;
  job.type = new_job.type;
  job.payload = new_job.payload;
  job.priority = new_job.priority;
  job.state = JobState::kPending;
  job.attempts = 0;
  job.max_attempts = new_job.max_attempts;
  job.run_at = new_job.run_at == absl::InfinitePast() ? now : new_job.run_at;
  job.created_at = now;
  job.updated_at = now;
  job.idempotency_key = new_job.idempotency_key;
  job.cron_name = new_job.cron_name;
  job.cron_tick_time = new_job.cron_tick_time;
  job.seq = seq;

  seq_by_id_[id] = seq;
  // Moving the horizon here, not only in Dequeue, spreads the work of
  // filling the ready sets over the Enqueue calls.
  QueueIndex& q = queues_[job.queue];
  if (now > q.horizon) MoveHorizon(q, now);
  if (!job.idempotency_key.empty()) {
    idempotency_[{job.queue, job.idempotency_key}] = id;
  }
  Index(job);
  return job;
}

void MemoryJobStore::Cancel(Job& job, absl::Time now) {
  Unindex(job);
  job.state = JobState::kCancelled;
  job.lease_expires_at = absl::InfinitePast();
  job.lease_token.clear();
  job.updated_at = now;
  Index(job);
}

void MemoryJobStore::EndExpiredLease(Job& job, absl::Time now) {
  Unindex(job);
  job.state =
      job.attempts >= job.max_attempts ? JobState::kDead : JobState::kPending;
  job.last_error = kLeaseExpired;
  job.lease_expires_at = absl::InfinitePast();
  job.lease_token.clear();
  job.updated_at = now;
  Index(job);
}

// ---- Jobs -------------------------------------------------------------------

absl::Status MemoryJobStore::Ping() { return absl::OkStatus(); }

absl::StatusOr<std::vector<EnqueueResult>> MemoryJobStore::Enqueue(
    const std::vector<NewJob>& jobs, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (max_pending_per_queue_ > 0) {
    // The jobs this call would add per queue: not the duplicates, of stored
    // jobs or of an earlier job of the batch.
    std::map<std::string, int64_t> added;
    std::set<std::pair<std::string, std::string>> keys;
    for (const NewJob& job : jobs) {
      if (!job.idempotency_key.empty()) {
        std::pair<std::string, std::string> key{job.queue, job.idempotency_key};
        if (idempotency_.count(key) > 0 || !keys.insert(key).second) continue;
      }
      ++added[job.queue];
    }
    for (const auto& [queue, n] : added) {
      int64_t pending = 0;
      if (auto q = queues_.find(queue); q != queues_.end()) {
        pending = static_cast<int64_t>(
            q->second.seqs_by_state[static_cast<int>(JobState::kPending)]
                .size() +
            q->second.seqs_by_state[static_cast<int>(JobState::kLeased)]
                .size());
      }
      if (pending + n > max_pending_per_queue_) {
        return QueueFullError(queue, pending, n, max_pending_per_queue_);
      }
    }
  }
  // Nothing below can fail, so the batch is stored whole. Duplicates within
  // the batch are found because each new job enters idempotency_ at once.
  std::vector<EnqueueResult> results;
  results.reserve(jobs.size());
  for (const NewJob& new_job : jobs) {
    EnqueueResult result;
    if (!new_job.idempotency_key.empty()) {
      auto it = idempotency_.find({new_job.queue, new_job.idempotency_key});
      if (it != idempotency_.end()) {
        result.job_id = it->second;
        result.duplicate = true;
        results.push_back(std::move(result));
        continue;
      }
    }
    result.job_id = InsertJob(new_job, now).id;
    results.push_back(std::move(result));
  }
  return results;
}

absl::StatusOr<std::vector<Lease>> MemoryJobStore::Dequeue(
    const DequeueOptions& options, absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<Lease> leases;
  auto qit = queues_.find(options.queue);
  if (qit == queues_.end()) return leases;
  QueueIndex& q = qit->second;
  MoveHorizon(q, now);

  std::set<std::string> types(options.job_types.begin(),
                              options.job_types.end());
  auto type_wanted = [&types](const std::string& type) {
    return types.empty() || types.count(type) > 0;
  };

  // The candidates come from two places: one ready set per wanted type, and
  // the expired leases (few, as ExpireLeases ends them regularly). Merge
  // them in dequeue order.
  struct Cursor {
    std::set<ReadyKey>::const_iterator it, end;
  };
  std::vector<Cursor> cursors;
  if (types.empty()) {
    for (const auto& [type, ready] : q.ready_by_type) {
      cursors.push_back({ready.begin(), ready.end()});
    }
  } else {
    for (const std::string& type : types) {
      auto it = q.ready_by_type.find(type);
      if (it != q.ready_by_type.end()) {
        cursors.push_back({it->second.begin(), it->second.end()});
      }
    }
  }
  std::vector<ReadyKey> expired;
  for (auto it = q.leased_by_expiry.begin();
       it != q.leased_by_expiry.end() && it->first <= now; ++it) {
    const Job& job = jobs_.at(it->second);
    if (type_wanted(job.type)) {
      expired.push_back({job.priority, job.run_at, job.seq});
    }
  }
  std::sort(expired.begin(), expired.end());

  // Choose first, change afterwards: the changes move jobs between the sets
  // the cursors walk.
  std::vector<int64_t> to_lease;
  std::vector<int64_t> to_kill;  // expired leases with no attempts left
  size_t next_expired = 0;
  while (to_lease.size() < static_cast<size_t>(options.max_jobs)) {
    const ReadyKey* best = nullptr;
    Cursor* best_cursor = nullptr;
    for (Cursor& c : cursors) {
      if (c.it != c.end && (best == nullptr || *c.it < *best)) {
        best = &*c.it;
        best_cursor = &c;
      }
    }
    if (next_expired < expired.size() &&
        (best == nullptr || expired[next_expired] < *best)) {
      const Job& job = jobs_.at(expired[next_expired].seq);
      ++next_expired;
      // Such a job goes DEAD instead of being leased.
      (job.attempts >= job.max_attempts ? to_kill : to_lease)
          .push_back(job.seq);
      continue;
    }
    if (best == nullptr) break;
    to_lease.push_back(best->seq);
    ++best_cursor->it;
  }

  for (int64_t seq : to_kill) EndExpiredLease(jobs_.at(seq), now);
  leases.reserve(to_lease.size());
  for (int64_t seq : to_lease) {
    Job& job = jobs_.at(seq);
    Unindex(job);
    // An expired lease leased again here ends as ExpireLeases would have
    // ended it (job_store.h), so the stores agree on last_error.
    if (job.state == JobState::kLeased) job.last_error = kLeaseExpired;
    job.state = JobState::kLeased;
    job.attempts += 1;
    job.lease_token = NewLeaseToken();
    job.lease_expires_at = now + options.lease_duration;
    job.worker_id = options.worker_id;
    job.updated_at = now;
    Index(job);
    leases.push_back({job, job.lease_token, job.lease_expires_at});
  }
  return leases;
}

absl::Status MemoryJobStore::Ack(const std::string& job_id,
                                 const std::string& token, absl::Time now) {
  absl::MutexLock lock(&mu_);
  return AckLocked(job_id, token, now);
}

absl::StatusOr<std::vector<AckResult>> MemoryJobStore::AckBatch(
    const std::vector<AckItem>& items, absl::Time now) {
  std::vector<AckResult> results(items.size());
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < items.size(); ++i) {
    results[i].status =
        AckLocked(items[i].job_id, items[i].token, now, &results[i]);
  }
  return results;
}

absl::Status MemoryJobStore::AckLocked(const std::string& job_id,
                                       const std::string& token, absl::Time now,
                                       AckResult* result) {
  absl::StatusOr<Job*> found = FindJob(job_id);
  if (!found.ok()) return found.status();
  if ((*found)->state == JobState::kSucceeded &&
      SameToken((*found)->lease_token, token)) {
    if (result != nullptr) {
      result->queue = (*found)->queue;
      result->cron_name = (*found)->cron_name;
      result->already_acked = true;
    }
    return absl::OkStatus();  // a retried Ack
  }
  absl::StatusOr<Job*> leased = FindLiveLease(job_id, token, now);
  if (!leased.ok()) return leased.status();
  Job& job = **leased;
  if (result != nullptr) {
    result->queue = job.queue;
    result->cron_name = job.cron_name;
  }
  Unindex(job);
  job.state = JobState::kSucceeded;
  job.lease_expires_at = absl::InfinitePast();
  job.updated_at = now;
  // lease_token stays, to recognise a retried Ack.
  Index(job);
  return absl::OkStatus();
}

absl::StatusOr<Job> MemoryJobStore::Nack(const std::string& job_id,
                                         const std::string& token,
                                         const NackOptions& options,
                                         absl::Time now) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> leased = FindLiveLease(job_id, token, now);
  if (!leased.ok()) return leased.status();
  Job& job = **leased;
  Unindex(job);
  job.last_error = options.error;
  job.lease_expires_at = absl::InfinitePast();
  job.lease_token.clear();
  job.updated_at = now;
  if (options.dead || job.attempts >= job.max_attempts) {
    job.state = JobState::kDead;
  } else {
    job.state = JobState::kPending;
    job.run_at = now + (options.retry_after.has_value()
                            ? *options.retry_after
                            : backoff_.Delay(job.attempts, RandomUnit()));
  }
  Index(job);
  return job;
}

absl::StatusOr<absl::Time> MemoryJobStore::ExtendLease(
    const std::string& job_id, const std::string& token,
    absl::Duration lease_duration, absl::Time now) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> leased = FindLiveLease(job_id, token, now);
  if (!leased.ok()) return leased.status();
  Job& job = **leased;
  Unindex(job);
  job.lease_expires_at = now + lease_duration;
  job.updated_at = now;
  Index(job);
  return job.lease_expires_at;
}

absl::StatusOr<Job> MemoryJobStore::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = FindJob(job_id);
  if (!job.ok()) return job.status();
  return **job;
}

absl::StatusOr<Job> MemoryJobStore::CancelJob(const std::string& job_id,
                                              absl::Time now) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = FindJob(job_id);
  if (!job.ok()) return job.status();
  if (!IsActive((*job)->state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is ", JobStateName((*job)->state),
                     "; only a PENDING or LEASED job can be cancelled"));
  }
  Cancel(**job, now);
  return **job;
}

absl::StatusOr<Job> MemoryJobStore::RequeueJob(const std::string& job_id,
                                               absl::Time now) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> found = FindJob(job_id);
  if (!found.ok()) return found.status();
  Job& job = **found;
  if (job.state != JobState::kDead && job.state != JobState::kCancelled) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is ", JobStateName(job.state),
                     "; only a DEAD or CANCELLED job can be requeued"));
  }
  Unindex(job);
  job.state = JobState::kPending;
  job.attempts = 0;
  job.run_at = now;
  job.updated_at = now;
  Index(job);
  return job;
}

absl::StatusOr<JobPage> MemoryJobStore::ListJobs(
    const std::string& queue, JobState state, int page_size,
    const std::string& page_token) {
  int state_index = static_cast<int>(state);
  if (state_index < 0 || state_index >= kStateCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("state: unknown job state ", state_index));
  }
  if (page_size < 1) {
    return absl::InvalidArgumentError("page_size: must be at least 1");
  }
  int64_t after = 0;
  if (!page_token.empty()) {
    absl::StatusOr<std::string> position =
        DecodePageToken(kJobTokenPrefix, page_token);
    if (!position.ok()) return position.status();
    if (!absl::SimpleAtoi(*position, &after) || after < 0) {
      return absl::InvalidArgumentError(
          "page_token: not a token returned by an earlier call");
    }
  }

  absl::MutexLock lock(&mu_);
  // One more than a page, to know whether another page follows.
  const size_t want = static_cast<size_t>(page_size) + 1;
  std::vector<int64_t> seqs;
  if (queue.empty() && state == JobState::kUnspecified) {
    for (auto it = jobs_.upper_bound(after);
         it != jobs_.end() && seqs.size() < want; ++it) {
      seqs.push_back(it->first);
    }
  } else {
    // Merge the first `want` seqs of each matching (queue, state) set.
    std::vector<const std::set<int64_t>*> sets;
    auto add_queue = [&](const QueueIndex& q) {
      if (state == JobState::kUnspecified) {
        for (int s = 1; s < kStateCount; ++s)
          sets.push_back(&q.seqs_by_state[s]);
      } else {
        sets.push_back(&q.seqs_by_state[state_index]);
      }
    };
    if (queue.empty()) {
      for (const auto& [name, q] : queues_) add_queue(q);
    } else if (auto it = queues_.find(queue); it != queues_.end()) {
      add_queue(it->second);
    }
    for (const std::set<int64_t>* set : sets) {
      size_t taken = 0;
      for (auto it = set->upper_bound(after); it != set->end() && taken < want;
           ++it, ++taken) {
        seqs.push_back(*it);
      }
    }
    std::sort(seqs.begin(), seqs.end());
    if (seqs.size() > want) seqs.resize(want);
  }

  JobPage page;
  if (seqs.size() > static_cast<size_t>(page_size)) {
    seqs.resize(page_size);
    page.next_page_token =
        EncodePageToken(kJobTokenPrefix, absl::StrCat(seqs.back()));
  }
  page.jobs.reserve(seqs.size());
  for (int64_t seq : seqs) page.jobs.push_back(jobs_.at(seq));
  return page;
}

absl::StatusOr<std::vector<Job>> MemoryJobStore::ExpireLeases(absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> expired;
  for (const auto& [name, q] : queues_) {
    for (auto it = q.leased_by_expiry.begin();
         it != q.leased_by_expiry.end() && it->first <= now; ++it) {
      expired.push_back(it->second);
    }
  }
  std::vector<Job> changed;
  changed.reserve(expired.size());
  for (int64_t seq : expired) {
    Job& job = jobs_.at(seq);
    EndExpiredLease(job, now);
    changed.push_back(job);
  }
  return changed;
}

absl::StatusOr<std::vector<Job>> MemoryJobStore::ReleaseLeases(
    const std::vector<AckItem>& items, absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<Job> released;
  for (const AckItem& item : items) {
    absl::StatusOr<Job*> found = FindJob(item.job_id);
    if (!found.ok()) continue;
    Job& job = **found;
    if (job.state != JobState::kLeased ||
        !SameToken(job.lease_token, item.token)) {
      continue;
    }
    Unindex(job);
    job.state = JobState::kPending;
    job.attempts = std::max(0, job.attempts - 1);
    job.lease_expires_at = absl::InfinitePast();
    job.lease_token.clear();
    job.updated_at = now;
    Index(job);
    released.push_back(job);
  }
  return released;
}

absl::StatusOr<absl::Time> MemoryJobStore::NextAvailableTime(
    const std::string& queue, absl::Time now) {
  absl::MutexLock lock(&mu_);
  absl::Time next = absl::InfiniteFuture();
  auto consider = [&](const QueueIndex& q) {
    auto pending = q.pending_by_run_at.upper_bound({now, kMaxSeq});
    if (pending != q.pending_by_run_at.end()) {
      next = std::min(next, pending->first);
    }
    auto leased = q.leased_by_expiry.upper_bound({now, kMaxSeq});
    if (leased != q.leased_by_expiry.end()) {
      next = std::min(next, leased->first);
    }
  };
  if (queue.empty()) {
    for (const auto& [name, q] : queues_) consider(q);
  } else if (auto it = queues_.find(queue); it != queues_.end()) {
    consider(it->second);
  }
  return next;
}

absl::StatusOr<std::vector<QueueStats>> MemoryJobStore::QueueStatistics(
    absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::map<std::string, QueueStats> by_queue;
  for (const auto& [seq, job] : jobs_) {
    QueueStats& stats = by_queue[job.queue];
    switch (job.state) {
      case JobState::kPending:
        ++stats.pending;
        if (job.run_at <= now) {
          ++stats.runnable;
          stats.oldest_runnable_run_at =
              std::min(stats.oldest_runnable_run_at, job.run_at);
        }
        break;
      case JobState::kLeased:
        ++stats.leased;
        break;
      case JobState::kSucceeded:
        ++stats.succeeded;
        break;
      case JobState::kDead:
        ++stats.dead;
        break;
      case JobState::kCancelled:
        ++stats.cancelled;
        break;
      case JobState::kUnspecified:
        break;
    }
  }
  std::vector<QueueStats> result;
  result.reserve(by_queue.size());
  for (auto& [queue, stats] : by_queue) {
    stats.queue = queue;
    result.push_back(std::move(stats));
  }
  return result;
}

absl::StatusOr<int64_t> MemoryJobStore::PruneFinishedJobs(
    absl::Time finished_before, absl::Time dead_before, int limit) {
  absl::MutexLock lock(&mu_);
  int64_t deleted = 0;
  const std::pair<JobState, absl::Time> kinds[] = {
      {JobState::kSucceeded, finished_before},
      {JobState::kCancelled, finished_before},
      {JobState::kDead, dead_before},
  };
  for (const auto& [state, before] : kinds) {
    std::set<TimeKey>& finished = finished_by_time_[static_cast<int>(state)];
    while (deleted < limit && !finished.empty() &&
           finished.begin()->first < before) {
      auto it = jobs_.find(finished.begin()->second);
      Job& job = it->second;
      Unindex(job);  // erases finished.begin()
      if (!job.idempotency_key.empty()) {
        auto key = idempotency_.find({job.queue, job.idempotency_key});
        if (key != idempotency_.end() && key->second == job.id) {
          idempotency_.erase(key);
        }
      }
      seq_by_id_.erase(job.id);
      jobs_.erase(it);
      ++deleted;
    }
  }
  return deleted;
}

// ---- Leadership terms -------------------------------------------------------

absl::StatusOr<uint64_t> MemoryJobStore::ObserveTerm(uint64_t term) {
  absl::MutexLock lock(&mu_);
  if (term < highest_term_) {
    return absl::FailedPreconditionError(
        absl::StrCat("term ", term, " is lower than the highest term seen, ",
                     highest_term_));
  }
  highest_term_ = term;
  return highest_term_;
}

absl::StatusOr<uint64_t> MemoryJobStore::HighestTerm() {
  absl::MutexLock lock(&mu_);
  return highest_term_;
}

// ---- Cron schedules ---------------------------------------------------------

void MemoryJobStore::UnindexCron(const CronRecord& record) {
  const std::string& name = record.definition.name;
  cron_fire_index_.erase({record.state.next_fire_time, name});
  cron_waiting_.erase(name);
}

void MemoryJobStore::StoreCron(const CronRecord& record) {
  const std::string& name = record.definition.name;
  auto it = crons_.find(name);
  if (it != crons_.end()) UnindexCron(it->second);
  crons_[name] = record;
  if (!record.definition.paused) {
    cron_fire_index_.insert({record.state.next_fire_time, name});
    if (record.state.waiting_tick_time != absl::InfinitePast()) {
      cron_waiting_.insert(name);
    }
  }
}

absl::StatusOr<CronRecord> MemoryJobStore::GetCron(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = crons_.find(name);
  if (it == crons_.end()) {
    return absl::NotFoundError(absl::StrCat("schedule ", name, " not found"));
  }
  return it->second;
}

absl::StatusOr<CronRecord> MemoryJobStore::PutCron(
    const CronDefinition& definition, const CronState& state,
    int64_t expected_version, absl::Time now) {
  absl::MutexLock lock(&mu_);
  const std::string& name = definition.name;
  auto it = crons_.find(name);
  CronRecord record;
  record.definition = definition;
  record.state = state;
  record.updated_at = now;
  if (expected_version == 0) {
    if (it != crons_.end()) {
      return absl::AlreadyExistsError(
          absl::StrCat("schedule ", name, " already exists"));
    }
    record.created_at = now;
    record.version = 1;
  } else {
    if (it == crons_.end()) {
      return absl::NotFoundError(absl::StrCat("schedule ", name, " not found"));
    }
    if (it->second.version != expected_version) {
      return absl::AbortedError(
          absl::StrCat("schedule ", name, " is at version ", it->second.version,
                       ", not ", expected_version, "; it changed meanwhile"));
    }
    record.created_at = it->second.created_at;
    record.version = it->second.version + 1;
  }
  StoreCron(record);
  return record;
}

absl::Status MemoryJobStore::DeleteCron(const std::string& name,
                                        absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = crons_.find(name);
  if (it == crons_.end()) {
    return absl::NotFoundError(absl::StrCat("schedule ", name, " not found"));
  }
  // The job of a tick fired ahead whose instant has not come (never leased:
  // not a retry waiting for its run_at) goes with the schedule.
  if (!it->second.state.last_job_id.empty()) {
    absl::StatusOr<Job*> last = FindJob(it->second.state.last_job_id);
    if (last.ok() && (*last)->state == JobState::kPending &&
        (*last)->attempts == 0 && (*last)->cron_tick_time > now) {
      Cancel(**last, now);
    }
  }
  UnindexCron(it->second);
  crons_.erase(it);
  cron_claims_.erase(name);
  return absl::OkStatus();
}

absl::StatusOr<CronPage> MemoryJobStore::ListCrons(
    int page_size, const std::string& page_token) {
  if (page_size < 1) {
    return absl::InvalidArgumentError("page_size: must be at least 1");
  }
  std::string after;
  bool from_start = page_token.empty();
  if (!from_start) {
    absl::StatusOr<std::string> position =
        DecodePageToken(kCronTokenPrefix, page_token);
    if (!position.ok()) return position.status();
    after = std::move(*position);
  }

  absl::MutexLock lock(&mu_);
  CronPage page;
  auto it = from_start ? crons_.begin() : crons_.upper_bound(after);
  for (; it != crons_.end(); ++it) {
    if (page.crons.size() == static_cast<size_t>(page_size)) {
      page.next_page_token =
          EncodePageToken(kCronTokenPrefix, page.crons.back().definition.name);
      break;
    }
    page.crons.push_back(it->second);
  }
  return page;
}

absl::StatusOr<std::vector<CronRecord>> MemoryJobStore::DueCrons(absl::Time now,
                                                                 int limit) {
  absl::MutexLock lock(&mu_);
  std::vector<CronRecord> due;
  if (limit < 1) return due;
  // The first `limit` schedules due by time, and every schedule holding a
  // waiting tick (few: one per WAIT schedule whose job is still running).
  std::set<CronKey> chosen;
  for (auto it = cron_fire_index_.begin();
       it != cron_fire_index_.end() && it->first <= now &&
       chosen.size() < static_cast<size_t>(limit);
       ++it) {
    chosen.insert(*it);
  }
  for (const std::string& name : cron_waiting_) {
    chosen.insert({crons_.at(name).state.next_fire_time, name});
  }
  for (const CronKey& key : chosen) {
    if (due.size() == static_cast<size_t>(limit)) break;
    due.push_back(crons_.at(key.second));
  }
  return due;
}

absl::StatusOr<absl::Time> MemoryJobStore::NextCronFireTime(absl::Time after) {
  absl::MutexLock lock(&mu_);
  // Past every key at `after` (schedule names are never empty).
  auto it = cron_fire_index_.lower_bound(CronKey(after, std::string()));
  while (it != cron_fire_index_.end() && it->first <= after) ++it;
  if (it == cron_fire_index_.end()) return absl::InfiniteFuture();
  return it->first;
}

absl::StatusOr<CronRecord> MemoryJobStore::ApplyCronTransition(
    const CronTransition& transition, absl::Time now) {
  absl::MutexLock lock(&mu_);
  const std::string& name = transition.name;

  // Check every precondition before changing anything.
  if (transition.term < highest_term_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "term ", transition.term, " is lower than the highest term seen, ",
        highest_term_, "; this scheduler is no longer leader"));
  }
  auto it = crons_.find(name);
  if (it == crons_.end()) {
    return absl::NotFoundError(absl::StrCat("schedule ", name, " not found"));
  }
  if (it->second.version != transition.expected_version) {
    return absl::AbortedError(absl::StrCat(
        "schedule ", name, " is at version ", it->second.version, ", not ",
        transition.expected_version, "; it changed meanwhile"));
  }
  if (transition.claim_tick.has_value()) {
    auto claims = cron_claims_.find(name);
    if (claims != cron_claims_.end() &&
        claims->second.count(*transition.claim_tick) > 0) {
      return absl::AlreadyExistsError(absl::StrCat(
          "schedule ", name, ": the tick at ",
          absl::FormatTime(*transition.claim_tick, absl::UTCTimeZone()),
          " was already fired"));
    }
  }

  highest_term_ = transition.term;
  std::set<absl::Time>& claims = cron_claims_[name];
  if (transition.claim_tick.has_value()) claims.insert(*transition.claim_tick);
  if (!transition.cancel_job_id.empty()) {
    auto seq = seq_by_id_.find(transition.cancel_job_id);
    if (seq != seq_by_id_.end()) {
      Job& job = jobs_.at(seq->second);
      if (IsActive(job.state)) Cancel(job, now);
    }
  }
  CronRecord record = it->second;
  record.state = transition.new_state;
  if (transition.job.has_value()) {
    NewJob new_job = *transition.job;
    new_job.idempotency_key.clear();
    record.state.last_job_id = InsertJob(new_job, now).id;
  }
  record.version += 1;
  // updated_at tracks definition changes only.

  absl::Time last_fire = record.state.last_fire_time;
  if (last_fire != absl::InfinitePast()) {
    claims.erase(claims.begin(),
                 claims.lower_bound(last_fire - absl::Hours(24)));
  }
  if (claims.empty()) cron_claims_.erase(name);
  StoreCron(record);
  return record;
}

}  // namespace adjutant
