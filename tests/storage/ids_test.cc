// Job ids and lease tokens: their form, their uniqueness across threads, and
// that a child of fork() does not repeat its parent's random bytes.
#include "storage/ids.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace adjutant {
namespace {

bool IsLowerHex(const std::string& s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(c) || absl::ascii_isupper(c)) return false;
  }
  return true;
}

TEST(IdsTest, IdsAndTokensAreHexOfTheirSizeAndNeverRepeat) {
  constexpr int kThreads = 4;
  constexpr int kEach = 20000;  // many refills of each thread's pool
  std::vector<std::vector<std::string>> drawn(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&drawn, t] {
      for (int i = 0; i < kEach; ++i) {
        drawn[t].push_back(i % 2 == 0 ? NewJobId() : NewLeaseToken());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::set<std::string> seen;
  for (const std::vector<std::string>& some : drawn) {
    for (size_t i = 0; i < some.size(); ++i) {
      const std::string& s = some[i];
      ASSERT_EQ(s.size(), i % 2 == 0 ? 32u : 64u) << s;
      ASSERT_TRUE(IsLowerHex(s)) << s;
      ASSERT_TRUE(seen.insert(s).second) << "drawn twice: " << s;
    }
  }
}

// The first 12 hex digits are the millisecond the id was made, so that ids
// of later milliseconds sort after those of earlier ones.
TEST(IdsTest, AJobIdStartsWithTheMillisecondItWasMadeAt) {
  for (int i = 0; i < 1000; ++i) {
    const int64_t before = absl::ToUnixMillis(absl::Now());
    const std::string id = NewJobId();
    const int64_t after = absl::ToUnixMillis(absl::Now());
    uint64_t made = 0;
    ASSERT_TRUE(absl::SimpleHexAtoi(id.substr(0, 12), &made)) << id;
    ASSERT_GE(static_cast<int64_t>(made), before) << id;
    ASSERT_LE(static_cast<int64_t>(made), after) << id;
  }
}

TEST(IdsTest, RandomUnitIsInTheUnitInterval) {
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const double u = RandomUnit();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.05);
}

// The pool of the forking thread is copied into the child; the child must
// draw fresh bytes, not the ones its parent draws next.
TEST(IdsTest, AForkedChildDoesNotRepeatItsParentsBytes) {
  (void)RandomUnit();  // this thread's pool is now filled
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const double u = RandomUnit();  // no allocation: safe after fork()
    const bool written = write(fds[1], &u, sizeof(u)) == sizeof(u);
    _exit(written ? 0 : 1);
  }
  close(fds[1]);
  const double parent = RandomUnit();
  double in_child = -1;
  ASSERT_EQ(read(fds[0], &in_child, sizeof(in_child)),
            static_cast<ssize_t>(sizeof(in_child)));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(in_child, parent);
}

}  // namespace
}  // namespace adjutant
