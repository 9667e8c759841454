// gloo_allreduce: Gloo's ring all-reduce over its TCP transport, measured
// like fmctl bench allreduce (first result checked, warm-up, each timed
// iteration after a barrier, the slowest rank's time, the median).
//
// Rendezvous: a FileStore in a shared directory (all ranks on this host).
// Algorithms: "ring" is gloo::allreduce with Algorithm::RING (what PyTorch's
// ProcessGroupGloo calls: reduce-scatter + all-gather in 1 MiB segments);
// "ring_chunked" is the classic gloo::AllreduceRingChunked.
//
//   run_peers.sh starts N of these:
//   RANK=r SIZE=n STORE=/tmp/dir ./gloo_allreduce ring 4K,64K,1M [iters] [warmup]
#include <gloo/allreduce.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <memory>
#include <string>
#include <vector>

extern "C" {
#include "common.h"
}

static int env_int(const char *name) {
  const char *v = getenv(name);
  if (!v) {
    fprintf(stderr, "gloo_allreduce: %s is not set\n", name);
    exit(2);
  }
  return atoi(v);
}

int main(int argc, char **argv) {
  int rank = env_int("RANK"), n = env_int("SIZE");
  const char *storeDir = getenv("STORE");
  std::string algo = argc > 1 ? argv[1] : "ring";
  long sizes[64];
  int nsizes = parse_sizes(argc > 2 ? argv[2] : "4K,64K,1M,16M,64M,256M", sizes, 64);
  int iters = argc > 3 ? atoi(argv[3]) : 20, warmup = argc > 4 ? atoi(argv[4]) : 5;

  gloo::transport::tcp::attr attr("127.0.0.1");
  auto dev = gloo::transport::tcp::CreateDevice(attr);
  gloo::rendezvous::FileStore fileStore(storeDir ? storeDir : "/tmp/gloo-store");
  gloo::rendezvous::PrefixStore store("bench", fileStore);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, n);
  context->setTimeout(std::chrono::seconds(120));
  context->connectFullMesh(store, dev);

  std::vector<double> local(iters), slowest(iters);
  if (rank == 0) header();
  const char *label = algo == "ring" ? "gloo" : "gloo-c";
  for (int s = 0; s < nsizes; s++) {
    long count = sizes[s] / 4;
    std::vector<float> buf(count);
    for (long i = 0; i < count; i++) buf[i] = (float)((rank + 1) * (i % 7 + 1));
    std::unique_ptr<gloo::AllreduceRingChunked<float>> chunked;
    if (algo == "ring_chunked") {
      chunked.reset(new gloo::AllreduceRingChunked<float>(context, {buf.data()}, (int)count));
    }
    auto allreduce = [&]() {
      if (chunked) {
        chunked->run();
        return;
      }
      gloo::AllreduceOptions opts(context);
      opts.setOutput(buf.data(), count);
      opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
      opts.setReduceFunction(
          static_cast<void (*)(void *, const void *, const void *, size_t)>(&gloo::sum<float>));
      gloo::allreduce(opts);
    };
    allreduce();
    float wrong = 0;
    for (long i = 0; i < count; i++)
      if (buf[i] != (float)(n * (n + 1) / 2 * (i % 7 + 1))) {
        wrong = 1;
        break;
      }
    {
      gloo::AllreduceOptions opts(context);
      opts.setOutput(&wrong, 1);
      opts.setReduceFunction(
          static_cast<void (*)(void *, const void *, const void *, size_t)>(&gloo::sum<float>));
      gloo::allreduce(opts);
    }
    for (int it = 0; it < warmup; it++) allreduce();
    for (int it = 0; it < iters; it++) {
      gloo::BarrierOptions bopts(context);
      gloo::barrier(bopts);
      double t0 = now_us();
      allreduce();
      local[it] = now_us() - t0;
    }
    {
      slowest = local;
      gloo::AllreduceOptions opts(context);
      opts.setOutput(slowest.data(), iters);
      opts.setReduceFunction(
          static_cast<void (*)(void *, const void *, const void *, size_t)>(&gloo::max<double>));
      gloo::allreduce(opts);
    }
    if (rank == 0) report(label, n, sizes[s], slowest.data(), iters, wrong == 0);
  }
  return 0;
}
