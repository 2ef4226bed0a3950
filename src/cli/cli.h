/* cli.h — subcommands of the `agora` executable (DESIGN.md §4). */
#ifndef AG_CLI_H
#define AG_CLI_H

/* --compress NAME (jpeg-ls, rle, j2k, none) to a transfer syntax UID
 * (NULL for none); -1 for an unknown name.  In cmd_serve.c. */
int cli_compress_syntax(const char *name, const char **ts_uid);

/* Each returns the process exit status: 0 ok, 1 failure, 2 usage. */
int cmd_version(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_codec_helper(int argc, char **argv);   /* hidden */
int cmd_demo(int argc, char **argv);
int cmd_dept(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_node(int argc, char **argv);
int cmd_render(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_transcode(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_worklist(int argc, char **argv);

#endif
