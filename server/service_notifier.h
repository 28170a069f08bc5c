// ServiceNotifier: what adjutantd tells the service manager that started it
// (systemd's Type=notify protocol): ready, stopping, a status line, and the
// watchdog's "still alive". StoreWatchdog turns the server's store health
// checks into those watchdog pings.
//
// Only adjutantd's main() creates a notifier; no library depends on systemd:
// libsystemd stays inside service_notifier.cc (NewSystemdNotifier).
#ifndef ADJUTANT_SERVER_SERVICE_NOTIFIER_H_
#define ADJUTANT_SERVER_SERVICE_NOTIFIER_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace adjutant {

// Messages to the service manager. Each call is one message; a failure to
// deliver one is not the caller's problem (the implementation logs it), so
// nothing returns a status. Implementations are thread-safe.
class ServiceNotifier {
 public:
  virtual ~ServiceNotifier() = default;

  // The daemon is serving: the store is open and the port bound (READY=1),
  // with a status line such as "serving on 127.0.0.1:50051".
  virtual void Ready(const std::string& status) = 0;
  // A free-form status line (STATUS=...), shown by `systemctl status`.
  virtual void Status(const std::string& status) = 0;
  // Shutdown has begun (STOPPING=1), with a status line.
  virtual void Stopping(const std::string& status) = 0;
  // The daemon is alive and its store answers (WATCHDOG=1). The manager
  // kills and restarts a daemon that does not ping within its watchdog
  // interval.
  virtual void WatchdogPing() = 0;
};

// The libsystemd notifier: sd_notify() to $NOTIFY_SOCKET. Without
// NOTIFY_SOCKET (not started by systemd, or not Type=notify) every message
// is silently dropped, so the daemon runs the same anywhere.
std::unique_ptr<ServiceNotifier> NewSystemdNotifier();

// The watchdog interval the service manager asked for ($WATCHDOG_USEC, for
// this process when $WATCHDOG_PID is set), through sd_watchdog_enabled():
// nullopt when no watchdog is wanted; INVALID_ARGUMENT naming the variable
// when WATCHDOG_USEC or WATCHDOG_PID is not a valid number.
absl::StatusOr<std::optional<absl::Duration>> SystemdWatchdogInterval();

// How often the store must be checked so that a healthy daemon pings a
// watchdog of `watchdog` in time: half of it (as sd_watchdog_enabled(3)
// advises), and never less often than `health_check_interval`. Without a
// watchdog, `health_check_interval` unchanged.
absl::Duration HealthCheckIntervalFor(absl::Duration health_check_interval,
                                      std::optional<absl::Duration> watchdog);

// Feeds the watchdog from the server's store health checks
// (AdjutantServerConfig::on_health_check): when `ping_watchdog`, a
// WatchdogPing() after every check the store passed and none after one it
// failed, so that the service manager restarts a daemon whose store is
// wedged; in any case a Status() line when the store stops or starts
// answering again.
//
// Thread-safe. `notifier` must outlive it.
class StoreWatchdog {
 public:
  StoreWatchdog(ServiceNotifier* notifier, bool ping_watchdog)
      : notifier_(notifier), ping_watchdog_(ping_watchdog) {}

  StoreWatchdog(const StoreWatchdog&) = delete;
  StoreWatchdog& operator=(const StoreWatchdog&) = delete;

  // The status line shown once the store answers again after a failure
  // (e.g. "serving on 127.0.0.1:50051"). Default "serving".
  void SetServingStatus(std::string status);

  // The answer of one store check (JobStore::Ping()).
  void OnHealthCheck(const absl::Status& store_status);

 private:
  ServiceNotifier* const notifier_;
  const bool ping_watchdog_;

  absl::Mutex mu_;
  // State below is protected by mu_.
  std::string serving_status_ ABSL_GUARDED_BY(mu_) = "serving";
  // Whether the last check failed.
  bool store_failing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_SERVICE_NOTIFIER_H_
