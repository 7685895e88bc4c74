/* grayctl internals: one function per command. */
#ifndef GRAYCTL_H
#define GRAYCTL_H

/* Exit codes. */
#define GRAYCTL_OK 0
#define GRAYCTL_EFAIL 1     /* something went wrong (I/O, out of memory) */
#define GRAYCTL_EINVALID 2  /* the policy file is invalid */
#define GRAYCTL_ENOPOLICY 3 /* no policy for the service */
#define GRAYCTL_EUSAGE 64   /* bad command line */

int grayctl_check(int argc, char **argv);
int grayctl_eval(int argc, char **argv);

#endif
