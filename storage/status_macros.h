// Early returns on error, in the spirit of abseil's internal status macros.
// For .cc files only: include this header last, after every other header.
#ifndef ADJUTANT_STORAGE_STATUS_MACROS_H_
#define ADJUTANT_STORAGE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns `expr` (an absl::Status) from the enclosing function unless OK.
#define RETURN_IF_ERROR(expr)               \
  do {                                      \
    absl::Status status_or_error_ = (expr); \
    if (!status_or_error_.ok()) {           \
      return status_or_error_;              \
    }                                       \
  } while (false)

// Evaluates `expr` (an absl::StatusOr<T>); returns its status unless OK,
// else moves its value into `lhs` (a declaration or an lvalue).
#define ASSIGN_OR_RETURN(lhs, expr)                                           \
  ADJUTANT_ASSIGN_OR_RETURN_IMPL(ADJUTANT_STATUS_CONCAT(statusor_, __LINE__), \
                                 lhs, expr)
#define ADJUTANT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(*tmp)
#define ADJUTANT_STATUS_CONCAT_INNER(a, b) a##b
#define ADJUTANT_STATUS_CONCAT(a, b) ADJUTANT_STATUS_CONCAT_INNER(a, b)

#endif  // ADJUTANT_STORAGE_STATUS_MACROS_H_
