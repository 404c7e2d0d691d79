// The conformance suite's libtorch harness.
//
// One process serves a whole test session: it loads TorchScript modules
// (torch::jit::load) and AOTInductor packages (AOTIModelPackageLoader), runs
// them on inputs read from files, and writes the outputs to files. Tensors
// travel in torch.save's format (torch::pickle_load / torch::pickle_save),
// tuples, lists and dicts included.
//
// Protocol: one request per line on stdin, fields separated by tabs; one reply
// per line, "ok\t<fields>" or "error\t<message>" (newlines in the message are
// written as \n). Requests:
//   info                                        -> ok <torch version> <cuda 0|1>
//   load <kind> <device> <file> <qengine>       -> ok <handle>
//        kind: torchscript | torchscript-optimized | aoti (torchscript-optimized: loaded,
//        then torch::jit::optimize_for_inference, as a deployment tuned for inference does)
//   run <handle> <qengine> <inputs> <outputs>   -> ok <seconds>
//   time <handle> <qengine> <inputs> <warmup> <runs> -> ok <seconds> <seconds> ...
//   loop <handle> <qengine> <inputs> <runs>     -> ok <seconds>   (all runs, one clock pair)
//   profile <handle> <qengine> <inputs> <warmup> <runs> <trace> -> ok <tool> <seconds>
//        runs calls after warmup untimed ones, profiled, each inside a "model call"
//        event, and writes a chrome trace to <trace>. tool "libtorch kineto": libtorch's
//        own profiler (Kineto, CPU activity, CUDA too on a cuda model), whose trace has
//        an event per operator; "harness clock" when Kineto cannot be started: the trace
//        then has only the "model call" events, timed with steady_clock. seconds: the
//        wall time of the profiled calls, profiler included.
//   settings <threads> <flush denormal 0|1>     -> ok <threads now>
//   memory                                      -> ok <peak resident set size in KiB>
//   unload <handle>                             -> ok
// qengine is the quantized engine to set first ("-" leaves it as it is). An inputs
// file holds (positional inputs, {name: keyword input}); a package takes positional ones.
// Stray prints of a model go to stderr: the protocol has its own descriptor.
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/serialize.h>
#include <torch/version.h>

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <set>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Model {
  std::string kind;
  c10::Device device;
  std::optional<torch::jit::Module> module;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;
};

std::map<long, Model> models;
long next_handle = 1;

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> fields;
  std::stringstream stream(line);
  std::string field;
  while (std::getline(stream, field, '\t')) fields.push_back(field);
  return fields;
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  return out;
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

void need(const std::vector<std::string>& fields, size_t count) {
  if (fields.size() != count)
    throw std::runtime_error("request '" + fields[0] + "' takes " + std::to_string(count - 1) +
                             " fields, got " + std::to_string(fields.size() - 1));
}

Model& find(const std::string& handle) {
  auto found = models.find(std::stol(handle));
  if (found == models.end()) throw std::runtime_error("no loaded model with handle " + handle);
  return found->second;
}

void set_quantized_engine(const std::string& name) {
  static const std::map<std::string, at::QEngine> engines = {
      {"none", at::QEngine::NoQEngine}, {"fbgemm", at::QEngine::FBGEMM},
      {"qnnpack", at::QEngine::QNNPACK}, {"onednn", at::QEngine::ONEDNN},
      {"x86", at::QEngine::X86}};
  if (name == "-") return;
  auto found = engines.find(name);
  if (found == engines.end()) throw std::runtime_error("unknown quantized engine " + name);
  at::globalContext().setQEngine(found->second);
}

// A call's inputs: the positional arguments of forward and the ones by keyword.
struct Inputs {
  std::vector<c10::IValue> args;
  torch::jit::Kwargs kwargs;
};

c10::IValue on_device(const c10::IValue& value, const c10::Device& device) {
  return value.isTensor() ? c10::IValue(value.toTensor().to(device)) : value;
}

