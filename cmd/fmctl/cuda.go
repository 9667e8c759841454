package main

// The CUDA kernels backends ("cuda": bf16 mixed precision, "cuda-fp32"),
// for `fmctl bench step --backend cuda` and training on a GPU. Opening them
// on a host without the driver is an ordinary error; nothing happens at
// start-up.
import _ "github.com/fmtrain/fmtrain/kernels/cuda"
