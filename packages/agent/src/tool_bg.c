/* `shoal-agent bg`: not written yet. */
#include <stdio.h>

#include "tools.h"

int bg_main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fputs("shoal-agent: the bg tool is not built into this agent\n", stderr);
  return 2;
}
