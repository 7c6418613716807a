// The C++ interop client of cps.v1: one session through the stubs generated
// from protos/ alone (protoc + grpc_cpp_plugin), every result checked.
//
//   cps-cpp-client HOST:PORT
//
// Plaintext by default. TLS is set by environment variables, the same in the
// Go and Node clients: CPS_CA_CERT (PEM CA that signed the server's
// certificate: TLS on, the server is verified), CPS_CLIENT_CERT and
// CPS_CLIENT_KEY (a client certificate to present, for a server started with
// --client-ca), CPS_SERVER_NAME (the name to verify instead of HOST).
//
// Prints one "OK" line and exits 0, or prints what did not match and exits 1
// (a refused connection included); exits 2 on bad usage or TLS settings.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cps/v1/checkpoint_service.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace {

namespace v1 = cps::v1;
using Stub = v1::CheckpointService::Stub;

constexpr auto kDeadline = std::chrono::seconds(10);

struct Mismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Settings the client cannot use (exit 2, nothing is sent).
struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void Expect(bool ok, const std::string& what) {
  if (!ok) throw Mismatch(what);
}

std::string CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",                 "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED",  "NOT_FOUND",         "ALREADY_EXISTS",   "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",        "OUT_OF_RANGE",
      "UNIMPLEMENTED",      "INTERNAL",          "UNAVAILABLE",      "DATA_LOSS",
      "UNAUTHENTICATED"};
  const auto index = static_cast<size_t>(code);
  return index < std::size(kNames) ? kNames[index] : "code " + std::to_string(index);
}

std::string Describe(const grpc::Status& status) {
  return CodeName(status.error_code()) + " (" + status.error_message() + ")";
}

// A context with a deadline: a call never blocks the client for long.
std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kDeadline);
  return context;
}

// One unary call that must succeed.
template <typename Request, typename Response>
Response Call(Stub& stub,
              grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
              const char* name, const Request& request) {
  Response response;
  grpc::Status status = (stub.*method)(Context().get(), request, &response);
  if (!status.ok()) throw Mismatch(std::string(name) + " failed: " + Describe(status));
  return response;
}

std::string Join(const std::vector<std::string>& ids) {
  std::string joined;
  for (const std::string& id : ids) joined += (joined.empty() ? "" : ", ") + id;
  return joined;
}

v1::SectionId Id(const std::string& id) {
  v1::SectionId section;
  section.set_id(id);
  return section;
}

// The ErrorInfo and IOVectorError of a failed call, from the
// grpc-status-details-bin trailer (a serialized google.rpc.Status).
void ExpectSeedError(const grpc::Status& status, grpc::StatusCode code,
                     const std::string& reason, uint32_t vector_index) {
  Expect(status.error_code() == code, "expected " + CodeName(code) + ", got " + Describe(status));
  google::rpc::Status details;
  Expect(details.ParseFromString(status.error_details()), "no google.rpc.Status in the trailer");
  Expect(details.code() == code, "google.rpc.Status code differs from the call's");
  bool found_info = false, found_index = false;
  for (const google::protobuf::Any& detail : details.details()) {
    google::rpc::ErrorInfo info;
    v1::IOVectorError index;
    if (detail.UnpackTo(&info)) {
      Expect(info.domain() == "cps.v1", "ErrorInfo domain " + info.domain());
      Expect(info.reason() == reason, "ErrorInfo reason " + info.reason() + ", wanted " + reason);
      found_info = true;
    } else if (detail.UnpackTo(&index)) {
      Expect(index.erroneous_vector_index() == vector_index,
             "erroneous_vector_index " + std::to_string(index.erroneous_vector_index()));
      found_index = true;
    }
  }
  Expect(found_info, "no google.rpc.ErrorInfo in the status details");
  Expect(found_index, "no cps.v1.IOVectorError in the status details");
}

// An environment variable, "" when unset.
std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

std::string ReadPem(const char* variable, const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream text;
  text << file.rdbuf();
  if (!file || text.str().find("-----BEGIN ") == std::string::npos) {
    throw Usage(std::string(variable) + "=" + path + ": not a readable PEM file");
  }
  return text.str();
}

