/* config.c - the kernel tables: the reference, and the variant the library uses for this target. */
#include "kernels.h"

const pf_kernels pf_kernels_ref = {
    .name = "ref",
    .gemm = pf_gemm_ref,
    .spmm = pf_spmm_ref,
    .spmm_t = pf_spmm_t_ref,
    .sddmm = pf_sddmm_ref,
    .im2col = pf_im2col_ref,
    .col2im = pf_col2im_ref,
};

static const pf_kernels *const variants[] = {&pf_kernels_ref};

const pf_kernels *const *pf_kernel_variants(int *count) {
    *count = (int)(sizeof variants / sizeof variants[0]);
    return variants;
}

/* Until the optimised variants land, the reference is what runs. */
const pf_kernels *pf_kernels_best(void) { return variants[(sizeof variants / sizeof variants[0]) - 1]; }
