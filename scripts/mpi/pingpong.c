/* jobdock's ping-pong latency test (issue 14): ranks 0 and 1 bounce a small message; rank 0
 * prints the one-way latency in microseconds. "pingpong [BYTES [ITERATIONS]]". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int rank, bytes = argc > 1 ? atoi(argv[1]) : 8, iters = argc > 2 ? atoi(argv[2]) : 100000;
    char *buf;
    double t0, t;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    buf = calloc(1, bytes > 0 ? bytes : 1);
    for (int pass = 0; pass < 2; pass++) { /* the first pass warms up */
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        for (int i = 0; i < iters; i++) {
            if (rank == 0) {
                MPI_Send(buf, bytes, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
                MPI_Recv(buf, bytes, MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else if (rank == 1) {
                MPI_Recv(buf, bytes, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(buf, bytes, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
            }
        }
        t = MPI_Wtime() - t0;
    }
    if (rank == 0) printf("pingpong bytes=%d iterations=%d latency_us=%.3f\n", bytes, iters, t / iters / 2 * 1e6);
    free(buf);
    MPI_Finalize();
    return 0;
}
