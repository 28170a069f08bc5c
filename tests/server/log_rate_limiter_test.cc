#include "server/log_rate_limiter.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace adjutant {
namespace {

TEST(LogRateLimiterTest, AllowsABurstPerWindowThenCountsWhatItRefused) {
  LogRateLimiter limiter(3, absl::Seconds(10));
  const absl::Duration t0 = absl::Seconds(100);
  int64_t suppressed = -1;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(limiter.Allow(t0 + absl::Seconds(i), &suppressed)) << i;
    EXPECT_EQ(suppressed, 0);
  }
  suppressed = -1;
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(limiter.Allow(t0 + absl::Seconds(9), &suppressed));
  }
  EXPECT_EQ(suppressed, -1) << "left alone when refused";

  // The window ends 10 s after its first event: the next one is logged and
  // carries the count of the 5 refused.
  EXPECT_TRUE(limiter.Allow(t0 + absl::Seconds(10), &suppressed));
  EXPECT_EQ(suppressed, 5);
  EXPECT_TRUE(limiter.Allow(t0 + absl::Seconds(11), &suppressed));
  EXPECT_EQ(suppressed, 0);
}

TEST(LogRateLimiterTest, AQuietSpellStartsAFreshWindow) {
  LogRateLimiter limiter(1, absl::Seconds(1));
  int64_t suppressed = 0;
  EXPECT_TRUE(limiter.Allow(absl::Seconds(5), &suppressed));
  EXPECT_FALSE(limiter.Allow(absl::Seconds(5.5), &suppressed));
  EXPECT_TRUE(limiter.Allow(absl::Seconds(60), &suppressed));
  EXPECT_EQ(suppressed, 1);
  EXPECT_FALSE(limiter.Allow(absl::Seconds(60.9), &suppressed));
}

}  // namespace
}  // namespace adjutant
