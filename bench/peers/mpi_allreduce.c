/* mpi_allreduce: MPI_Allreduce (float sum, in place) measured like
 * fmctl bench allreduce: the first result checked against the exact sum,
 * warm-up, then timed iterations each after a barrier; an iteration's time is
 * the slowest rank's; the median is reported.
 *
 *   mpirun --mca btl tcp,self --oversubscribe --allow-run-as-root -np 2 \
 *       ./mpi_allreduce 4K,64K,1M,16M,64M,256M [iters] [warmup]
 */
#include <mpi.h>

#include "common.h"

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, n;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  long sizes[64];
  int nsizes = parse_sizes(argc > 1 ? argv[1] : "4K,64K,1M,16M,64M,256M", sizes, 64);
  int iters = argc > 2 ? atoi(argv[2]) : 20, warmup = argc > 3 ? atoi(argv[3]) : 5;
  double *local = calloc(iters, sizeof(double)), *slowest = calloc(iters, sizeof(double));
  if (rank == 0) header();
  for (int s = 0; s < nsizes; s++) {
    long count = sizes[s] / 4;
    float *buf = malloc(sizes[s]);
    for (long i = 0; i < count; i++) buf[i] = (float)((rank + 1) * (i % 7 + 1));
    MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    int wrong = 0, anywrong = 0;
    for (long i = 0; i < count; i++)
      if (buf[i] != (float)(n * (n + 1) / 2 * (i % 7 + 1))) { wrong = 1; break; }
    MPI_Allreduce(&wrong, &anywrong, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    for (int it = 0; it < warmup; it++) MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (int it = 0; it < iters; it++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = now_us();
      MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      local[it] = now_us() - t0;
    }
    MPI_Allreduce(local, slowest, iters, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) report("mpi", n, sizes[s], slowest, iters, !anywrong);
    free(buf);
  }
  MPI_Finalize();
  return 0;
}
