/* threadpool.h - a small fork-join pool of pthreads owned by one network (no global state). */
#ifndef PRUNEFL_THREADPOOL_H
#define PRUNEFL_THREADPOOL_H

typedef struct pf_pool pf_pool;

/* task(ctx, i, n) runs once for every i in [0, n); pf_pool_run returns when all have run. */
typedef void (*pf_task_fn)(void *ctx, int i, int n);

/* Creates a pool of n_threads (>= 1) including the caller: n_threads - 1 workers. NULL on failure. */
pf_pool *pf_pool_create(int n_threads);
void pf_pool_destroy(pf_pool *pool);
int pf_pool_size(const pf_pool *pool);
/* Runs task over n_tasks indices on the pool's threads (the caller takes part). */
void pf_pool_run(pf_pool *pool, int n_tasks, pf_task_fn task, void *ctx);

#endif /* PRUNEFL_THREADPOOL_H */
