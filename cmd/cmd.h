/* cmd/cmd.h - the subcommands of the iocd binary. cmd/ is the composition root: the one
 * place allowed to include every module's header and wire them together. */
#ifndef IOCD_CMD_H
#define IOCD_CMD_H

/* Each takes the arguments after its name and returns the process exit code
 * (0 ok, 1 runtime failure, 2 usage error). */
int cmd_serve(int argc, char **argv);
void cmd_serve_usage(void);
int cmd_backup(int argc, char **argv);
void cmd_backup_usage(void);
int cmd_check(int argc, char **argv);
void cmd_check_usage(void);
int cmd_rules(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
void cmd_simulate_usage(void);
void cmd_rules_usage(void);
/* Prints the config file reference (Markdown table rows). */
int cmd_config_reference(void);

#endif
