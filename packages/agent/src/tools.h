/*
 * The agent's tools: `shoal-agent TOOL ARGS…` run as ordinary processes inside the sandbox (started
 * by the host through EXEC), never inside PID 1's event loop, so that a fault in one of them cannot
 * take the sandbox's agent down and each runs with the uid the host asked for. Each tool's
 * command line and output are written down in PROTOCOL.md ("Tools").
 */
#ifndef SHOAL_TOOLS_H
#define SHOAL_TOOLS_H

/* Each returns the process's exit status. */
int fs_main(int argc, char **argv);      /* tool_fs.c: stat, list, read, write, mkdir, move, remove */
int archive_main(int argc, char **argv); /* tool_archive.c: pack and unpack a directory */
int watch_main(int argc, char **argv);   /* tool_watch.c: a directory's changes as lines */
int bg_main(int argc, char **argv);      /* tool_bg.c: background commands that outlive their caller */
int pty_main(int argc, char **argv);     /* tool_pty.c: a command on a pseudo-terminal */

#endif
