#include "server/service_notifier.h"

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace adjutant {
namespace {

class SystemdNotifier final : public ServiceNotifier {
 public:
  void Ready(const std::string& status) override {
    Send(absl::StrCat("READY=1\nSTATUS=", status));
  }
  void Status(const std::string& status) override {
    Send(absl::StrCat("STATUS=", status));
  }
  void Stopping(const std::string& status) override {
    Send(absl::StrCat("STOPPING=1\nSTATUS=", status));
  }
  void WatchdogPing() override { Send("WATCHDOG=1"); }

 private:
  static void Send(const std::string& message) {
    // 0: not sent (no NOTIFY_SOCKET). Keep the environment: the variables
    // are read again by nothing but us, and a restart needs none of them.
    const int sent = sd_notify(/*unset_environment=*/0, message.c_str());
    if (sent < 0) {
      spdlog::warn("cannot notify the service manager ({}): {}", message,
                   std::strerror(-sent));
    }
  }
};

}  // namespace

std::unique_ptr<ServiceNotifier> NewSystemdNotifier() {
  return std::make_unique<SystemdNotifier>();
}

absl::StatusOr<std::optional<absl::Duration>> SystemdWatchdogInterval() {
  uint64_t usec = 0;
  const int enabled = sd_watchdog_enabled(/*unset_environment=*/0, &usec);
  if (enabled < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("WATCHDOG_USEC / WATCHDOG_PID: not a valid watchdog "
                     "setting (",
                     std::strerror(-enabled), ")"));
  }
  if (enabled == 0) return std::nullopt;
  return absl::Microseconds(usec);
}

absl::Duration HealthCheckIntervalFor(absl::Duration health_check_interval,
                                      std::optional<absl::Duration> watchdog) {
  if (!watchdog.has_value()) return health_check_interval;
  return std::min(health_check_interval, *watchdog / 2);
}

void StoreWatchdog::SetServingStatus(std::string status) {
  absl::MutexLock lock(&mu_);
  serving_status_ = std::move(status);
}

void StoreWatchdog::OnHealthCheck(const absl::Status& store_status) {
  absl::MutexLock lock(&mu_);
  if (!store_status.ok()) {
    // No ping: if the store stays silent, the manager restarts us.
    if (!store_failing_) {
      notifier_->Status(
          absl::StrCat("the store does not answer: ", store_status.message()));
    }
    store_failing_ = true;
    return;
  }
  if (store_failing_) notifier_->Status(serving_status_);
  store_failing_ = false;
  if (ping_watchdog_) notifier_->WatchdogPing();
}

}  // namespace adjutant
