/* `shoal-agent watch`: not written yet. */
#include <stdio.h>

#include "tools.h"

int watch_main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fputs("shoal-agent: the watch tool is not built into this agent\n", stderr);
  return 2;
}
