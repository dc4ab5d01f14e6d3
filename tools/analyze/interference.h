/* upmoe-analyze interference (interference.c): the task-interference metric of paper Eq. 1-2. */
#ifndef UPM_ANALYZE_INTERFERENCE_H
#define UPM_ANALYZE_INTERFERENCE_H

/* argv[0] is "interference"; returns the exit status. */
int upm_analyze_interference(int argc, char **argv);

#endif
