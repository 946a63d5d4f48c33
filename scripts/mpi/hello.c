/* jobdock's MPI test program (issue 14): one line per rank, naming what the rank shares with
 * the others on its node, for tests/main/mpi.rs to count. Built on the host with mpicc by
 * scripts/slurm-testbed.sh into the jobdock-test/mpi image. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void link_of(const char *path, char *out, size_t n) {
    ssize_t len = readlink(path, out, n - 1);
    out[len < 0 ? 0 : len] = '\0';
}

int main(int argc, char **argv) {
    int rank, size, local_rank, local_size;
    char node[256] = "", ipc[64], pidns[64], host[256];
    MPI_Comm local;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* The ranks MPI itself finds share memory with this one. */
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &local_rank);
    MPI_Comm_size(local, &local_size);
    link_of("/proc/self/ns/ipc", ipc, sizeof ipc);
    link_of("/proc/self/ns/pid", pidns, sizeof pidns);
    gethostname(host, sizeof host);
    if (getenv("SLURMD_NODENAME")) snprintf(node, sizeof node, "%s", getenv("SLURMD_NODENAME"));
    printf("rank %d of %d node=%s host=%s pid=%d shm_ranks=%d ipc=%s pidns=%s\n", rank, size, node,
           host, (int)getpid(), local_size, ipc, pidns);
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (argc > 1 && rank == atoi(argv[1])) {
        MPI_Finalize();
        return 3; /* "/hello N": rank N fails with 3 after a clean finalize */
    }
    MPI_Comm_free(&local);
    MPI_Finalize();
    return 0;
}
