/* Running gnuplot on a script file (upmoe-jobs plot, upmoe-analyze gates --plot): fork and exec, no shell. */
#ifndef UPM_GNUPLOT_H
#define UPM_GNUPLOT_H

#include "err.h"

/* Runs `gnuplot SCRIPT` and waits; UPM_EIO naming the exit status (and how to install gnuplot) when it fails. */
int upm_gnuplot_run(const char *script, upm_err *err);

#endif