// The inputs file holds a tuple (positional inputs, {name: keyword input}), on the
// model's device.
Inputs read_inputs(const std::string& path, const c10::Device& device) {
  c10::IValue loaded = torch::pickle_load(read_file(path));
  if (!loaded.isTuple() || loaded.toTupleRef().elements().size() != 2)
    throw std::runtime_error("the inputs file must hold a tuple (positional inputs, keyword inputs)");
  const auto& parts = loaded.toTupleRef().elements();
  Inputs inputs;
  if (parts[0].isTuple()) {
    for (const auto& item : parts[0].toTupleRef().elements())
      inputs.args.push_back(on_device(item, device));
  } else if (parts[0].isList()) {
    for (const auto& item : parts[0].toList()) inputs.args.push_back(on_device(item, device));
  } else {
    throw std::runtime_error("the positional inputs must be a tuple or list");
  }
  if (!parts[1].isGenericDict())
    throw std::runtime_error("the keyword inputs must be a dict");
  for (const auto& entry : parts[1].toGenericDict())
    inputs.kwargs[entry.key().toStringRef()] = on_device(entry.value(), device);
  return inputs;
}

// Outputs on the CPU, in plain containers: named tuples lose their class,
// which torch.load could not rebuild, and the suite compares positionally.
c10::IValue to_plain(const c10::IValue& value) {
  if (value.isTensor()) return value.toTensor().cpu();
  if (value.isTuple()) {
    std::vector<c10::IValue> items;
    for (const auto& item : value.toTupleRef().elements()) items.push_back(to_plain(item));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (value.isList()) {
    c10::impl::GenericList items(c10::AnyType::get());
    for (const auto& item : value.toList()) items.push_back(to_plain(item));
    return items;
  }
  if (value.isGenericDict()) {
    auto source = value.toGenericDict();
    c10::impl::GenericDict items(source.keyType(), c10::AnyType::get());
    for (const auto& entry : source) items.insert(entry.key(), to_plain(entry.value()));
    return items;
  }
  return value;
}

std::vector<at::Tensor> tensors_of(const std::vector<c10::IValue>& inputs) {
  std::vector<at::Tensor> tensors;
  for (const auto& input : inputs) {
    if (!input.isTensor())
      throw std::runtime_error("an AOTInductor package takes tensors only, got " +
                               input.tagKind());
    tensors.push_back(input.toTensor());
  }
  return tensors;
}

c10::IValue forward(Model& model, const Inputs& inputs) {
  c10::InferenceMode guard;
  if (model.module) return model.module->forward(inputs.args, inputs.kwargs);
  // The suite hands a package its flat inputs in the exported order, all positional.
  if (!inputs.kwargs.empty())
    throw std::runtime_error("an AOTInductor package takes its inputs flat, not by keyword");
  std::vector<c10::IValue> outputs;
  for (auto& tensor : model.package->run(tensors_of(inputs.args))) outputs.emplace_back(tensor);
  return c10::ivalue::Tuple::create(std::move(outputs));
}

void synchronize(const Model& model) {
  if (model.device.is_cuda()) torch::cuda::synchronize();
}

// The quantized engine is set before loading: a quantized TorchScript module packs
// its weights for the engine active when it is loaded, and keeps those kernels.
std::string load(const std::vector<std::string>& fields) {
  need(fields, 5);
  set_quantized_engine(fields[4]);
  const std::string& kind = fields[1];
  Model model{kind, c10::Device(fields[2]), std::nullopt, nullptr};
  const bool torchscript = kind == "torchscript" || kind == "torchscript-optimized";
  if (!torchscript && kind != "aoti")
    throw std::runtime_error("unknown artifact kind " + kind +
                             " (torchscript, torchscript-optimized or aoti)");
  try {
    if (torchscript) {
      model.module = torch::jit::load(fields[3], model.device);
      model.module->eval();
      // Freezes the module first when it is not frozen yet, as the Python function does.
      if (kind == "torchscript-optimized")
        model.module = torch::jit::optimize_for_inference(*model.module);
    } else {
      auto index = model.device.has_index() ? model.device.index() : c10::DeviceIndex(-1);
      model.package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          fields[3], "model", false, 1, index);
    }
  } catch (const c10::Error& error) {
    throw std::runtime_error(
        fields[3] + " is not " +
        (kind == "aoti" ? "an AOTInductor package that AOTIModelPackageLoader"
                        : kind == "torchscript" ? "a TorchScript module that torch::jit::load"
                                                : "a TorchScript module that torch::jit::load "
                                                  "and optimize_for_inference") +
        " can load on " + fields[2] + ": " + error.what_without_backtrace());
  }
  long handle = next_handle++;
  models.emplace(handle, std::move(model));
  return std::to_string(handle);
}

