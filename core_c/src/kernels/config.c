/* config.c - the kernel tables: the reference, the portable optimised variant, NEON on aarch64, and (for the
 * tests) the BLAS GEMM. The library runs pf_kernels_best(); the dense GEMM goes through the BLAS when the
 * build has one (see parallel.c). */
#include "kernels.h"

const pf_kernels pf_kernels_ref = {
    .name = "ref",
    .gemm = pf_gemm_ref,
    .spmm = pf_spmm_ref,
    .sddmm = pf_sddmm_ref,
    .spgrad = pf_spgrad_ref,
    .im2col = pf_im2col_ref,
    .col2im = pf_col2im_ref,
};

static const pf_kernels kernels_generic = {
    .name = "generic",
    .gemm = pf_gemm_generic,
    .spmm = pf_spmm_generic,
    .sddmm = pf_sddmm_generic,
    .spgrad = pf_spgrad_generic,
    .im2col = pf_im2col_generic,
    .col2im = pf_col2im_generic,
};

#ifdef PF_HAVE_NEON
static const pf_kernels kernels_neon = {
    .name = "neon",
    .gemm = pf_gemm_neon,
    .spmm = pf_spmm_neon,
    .sddmm = pf_sddmm_neon,
    .spgrad = pf_spgrad_neon,
    .im2col = pf_im2col_generic,
    .col2im = pf_col2im_generic,
};
#endif

#ifdef PF_HAVE_BLAS
/* Only the GEMM differs from the generic table: the tests compare it with the reference through here. */
static const pf_kernels kernels_blas = {
    .name = "blas",
    .gemm = pf_gemm_blas,
    .spmm = pf_spmm_generic,
    .sddmm = pf_sddmm_generic,
    .spgrad = pf_spgrad_generic,
    .im2col = pf_im2col_generic,
    .col2im = pf_col2im_generic,
};
#endif

static const pf_kernels *const variants[] = {
    &pf_kernels_ref,
    &kernels_generic,
#ifdef PF_HAVE_NEON
    &kernels_neon,
#endif
#ifdef PF_HAVE_BLAS
    &kernels_blas,
#endif
};

const pf_kernels *const *pf_kernel_variants(int *count) {
    *count = (int)(sizeof variants / sizeof variants[0]);
    return variants;
}

const pf_kernels *pf_kernels_best(void) {
#ifdef PF_HAVE_NEON
    return &kernels_neon;
#else
    return &kernels_generic;
#endif
}
