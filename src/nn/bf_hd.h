/* BF_HD marks a static inline formula shared by C host code and CUDA kernels:
 * __host__ __device__ under nvcc, nothing in C. */
#ifndef BF_HD_H
#define BF_HD_H
#if defined(__CUDACC__)
#define BF_HD __host__ __device__
#else
#define BF_HD
#endif
#endif
