/* See gnuplot.h. */
#include "gnuplot.h"

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int upm_gnuplot_run(const char *script, upm_err *err)
{
    int st = -1;
    pid_t p = fork();
    if (p == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    if (p > 0)
        waitpid(p, &st, 0);
    if (st != 0)
        return upm_errf(err, UPM_EIO, "gnuplot failed (status %d; is it installed? tools/setup installs gnuplot-nox)",
                        st);
    return 0;
}
