/* `shoal-agent fs`: not written yet. */
#include <stdio.h>

#include "tools.h"

int fs_main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fputs("shoal-agent: the fs tool is not built into this agent\n", stderr);
  return 2;
}
