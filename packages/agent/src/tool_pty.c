/* `shoal-agent pty`: not written yet. */
#include <stdio.h>

#include "tools.h"

int pty_main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fputs("shoal-agent: the pty tool is not built into this agent\n", stderr);
  return 2;
}
