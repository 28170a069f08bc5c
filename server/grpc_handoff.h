// ThreadSanitizer and gRPC's hand-offs of a call between threads.
//
// A callback-API call moves between our threads and gRPC's through
// synchronization inside libgrpc (completion queues, closures, atomics),
// which Debian does not build with ThreadSanitizer; the TSan build also
// leaves gRPC's header code uninstrumented (tests/sanitizers/
// tsan_ignorelist.txt). So TSan cannot see that a reactor we handed to gRPC
// (Finish) is handed back to us in a later callback (OnDone) on another
// thread, and would report our reactor's fields as raced across that
// hand-off. These two calls state the edge gRPC provides, at our side of
// it, for one call object:
//
//   HandCallToGrpc(call)    just before giving the call to gRPC: returning
//                           a new reactor from a handler, Finish(),
//                           StartWrite(), StartRead();
//   TakeCallFromGrpc(call)  first thing in a callback gRPC runs for it:
//                           OnDone(), OnCancel(), OnWriteDone(), OnReadDone().
//
// Each pairs only with the others on the same `call`, so they order the
// accesses to one call across its hand-offs and nothing else: a race between
// two calls, between a handler and an executor task, or on any other state is
// still reported (tests/sanitizers/tsan_grpc_handoff_check.cc). No-ops
// outside TSan builds. Thread-safe.
#ifndef ADJUTANT_SERVER_GRPC_HANDOFF_H_
#define ADJUTANT_SERVER_GRPC_HANDOFF_H_

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ADJUTANT_GRPC_HANDOFF_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define ADJUTANT_GRPC_HANDOFF_TSAN 1
#endif

#ifdef ADJUTANT_GRPC_HANDOFF_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace adjutant {

// Everything this thread did to `call` so far happens before what the
// thread that next calls TakeCallFromGrpc(call) does after it.
inline void HandCallToGrpc(const void* call) {
#ifdef ADJUTANT_GRPC_HANDOFF_TSAN
  __tsan_release(const_cast<void*>(call));
#else
  (void)call;
#endif
}

// See HandCallToGrpc.
inline void TakeCallFromGrpc(const void* call) {
#ifdef ADJUTANT_GRPC_HANDOFF_TSAN
  __tsan_acquire(const_cast<void*>(call));
#else
  (void)call;
#endif
}

}  // namespace adjutant

#endif  // ADJUTANT_SERVER_GRPC_HANDOFF_H_