std::string run(const std::vector<std::string>& fields) {
  need(fields, 5);
  Model& model = find(fields[1]);
  set_quantized_engine(fields[2]);
  auto inputs = read_inputs(fields[3], model.device);
  auto started = Clock::now();
  c10::IValue outputs = forward(model, inputs);
  synchronize(model);
  std::chrono::duration<double> seconds = Clock::now() - started;
  write_file(fields[4], torch::pickle_save(to_plain(outputs)));
  std::ostringstream reply;
  reply.precision(9);
  reply << seconds.count();
  return reply.str();
}

// A timing request's model and inputs: <handle> <qengine> <inputs> come first.
std::pair<Model*, Inputs> prepare(const std::vector<std::string>& fields,
                                                    size_t count) {
  need(fields, count);
  Model& model = find(fields[1]);
  set_quantized_engine(fields[2]);
  return {&model, read_inputs(fields[3], model.device)};
}

// Timed runs: warm-up first, then one sample per run; only forward (and, on
// CUDA, the wait for its kernels) is inside the timed region.
std::string time_runs(const std::vector<std::string>& fields) {
  auto [model_ptr, inputs] = prepare(fields, 6);
  Model& model = *model_ptr;
  long warmup = std::stol(fields[4]), runs = std::stol(fields[5]);
  for (long i = 0; i < warmup; ++i) forward(model, inputs);
  synchronize(model);
  std::ostringstream samples;
  samples.precision(9);
  for (long i = 0; i < runs; ++i) {
    auto started = Clock::now();
    forward(model, inputs);
    synchronize(model);
    std::chrono::duration<double> seconds = Clock::now() - started;
    samples << (i ? "\t" : "") << seconds.count();
  }
  return samples.str();
}

// The bare timing loop: `runs` calls between two clock reads, nothing else inside.
// Against the per-run samples of `time` it shows what taking one sample per run costs.
std::string loop_runs(const std::vector<std::string>& fields) {
  auto [model_ptr, inputs] = prepare(fields, 5);
  Model& model = *model_ptr;
  long runs = std::stol(fields[4]);
  auto started = Clock::now();
  for (long i = 0; i < runs; ++i) forward(model, inputs);
  synchronize(model);
  std::chrono::duration<double> seconds = Clock::now() - started;
  std::ostringstream reply;
  reply.precision(9);
  reply << seconds.count();
  return reply.str();
}

// Profiles: the event each profiled call's operators nest in, the same name as the
// Python side's (conformance/latency/profile.py), so that its self time is the time
// of a call spent outside any operator.
constexpr const char* kCallEvent = "model call";
constexpr const char* kKinetoTool = "libtorch kineto";
constexpr const char* kClockTool = "harness clock";

namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::string seconds_text(double seconds) {
  std::ostringstream text;
  text.precision(9);
  text << seconds;
  return text.str();
}

// Kineto's state is process-wide: a call that throws while profiling must not leave
// the profiler on for the next request.
struct KinetoSession {
  bool on = false;
  ~KinetoSession() {
    if (on) kineto::disableProfiler();
  }
};

std::set<ActivityType> activities_for(const Model& model) {
  std::set<ActivityType> activities{ActivityType::CPU};
  if (model.device.is_cuda()) activities.insert(ActivityType::CUDA);
  return activities;
}

// Starts Kineto; false, with the reason, when it cannot start (a libtorch built
// without it, a profiler already on), so the caller falls back before any call.
bool start_kineto(const Model& model, KinetoSession& session, std::string& why) {
  ProfilerConfig config(ProfilerState::KINETO);
  try {
    kineto::prepareProfiler(config, activities_for(model));
    kineto::enableProfiler(config, activities_for(model));
  } catch (const c10::Error& error) {
    why = error.what_without_backtrace();
    return false;
  }
  session.on = true;
  return true;
}

// `runs` calls under the started Kineto, each a "model call" user-scope event; the
// trace is Kineto's own (ProfilerResult::save). Returns the wall time of the calls.
double profile_with_kineto(Model& model, const Inputs& inputs, long runs,
                           const std::string& trace, KinetoSession& session) {
  auto started = Clock::now();
  for (long i = 0; i < runs; ++i) {
    RECORD_USER_SCOPE(kCallEvent);
    forward(model, inputs);
    synchronize(model);
  }
  std::chrono::duration<double> seconds = Clock::now() - started;
  session.on = false;
  auto result = kineto::disableProfiler();
  if (!result) throw std::runtime_error("the Kineto profiler gave no result");
  result->save(trace);
  return seconds.count();
}

