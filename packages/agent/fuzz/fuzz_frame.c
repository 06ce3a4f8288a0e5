/*
 * Fuzz harness for the agent's frame parser (src/frame.c). The input is treated as the byte stream
 * of one connection: frames are cut out of it as conn.c does and handed to the parser of their
 * type; the invariants the agent relies on are checked with abort(). Built with afl-clang-fast
 * (persistent mode, input on stdin) or, with -DLIBFUZZER, as a libFuzzer target.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"

static void check(int ok) {
  if (!ok) abort();
}

/* The supervisor re-reads ARGV and ENV from the payload: it must find as many as exec_parse counted. */
static void check_exec(const struct exec_req *req, const uint8_t *payload, size_t len) {
  struct field_iter it = {payload, len};
  uint16_t tag;
  struct bytes v;
  uint32_t argc = 0, envc = 0;
  int r;
  while ((r = field_next(&it, &tag, &v)) == 1) {
    check(v.ptr >= payload && v.ptr + v.len <= payload + len);
    if (tag == F_ARGV) argc++;
    if (tag == F_ENV) envc++;
  }
  check(r == 0 && argc == req->argc && envc == req->envc);
  check(req->argc <= EXEC_MAX_ARGV && req->envc <= EXEC_MAX_ENV);
  check((req->argc > 0) != (req->has_shell != 0));
  if (req->has_cwd) check(req->cwd.len > 0 && req->cwd.ptr[0] == '/' && !memchr(req->cwd.ptr, 0, req->cwd.len));
  if (req->has_stdin) check(req->stdin_data.ptr + req->stdin_data.len <= payload + len);
}

/* Re-encodes the fields of a well-formed payload and checks that they parse back identically. */
static void check_roundtrip(uint16_t type, uint32_t id, const uint8_t *payload, size_t len) {
  static uint8_t out[FRAME_MAX_SIZE];
  struct writer w = {.buf = out, .cap = sizeof out};
  frame_begin(&w, type, id);
  struct field_iter it = {payload, len};
  uint16_t tag;
  struct bytes v;
  while (field_next(&it, &tag, &v) == 1) put_bytes(&w, tag, v.ptr, v.len);
  size_t size = frame_end(&w);
  check(size == FRAME_HEADER_SIZE + len);
  struct frame_header h;
  check(frame_header_parse(out, size, &h) == FRAME_OK);
  check(h.type == type && h.id == id && h.length == len && memcmp(out + FRAME_HEADER_SIZE, payload, len) == 0);
}

static void one_input(const uint8_t *data, size_t size) {
  size_t off = 0;
  while (off < size) {
    struct frame_header h;
    int r = frame_header_parse(data + off, size - off, &h);
    if (r != FRAME_OK) return;
    check(h.length <= FRAME_MAX_SIZE - FRAME_HEADER_SIZE && h.flags == 0);
    if (h.length > size - off - FRAME_HEADER_SIZE) return;
    const uint8_t *p = data + off + FRAME_HEADER_SIZE;
    const char *why = NULL;
    struct hello_req hello;
    struct exec_req exec;
    struct signal_req sig;
    struct stdin_req in;
    struct output_ack_req ack;
    switch (h.type) {
    case T_HELLO:
      hello_parse(p, h.length, &hello);
      break;
    case T_EXEC:
      r = exec_parse(p, h.length, &exec, &why);
      check(r == FRAME_OK || r == E_MALFORMED_FRAME || r == E_BAD_REQUEST);
      check(why != NULL);
      if (r == FRAME_OK) check_exec(&exec, p, h.length);
      break;
    case T_SIGNAL:
      r = signal_parse(p, h.length, &sig, &why);
      if (r == FRAME_OK) check(sig.signo >= 1 && sig.signo <= 64);
      break;
    case T_STDIN:
      r = stdin_parse(p, h.length, &in, &why);
      if (r == FRAME_OK) check(in.data.len == 0 || (in.data.ptr >= p && in.data.ptr + in.data.len <= p + h.length));
      break;
    case T_OUTPUT_ACK:
      r = output_ack_parse(p, h.length, &ack, &why);
      if (r == FRAME_OK) check(ack.stream == 1 || ack.stream == 2);
      break;
    default:
      break;
    }
    struct field_iter it = {p, h.length};
    uint16_t tag;
    struct bytes v;
    while ((r = field_next(&it, &tag, &v)) == 1) {
    }
    if (r == 0) check_roundtrip(h.type, h.id, p, h.length);
    off += FRAME_HEADER_SIZE + h.length;
  }
}

#ifdef LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  one_input(data, size);
  return 0;
}
#else
#ifndef __AFL_FUZZ_TESTCASE_LEN
/* Plain build (e.g. to replay a crash under gdb): one input from stdin. */
static uint8_t plain_buf[2 * FRAME_MAX_SIZE];
#define __AFL_FUZZ_TESTCASE_LEN plain_len
#define __AFL_FUZZ_TESTCASE_BUF plain_buf
#define __AFL_FUZZ_INIT() static ssize_t plain_len
#define __AFL_INIT() plain_len = read(0, plain_buf, sizeof plain_buf)
#define __AFL_LOOP(n) (plain_once++ == 0)
static int plain_once;
#endif

__AFL_FUZZ_INIT();

int main(void) {
  __AFL_INIT();
  unsigned char *buf = __AFL_FUZZ_TESTCASE_BUF;
  while (__AFL_LOOP(100000)) {
    ssize_t len = __AFL_FUZZ_TESTCASE_LEN;
    if (len > 0) one_input(buf, (size_t)len);
  }
  return 0;
}
#endif