// Plaintext, or TLS when CPS_CA_CERT is set (see the top of the file).
std::shared_ptr<grpc::Channel> Connect(const std::string& target) {
  const std::string ca = Env("CPS_CA_CERT"), cert = Env("CPS_CLIENT_CERT"),
                    key = Env("CPS_CLIENT_KEY"), server_name = Env("CPS_SERVER_NAME");
  if (ca.empty()) {
    if (!cert.empty() || !key.empty() || !server_name.empty()) {
      throw Usage("CPS_CLIENT_CERT, CPS_CLIENT_KEY and CPS_SERVER_NAME need CPS_CA_CERT (TLS)");
    }
    return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  }
  if (cert.empty() != key.empty()) throw Usage("CPS_CLIENT_CERT and CPS_CLIENT_KEY go together");
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = ReadPem("CPS_CA_CERT", ca);
  if (!cert.empty()) {
    tls.pem_cert_chain = ReadPem("CPS_CLIENT_CERT", cert);
    tls.pem_private_key = ReadPem("CPS_CLIENT_KEY", key);
  }
  grpc::ChannelArguments arguments;
  if (!server_name.empty()) arguments.SetSslTargetNameOverride(server_name);
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(tls), arguments);
}

void Run(const std::string& target) {
  auto channel = Connect(target);
  auto stub = v1::CheckpointService::NewStub(channel);

  // Initialize: release code B, major version 1.
  v1::InitializeRequest init;
  init.mutable_version()->set_release_code("B");
  init.mutable_version()->set_major_version(1);
  auto session = Call(*stub, &Stub::Initialize, "Initialize", init);
  Expect(session.version().release_code() == "B" && session.version().major_version() == 1,
         "Initialize answered version " + session.version().ShortDebugString());
  const uint64_t service = session.service_handle();

  // The session's callback stream, open for the whole session: Finalize ends it.
  grpc::ClientContext stream_context;
  stream_context.set_deadline(std::chrono::system_clock::now() + 3 * kDeadline);
  v1::CallbacksRequest callbacks_request;
  callbacks_request.set_service_handle(service);
  auto callbacks = stub->Callbacks(&stream_context, callbacks_request);

  // Open with CREATE|READ|WRITE.
  const std::string name = "cpp-interop";
  v1::CheckpointOpenRequest open;
  open.set_service_handle(service);
  open.set_checkpoint_name(name);
  open.add_checkpoint_open_flags(v1::OPEN_FLAG_CREATE);
  open.add_checkpoint_open_flags(v1::OPEN_FLAG_READ);
  open.add_checkpoint_open_flags(v1::OPEN_FLAG_WRITE);
  auto* attributes = open.mutable_checkpoint_creation_attributes();
  attributes->add_creation_flags(v1::CREATION_FLAG_WR_ACTIVE_REPLICA);
  attributes->set_checkpoint_size(4 * 1024);
  attributes->set_max_sections(4);
  attributes->set_max_section_size(1024);
  attributes->set_max_section_id_size(16);
  attributes->mutable_retention_duration()->set_forever(true);
  const uint64_t handle = Call(*stub, &Stub::CheckpointOpen, "CheckpointOpen", open)
                              .checkpoint_handle();

  // Two sections with ids chosen here.
  const std::vector<std::string> ids = {"alpha", "beta"};
  for (const std::string& id : ids) {
    v1::SectionCreateRequest create;
    create.set_checkpoint_handle(handle);
    *create.mutable_section_creation_attributes()->mutable_section_id() = Id(id);
    auto created = Call(*stub, &Stub::SectionCreate, "SectionCreate", create);
    Expect(created.section_id().id() == id,
           "SectionCreate returned id " + created.section_id().id());
  }

  // One write, an iovector of two elements; then read both back in one call.
  const std::vector<std::string> data = {"hello from C++", std::string("\0binary\xff", 8)};
  v1::CheckpointWriteRequest write;
  write.set_checkpoint_handle(handle);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto* element = write.add_io_vector();
    *element->mutable_section_id() = Id(ids[i]);
    element->set_data_buffer(data[i]);
  }
  Call(*stub, &Stub::CheckpointWrite, "CheckpointWrite", write);

  v1::CheckpointReadRequest read;
  read.set_checkpoint_handle(handle);
  for (const std::string& id : ids) *read.add_io_vector()->mutable_section_id() = Id(id);
  auto got = Call(*stub, &Stub::CheckpointRead, "CheckpointRead", read);
  Expect(got.io_vector_size() == 2, "CheckpointRead returned " +
                                        std::to_string(got.io_vector_size()) + " elements");
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& element = got.io_vector(static_cast<int>(i));
    Expect(element.data_buffer() == data[i], "section " + ids[i] + " reads back differently");
    Expect(element.read_size() == data[i].size(), "read_size of section " + ids[i]);
  }

  // The error case: reading a missing section (second element) is NOT_FOUND
  // with the seed's reason and the index of the element.
  v1::CheckpointReadRequest bad_read;
  bad_read.set_checkpoint_handle(handle);
  *bad_read.add_io_vector()->mutable_section_id() = Id("alpha");
  *bad_read.add_io_vector()->mutable_section_id() = Id("missing");
  v1::CheckpointReadResponse unused;
  ExpectSeedError(stub->CheckpointRead(Context().get(), bad_read, &unused),
                  grpc::StatusCode::NOT_FOUND, "CL_CKPT_ERR_NOT_EXIST", 1);

  // Immediate consumption: an overwrite of "beta" arrives on the stream.
  v1::ImmediateConsumptionRegisterRequest reg;
  reg.set_checkpoint_handle(handle);
  Call(*stub, &Stub::ImmediateConsumptionRegister, "ImmediateConsumptionRegister", reg);
  v1::SectionOverwriteRequest overwrite;
  overwrite.set_checkpoint_handle(handle);
  *overwrite.mutable_section_id() = Id("beta");
  overwrite.set_data_buffer("overwritten");
  Call(*stub, &Stub::SectionOverwrite, "SectionOverwrite", overwrite);

  bool notified = false;
  v1::CallbacksResponse batch;
  while (!notified && callbacks->Read(&batch)) {
    for (const v1::Callback& callback : batch.callbacks()) {
      Expect(callback.has_notification(), "unexpected callback " + callback.ShortDebugString());
      const auto& notification = callback.notification();
      Expect(notification.checkpoint_name() == name && notification.checkpoint_handle() == handle,
             "notification for another checkpoint: " + notification.ShortDebugString());
      Expect(notification.changed_sections_size() == 1 &&
                 notification.changed_sections(0).section_id().id() == "beta" &&
                 notification.changed_sections(0).change() == v1::SECTION_CHANGE_OVERWRITTEN,
             "notification " + notification.ShortDebugString());
      notified = true;
    }
  }
  if (!notified) {
    throw Mismatch("the Callbacks stream ended without the notification: " +
                   Describe(callbacks->Finish()));
  }

  // Iterate every section: the ids come back in creation order.
  v1::SectionIterationInitializeRequest iterate;
  iterate.set_checkpoint_handle(handle);
  iterate.set_sections_chosen(v1::SECTIONS_CHOSEN_ANY);
  const uint64_t iteration =
      Call(*stub, &Stub::SectionIterationInitialize, "SectionIterationInitialize", iterate)
          .section_iteration_handle();
  std::vector<std::string> seen;
  v1::SectionIterationNextRequest next;
  next.set_section_iteration_handle(iteration);
  for (;;) {
    auto step = Call(*stub, &Stub::SectionIterationNext, "SectionIterationNext", next);
    if (step.no_more_sections()) break;
    Expect(seen.size() < 16, "SectionIterationNext never says no_more_sections");
    seen.push_back(step.section_descriptor().section_id().id());
  }
  Expect(seen == ids, "iteration returned [" + Join(seen) + "], wanted [" + Join(ids) + "]");
  v1::SectionIterationFinalizeRequest finish;
  finish.set_section_iteration_handle(iteration);
  Call(*stub, &Stub::SectionIterationFinalize, "SectionIterationFinalize", finish);

  // Close, delete, finalize; Finalize ends the callback stream cleanly.
  v1::CheckpointCloseRequest close;
  close.set_checkpoint_handle(handle);
  Call(*stub, &Stub::CheckpointClose, "CheckpointClose", close);
  v1::CheckpointDeleteRequest remove;
  remove.set_service_handle(service);
  remove.set_checkpoint_name(name);
  Call(*stub, &Stub::CheckpointDelete, "CheckpointDelete", remove);
  v1::FinalizeRequest finalize;
  finalize.set_service_handle(service);
  Call(*stub, &Stub::Finalize, "Finalize", finalize);

  while (callbacks->Read(&batch)) {
  }
  grpc::Status ended = callbacks->Finish();
  Expect(ended.ok(), "the Callbacks stream did not end cleanly after Finalize: " + Describe(ended));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " HOST:PORT\n";
    return 2;
  }
  try {
    Run(argv[1]);
  } catch (const Mismatch& mismatch) {
    std::cerr << "cps-cpp-client: FAILED: " << mismatch.what() << "\n";
    return 1;
  } catch (const Usage& usage) {
    std::cerr << "cps-cpp-client: " << usage.what() << "\n";
    return 2;
  }
  std::cout << "cps-cpp-client: OK (session, open, sections, iovector write/read, "
               "NOT_FOUND details, notification, iteration, close, delete, finalize)\n";
  return 0;
}
