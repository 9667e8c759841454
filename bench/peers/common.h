/* Shared by the peer benchmarks: size parsing, the median of the slowest
 * rank's per-iteration times, and the output line, so that MPI, Gloo and
 * fmctl bench allreduce are measured and printed the same way. */
#ifndef FMTRAIN_PEERS_COMMON_H
#define FMTRAIN_PEERS_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* parse_sizes reads "4KiB,64KiB,1MiB" into sizes (bytes); returns the count. */
static int parse_sizes(const char *list, long *sizes, int max) {
  int n = 0;
  char *copy = strdup(list), *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save)) {
    char *end;
    long v = strtol(tok, &end, 10);
    if (*end == 'K') v <<= 10;
    else if (*end == 'M') v <<= 20;
    else if (*end == 'G') v <<= 30;
    if (v <= 0 || v % 4) {
      fprintf(stderr, "bad size %s\n", tok);
      exit(2);
    }
    sizes[n++] = v;
  }
  free(copy);
  return n;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* report sorts times (the slowest rank's, per iteration) and prints the
 * median with algbw and busbw = algbw*2(n-1)/n. */
static void report(const char *peer, int ranks, long bytes, double *times, int iters, int correct) {
  qsort(times, iters, sizeof(double), cmp_double);
  double median = iters % 2 ? times[iters / 2] : (times[iters / 2 - 1] + times[iters / 2]) / 2;
  double algbw = bytes / (median * 1e3);
  double busbw = algbw * 2.0 * (ranks - 1) / ranks;
  printf("%-6s %5d %12ld %12.1f %10.3f %10.3f %10.1f %10.1f %s\n", peer, ranks, bytes, median, algbw, busbw,
         times[0], times[iters - 1], correct ? "ok" : "WRONG");
  fflush(stdout);
}

static void header(void) {
  printf("%-6s %5s %12s %12s %10s %10s %10s %10s %s\n", "peer", "ranks", "bytes", "time(us)", "algbw", "busbw",
         "min(us)", "max(us)", "check");
}

#endif
