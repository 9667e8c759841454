#!/usr/bin/env bash
# Measure fmtrain's ring, OpenMPI's MPI_Allreduce (TCP BTL) and Gloo's ring
# all-reduce (TCP) on this machine in one sitting, for the ranks and sizes
# given, and print the load before and after. Usage:
#   bench/peers/run_peers.sh [sizes] [iters] [ranks...]
#   bench/peers/run_peers.sh 4K,64K,1M,16M,64M,256M 20 2 4
set -euo pipefail
cd "$(dirname "$0")"
sizes=${1:-4K,64K,1M,16M,64M,256M}
iters=${2:-20}
shift 2 || true
ranks=("${@:-2 4}")
read -r -a ranks <<<"${ranks[*]}"

make -s all
[ -n "${FMCTL:-}" ] || (cd ../.. && go build -o bench/peers/fmctl ./cmd/fmctl)
FMCTL=${FMCTL:-./fmctl}
gosizes=$(echo "$sizes" | sed -E 's/([0-9]+)([KMG])(,|$)/\1\2iB\3/g')

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uptime | sed 's/.*load/load/')"
for n in "${ranks[@]}"; do
  echo "## ranks=$n fmtrain"
  "$FMCTL" bench allreduce --ranks "$n" --sizes "$gosizes" --iters "$iters"
  echo "## ranks=$n openmpi"
  mpirun --mca btl tcp,self --mca btl_tcp_if_include lo --oversubscribe --allow-run-as-root -np "$n" ./mpi_allreduce "$sizes" "$iters"
  for algo in ring ring_chunked; do
    echo "## ranks=$n gloo $algo"
    store=$(mktemp -d)
    pids=()
    for ((r = 0; r < n; r++)); do
      RANK=$r SIZE=$n STORE=$store ./gloo_allreduce "$algo" "$sizes" "$iters" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    rm -rf "$store"
  done
done
echo "# $(date -u +%FT%TZ) $(uptime | sed 's/.*load/load/')"
