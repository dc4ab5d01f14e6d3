/* Test support for the sanitizer build's multi-rank tests, preloaded into the ranks: dlclose does nothing,
 * so the Open MPI plugins that MPI_Init and MPI_Finalize unload stay mapped and LeakSanitizer can name
 * their frames at exit (tests/lsan-mpi.supp then exempts Open MPI's own allocations by library, and
 * every allocation of ours is still checked). */
int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
