/* threadpool.c - fork-join pool: workers sleep on a condition variable between jobs; each job hands out
 * task indices through an atomic counter, and the caller works too. */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct pf_pool {
    int n_threads;
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    /* the current job */
    pf_task_fn task;
    void *ctx;
    int n_tasks;
    atomic_int next;
    int busy;          /* workers still in the current job */
    unsigned long gen; /* job generation, bumped per job */
    int stop;
};

static void run_tasks(pf_pool *p) {
    for (;;) {
        const int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n_tasks) break;
        p->task(p->ctx, i, p->n_tasks);
    }
}

static void *worker_main(void *arg) {
    pf_pool *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        pthread_mutex_unlock(&p->mu);
        run_tasks(p);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

pf_pool *pf_pool_create(int n_threads) {
    if (n_threads < 1) return NULL;
    pf_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = 1;
    atomic_init(&p->next, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0 || pthread_cond_init(&p->done, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (n_threads > 1) {
        p->workers = calloc((size_t)(n_threads - 1), sizeof *p->workers);
        if (!p->workers) {
            pf_pool_destroy(p);
            return NULL;
        }
        for (int t = 0; t < n_threads - 1; t++) {
            if (pthread_create(&p->workers[t], NULL, worker_main, p) != 0) {
                pf_pool_destroy(p);
                return NULL;
            }
            p->n_threads++;
        }
    }
    return p;
}

void pf_pool_destroy(pf_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int t = 0; t < p->n_threads - 1; t++) pthread_join(p->workers[t], NULL);
    free(p->workers);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int pf_pool_size(const pf_pool *p) { return p ? p->n_threads : 1; }

void pf_pool_run(pf_pool *p, int n_tasks, pf_task_fn task, void *ctx) {
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) task(ctx, i, n_tasks);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->task = task;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->busy = p->n_threads - 1;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
