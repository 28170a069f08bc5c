// ThreadSanitizer builds only: checks that the TSan settings for gRPC (the
// uninstrumented gRPC and protobuf code of tests/sanitizers/
// tsan_ignorelist.txt, the called_from_lib suppressions of tsan.supp, and
// the hand-off annotations of server/grpc_handoff.h) hide no race in our
// own server code.
//
// A real gRPC server on 127.0.0.1:0 serves JobQueue.GetStats with a handler
// built like the server's Dequeue: a reactor of ours, created on a gRPC
// thread, handed to an Executor task that fills the response and finishes
// it, and deleted in OnDone on a gRPC thread. A client makes a few calls.
//
//   (no argument)  every access to the reactor is ordered: by the executor's
//                  queue (handler -> task) and by the hand-off annotations
//                  (task -> OnDone). TSan must stay silent: the ctest entry
//                  tsan_grpc_handoff.ordered.
//   "racy"         the handler also writes a field of the reactor after
//                  handing it to the executor, whose task writes the same
//                  field: a real race in our code across a gRPC thread and
//                  an executor thread, whatever order they run in. TSan must
//                  report it: tsan_grpc_handoff.racy.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "adjutant/v1/job_queue.grpc.pb.h"
#include "server/executor.h"
#include "server/grpc_handoff.h"

namespace adjutant {
namespace {

bool racy = false;

class StatsCall final : public grpc::ServerUnaryReactor {
 public:
  StatsCall(Executor* executor, v1::GetStatsResponse* response)
      : executor_(executor), response_(response) {}

  // On the gRPC thread that ran the handler.
  void Start() {
    handler_step_ = 1;
    HandCallToGrpc(this);
    executor_->Schedule([this] { Run(); });
    if (racy) touched_by_ = 1;  // the call belongs to the executor now
  }

  void OnDone() override {
    TakeCallFromGrpc(this);
    // Ordered: the task's writes happen before this. (Racy: either order.)
    if (!racy && (touched_by_ != 2 || handler_step_ != 1)) std::abort();
    delete this;
  }

 private:
  // On an executor thread.
  void Run() {
    touched_by_ = 2;
    response_->set_schedules(handler_step_);
    HandCallToGrpc(this);
    Finish(grpc::Status::OK);
  }

  Executor* const executor_;
  v1::GetStatsResponse* const response_;
  int handler_step_ = 0;
  int touched_by_ = 0;
};

class StatsService final : public v1::JobQueue::CallbackService {
 public:
  explicit StatsService(Executor* executor) : executor_(executor) {}

  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext*,
                                     const v1::GetStatsRequest*,
                                     v1::GetStatsResponse* response) override {
    auto* call = new StatsCall(executor_, response);
    call->Start();
    return call;
  }

 private:
  Executor* const executor_;
};

int Main() {
  Executor executor(2);
  StatsService service(&executor);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "cannot start a gRPC server on 127.0.0.1:0\n");
    return 2;
  }
  auto stub = v1::JobQueue::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext context;
    v1::GetStatsRequest request;
    v1::GetStatsResponse response;
    grpc::Status status = stub->GetStats(&context, request, &response);
    if (!status.ok() || response.schedules() != 1) {
      std::fprintf(stderr, "GetStats: %s\n", status.error_message().c_str());
      return 1;
    }
  }
  server->Shutdown();
  server->Wait();
  std::printf("4 calls served\n");
  return 0;
}

}  // namespace
}  // namespace adjutant

int main(int argc, char** argv) {
  adjutant::racy = argc > 1 && std::strcmp(argv[1], "racy") == 0;
  return adjutant::Main();
}
