/* cmgctl content distribute | list | remove | url: packages in the gateway's content store. */
#ifndef CMG_DEPLOY_CONTENT_CMD_H
#define CMG_DEPLOY_CONTENT_CMD_H

/* Each takes the arguments after the verb and returns the exit status: 0 done, 1 refused or
 * failed (the reason on stderr), 2 bad usage. */
int cmgctl_content_distribute(int argc, char **argv);
int cmgctl_content_list(int argc, char **argv);
int cmgctl_content_remove(int argc, char **argv);
int cmgctl_content_url(int argc, char **argv);

/* Their part of `cmgctl --help`. */
extern const char cmgctl_content_usage[];
extern const char cmgctl_content_help[];

#endif
