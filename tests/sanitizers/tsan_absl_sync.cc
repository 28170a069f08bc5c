// ThreadSanitizer builds only (ADJUTANT_SANITIZE=thread): tells TSan about
// absl::Mutex and absl::Notification.
//
// Debian's abseil is not built with TSan, so TSan cannot see the
// synchronization inside absl::Mutex (atomics and futexes in an
// uninstrumented library), and would report every ABSL_GUARDED_BY field as
// racy. The linker routes our calls to these functions here
// (-Wl,--wrap=<symbol>, see the top-level CMakeLists.txt), and each wrapper
// states the happens-before edge the real function provides: unlocking
// releases, locking acquires; Await* release before waiting and acquire
// after; Notify releases, a wait that saw the notification acquires.
//
// absl evaluates an Await condition inside Await (waiting thread) or inside
// Unlock (unlocking thread), with the real mutex held but, as far as TSan
// knows, released; accesses inside those calls are ignored, so a condition's
// reads are never reported (the fields they read are still checked
// everywhere else).
#include <sanitizer/tsan_interface.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" {

// Declared by the TSan runtime.
void __tsan_ignore_thread_begin();
void __tsan_ignore_thread_end();

// absl::Mutex::Lock()
void __real__ZN4absl7debian35Mutex4LockEv(absl::Mutex* mu);
void __wrap__ZN4absl7debian35Mutex4LockEv(absl::Mutex* mu) {
  __real__ZN4absl7debian35Mutex4LockEv(mu);
  __tsan_acquire(mu);
}

// absl::Mutex::Unlock()
void __real__ZN4absl7debian35Mutex6UnlockEv(absl::Mutex* mu);
void __wrap__ZN4absl7debian35Mutex6UnlockEv(absl::Mutex* mu) {
  __tsan_release(mu);
  __tsan_ignore_thread_begin();
  __real__ZN4absl7debian35Mutex6UnlockEv(mu);
  __tsan_ignore_thread_end();
}

// absl::Mutex::Await(const Condition&)
void __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(
    absl::Mutex* mu, const absl::Condition& cond);
void __wrap__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(
    absl::Mutex* mu, const absl::Condition& cond) {
  __tsan_release(mu);
  __tsan_ignore_thread_begin();
  __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(mu, cond);
  __tsan_ignore_thread_end();
  __tsan_acquire(mu);
}

// absl::Mutex::AwaitWithTimeout(const Condition&, Duration)
bool __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    absl::Mutex* mu, const absl::Condition& cond, absl::Duration timeout);
bool __wrap__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    absl::Mutex* mu, const absl::Condition& cond, absl::Duration timeout) {
  __tsan_release(mu);
  __tsan_ignore_thread_begin();
  const bool result =
      __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
          mu, cond, timeout);
  __tsan_ignore_thread_end();
  __tsan_acquire(mu);
  return result;
}

// absl::Mutex::AwaitWithDeadline(const Condition&, Time)
bool __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
    absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline);
bool __wrap__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
    absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline) {
  __tsan_release(mu);
  __tsan_ignore_thread_begin();
  const bool result =
      __real__ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(
          mu, cond, deadline);
  __tsan_ignore_thread_end();
  __tsan_acquire(mu);
  return result;
}

// absl::Notification::Notify()
void __real__ZN4absl7debian312Notification6NotifyEv(absl::Notification* n);
void __wrap__ZN4absl7debian312Notification6NotifyEv(absl::Notification* n) {
  __tsan_release(n);
  __real__ZN4absl7debian312Notification6NotifyEv(n);
}

// absl::Notification::WaitForNotification() const
void __real__ZNK4absl7debian312Notification19WaitForNotificationEv(
    const absl::Notification* n);
void __wrap__ZNK4absl7debian312Notification19WaitForNotificationEv(
    const absl::Notification* n) {
  __real__ZNK4absl7debian312Notification19WaitForNotificationEv(n);
  __tsan_acquire(const_cast<absl::Notification*>(n));
}

// absl::Notification::WaitForNotificationWithTimeout(Duration) const
bool __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
    const absl::Notification* n, absl::Duration timeout);
bool __wrap__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
    const absl::Notification* n, absl::Duration timeout) {
  const bool notified =
      __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
          n, timeout);
  if (notified) __tsan_acquire(const_cast<absl::Notification*>(n));
  return notified;
}

}  // extern "C"
