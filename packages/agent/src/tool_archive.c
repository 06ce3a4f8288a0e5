/* `shoal-agent archive`: not written yet. */
#include <stdio.h>

#include "tools.h"

int archive_main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fputs("shoal-agent: the archive tool is not built into this agent\n", stderr);
  return 2;
}