// The fallback: one complete event per call, from steady_clock, in the chrome trace
// format Kineto writes (microseconds), so the suite reads both alike.
double profile_with_clock(Model& model, const Inputs& inputs, long runs,
                          const std::string& trace) {
  std::ostringstream events;
  events.precision(3);
  events << std::fixed;
  const auto origin = Clock::now();
  for (long i = 0; i < runs; ++i) {
    auto started = Clock::now();
    forward(model, inputs);
    synchronize(model);
    auto ended = Clock::now();
    std::chrono::duration<double, std::micro> ts = started - origin, dur = ended - started;
    events << (i ? ",\n" : "") << "{\"ph\": \"X\", \"cat\": \"user_annotation\", \"name\": \""
           << kCallEvent << "\", \"pid\": " << getpid() << ", \"tid\": 0, \"ts\": "
           << ts.count() << ", \"dur\": " << dur.count() << "}";
  }
  std::chrono::duration<double> seconds = Clock::now() - origin;
  std::ofstream out(trace);
  out << "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n" << events.str() << "\n]}\n";
  if (!out) throw std::runtime_error("cannot write " + trace);
  return seconds.count();
}

std::string profile_runs(const std::vector<std::string>& fields) {
  auto [model_ptr, inputs] = prepare(fields, 7);
  Model& model = *model_ptr;
  long warmup = std::stol(fields[4]), runs = std::stol(fields[5]);
  const std::string& trace = fields[6];
  for (long i = 0; i < warmup; ++i) forward(model, inputs);
  synchronize(model);
  KinetoSession session;
  std::string why;
  if (start_kineto(model, session, why))
    return std::string(kKinetoTool) + "\t" +
           seconds_text(profile_with_kineto(model, inputs, runs, trace, session));
  // The calls are still timed, and the tool tells the suite what the trace holds.
  std::cerr << "the harness cannot start Kineto, profiling with its clock: " << why << std::endl;
  return std::string(kClockTool) + "\t" +
         seconds_text(profile_with_clock(model, inputs, runs, trace));
}

// The thread budget and denormal policy, the same as the suite gives Python and
// ONNX Runtime; 0 threads leaves libtorch's default.
std::string settings(const std::vector<std::string>& fields) {
  need(fields, 3);
  long threads = std::stol(fields[1]);
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  if (!at::globalContext().setFlushDenormal(fields[2] == "1") && fields[2] == "1")
    throw std::runtime_error("this CPU cannot flush denormals");
  return std::to_string(at::get_num_threads());
}

// Linux's VmHWM of this image; getrusage's ru_maxrss survives exec and would report
// at least the size the suite's Python process had when it started the harness.
std::string peak_memory() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::to_string(std::stol(line.substr(6)));
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return std::to_string(usage.ru_maxrss);  // KiB on Linux
}

std::string answer(const std::vector<std::string>& fields) {
  const std::string& verb = fields.at(0);
  if (verb == "info")
    return std::string(TORCH_VERSION) + "\t" + (torch::cuda::is_available() ? "1" : "0");
  if (verb == "load") return load(fields);
  if (verb == "run") return run(fields);
  if (verb == "time") return time_runs(fields);
  if (verb == "loop") return loop_runs(fields);
  if (verb == "profile") return profile_runs(fields);
  if (verb == "settings") return settings(fields);
  if (verb == "memory") return peak_memory();
  if (verb == "unload") {
    need(fields, 2);
    models.erase(std::stol(fields[1]));
    return "";
  }
  throw std::runtime_error("unknown request " + verb);
}

}  // namespace

int main() {
  // The protocol gets its own descriptor; whatever a model prints goes to stderr.
  FILE* protocol = fdopen(dup(STDOUT_FILENO), "w");
  dup2(STDERR_FILENO, STDOUT_FILENO);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    std::string reply;
    try {
      reply = "ok\t" + answer(split(line));
    } catch (const c10::Error& error) {
      reply = "error\t" + escape(error.what_without_backtrace());
    } catch (const std::exception& error) {
      reply = "error\t" + escape(error.what());
    }
    std::fprintf(protocol, "%s\n", reply.c_str());
    std::fflush(protocol);
  }
  return 0;
}
