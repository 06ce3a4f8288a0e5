/*
 * Frame and field codec of the agent protocol (PROTOCOL.md). Every function here is a pure function
 * of its input bytes: this file is what the fuzz harness exercises.
 */
#include "frame.h"

#include <string.h>

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

int frame_header_parse(const uint8_t *buf, size_t len, struct frame_header *out) {
  if (len < FRAME_HEADER_SIZE) return FRAME_NEED_MORE;
  out->length = rd32(buf);
  out->type = rd16(buf + 4);
  out->flags = rd16(buf + 6);
  out->id = rd32(buf + 8);
  if (out->length > FRAME_MAX_SIZE - FRAME_HEADER_SIZE) return E_FRAME_TOO_LARGE;
  if (out->flags != 0) return E_MALFORMED_FRAME;
  return FRAME_OK;
}

int field_next(struct field_iter *it, uint16_t *tag, struct bytes *value) {
  if (it->left == 0) return 0;
  if (it->left < FIELD_HEADER_SIZE) return -1;
  uint32_t len = rd32(it->p + 2);
  if (len > it->left - FIELD_HEADER_SIZE) return -1;
  *tag = rd16(it->p);
  if (*tag == 0) return -1;
  value->ptr = it->p + FIELD_HEADER_SIZE;
  value->len = len;
  it->p += FIELD_HEADER_SIZE + len;
  it->left -= FIELD_HEADER_SIZE + len;
  return 1;
}

int field_u64(struct bytes v, uint64_t *out) {
  if (v.len != 8) return -1;
  uint64_t x = 0;
  for (int i = 7; i >= 0; i--) x = (x << 8) | v.ptr[i];
  *out = x;
  return 0;
}

int hello_parse(const uint8_t *payload, size_t len, struct hello_req *out) {
  struct field_iter it = {payload, len};
  uint16_t tag;
  struct bytes v;
  int r, have_major = 0;
  out->major = 0;
  out->minor = 0;
  while ((r = field_next(&it, &tag, &v)) == 1) {
    if (tag == F_VERSION_MAJOR) {
      if (have_major || field_u64(v, &out->major) != 0) return E_MALFORMED_FRAME;
      have_major = 1;
    } else if (tag == F_VERSION_MINOR) {
      if (field_u64(v, &out->minor) != 0) return E_MALFORMED_FRAME;
    }
  }
  if (r < 0 || !have_major) return E_MALFORMED_FRAME;
  return FRAME_OK;
}

static int has_nul(struct bytes v) { return v.len > 0 && memchr(v.ptr, 0, v.len) != NULL; }

/* Bit per singular field, to refuse duplicates. */
static int once(uint32_t *seen, unsigned bit) {
  if (*seen & (1u << bit)) return -1;
  *seen |= 1u << bit;
  return 0;
}

int exec_parse(const uint8_t *payload, size_t len, struct exec_req *out, const char **why) {
  struct field_iter it = {payload, len};
  uint16_t tag;
  struct bytes v;
  uint64_t n;
  uint32_t seen = 0;
  int r;
  memset(out, 0, sizeof *out);
  out->payload = payload;
  out->payload_len = len;
  *why = "malformed field";
  while ((r = field_next(&it, &tag, &v)) == 1) {
    switch (tag) {
    case F_ARGV:
      if (has_nul(v)) return *why = "argv contains NUL", E_BAD_REQUEST;
      if (out->argc == 0 && v.len == 0) return *why = "argv[0] is empty", E_BAD_REQUEST;
      if (++out->argc > EXEC_MAX_ARGV) return *why = "too many argv entries", E_BAD_REQUEST;
      break;
    case F_ENV: {
      const uint8_t *eq = v.len ? memchr(v.ptr, '=', v.len) : NULL;
      if (has_nul(v) || eq == NULL || eq == v.ptr) return *why = "env entry is not KEY=VALUE", E_BAD_REQUEST;
      if (++out->envc > EXEC_MAX_ENV) return *why = "too many env entries", E_BAD_REQUEST;
      break;
    }
    case F_SHELL:
      if (once(&seen, 0) || has_nul(v)) return *why = "bad shell field", E_BAD_REQUEST;
      out->has_shell = 1;
      out->shell = v;
      break;
    case F_CWD:
      if (once(&seen, 1) || has_nul(v) || v.len == 0 || v.ptr[0] != '/')
        return *why = "cwd must be an absolute path", E_BAD_REQUEST;
      out->has_cwd = 1;
      out->cwd = v;
      break;
    case F_STDIN:
      if (once(&seen, 2)) return *why = "duplicate stdin", E_BAD_REQUEST;
      out->has_stdin = 1;
      out->stdin_data = v;
      break;
    case F_UID:
    case F_GID:
      if (field_u64(v, &n) != 0) return E_MALFORMED_FRAME;
      if (once(&seen, tag == F_UID ? 3 : 4) || n >= 0xffffffffu) return *why = "bad uid or gid", E_BAD_REQUEST;
      if (tag == F_UID)
        out->uid = (uint32_t)n;
      else
        out->gid = (uint32_t)n;
      break;
    case F_TIMEOUT_MS:
      if (field_u64(v, &out->timeout_ms) != 0) return E_MALFORMED_FRAME;
      if (once(&seen, 5) || out->timeout_ms > (uint64_t)1 << 40) return *why = "bad timeout", E_BAD_REQUEST;
      break;
    case F_OUTPUT_LIMIT:
      if (field_u64(v, &out->output_limit) != 0) return E_MALFORMED_FRAME;
      if (once(&seen, 6)) return *why = "duplicate output limit", E_BAD_REQUEST;
      break;
    case F_OUTPUT_WINDOW:
      if (field_u64(v, &out->output_window) != 0) return E_MALFORMED_FRAME;
      if (once(&seen, 8)) return *why = "duplicate output window", E_BAD_REQUEST;
      break;
    case F_STDIN_STREAM:
      if (field_u64(v, &n) != 0) return E_MALFORMED_FRAME;
      if (once(&seen, 7) || n > 1) return *why = "stdin stream must be 0 or 1", E_BAD_REQUEST;
      out->stream_stdin = (int)n;
      break;
    default:
      break; /* unknown fields are ignored: newer hosts may add some */
    }
  }
  if (r < 0) return E_MALFORMED_FRAME;
  if ((out->argc > 0) == (out->has_shell != 0)) return *why = "exactly one of argv and shell", E_BAD_REQUEST;
  return FRAME_OK;
}

int stdin_parse(const uint8_t *payload, size_t len, struct stdin_req *out, const char **why) {
  struct field_iter it = {payload, len};
  uint16_t tag;
  struct bytes v;
  int r, have = 0;
  *why = "malformed field";
  out->data = (struct bytes){0};
  while ((r = field_next(&it, &tag, &v)) == 1) {
    if (tag != F_DATA) continue;
    if (have) return *why = "duplicate data", E_BAD_REQUEST;
    have = 1;
    out->data = v;
  }
  if (r < 0) return E_MALFORMED_FRAME;
  if (!have) return *why = "STDIN needs DATA (empty for EOF)", E_BAD_REQUEST;
  return FRAME_OK;
}

int output_ack_parse(const uint8_t *payload, size_t len, struct output_ack_req *out, const char **why) {
  struct field_iter it = {payload, len};
  uint16_t tag;
  struct bytes v;
  int r, have_stream = 0, have_offset = 0;
  *why = "malformed field";
  while ((r = field_next(&it, &tag, &v)) == 1) {
    if (tag == F_STREAM) {
      if (have_stream++ || field_u64(v, &out->stream) != 0) return E_MALFORMED_FRAME;
    } else if (tag == F_OFFSET) {
      if (have_offset++ || field_u64(v, &out->offset) != 0) return E_MALFORMED_FRAME;
    }
  }
  if (r < 0) return E_MALFORMED_FRAME;
  if (!have_stream || !have_offset || out->stream < 1 || out->stream > 2)
    return *why = "OUTPUT_ACK needs STREAM (1 or 2) and OFFSET", E_BAD_REQUEST;
  return FRAME_OK;
}

/* The int field `want` of a payload, once: FRAME_OK, E_MALFORMED_FRAME, or FIELD_ABSENT. */
#define FIELD_ABSENT (-2)
static int one_u64(const uint8_t *payload, size_t len, uint16_t want, uint64_t *out) {
  struct field_iter it = {payload, len};
  uint16_t tag;
  struct bytes v;
  int r, have = 0;
  while ((r = field_next(&it, &tag, &v)) == 1) {
    if (tag != want) continue;
    if (have || field_u64(v, out) != 0) return E_MALFORMED_FRAME;
    have = 1;
  }
  if (r < 0) return E_MALFORMED_FRAME;
  return have ? FRAME_OK : FIELD_ABSENT;
}

int signal_parse(const uint8_t *payload, size_t len, struct signal_req *out, const char **why) {
  *why = "malformed field";
  int r = one_u64(payload, len, F_SIGNAL, &out->signo);
  if (r == E_MALFORMED_FRAME) return r;
  if (r != FRAME_OK || out->signo < 1 || out->signo > 64) return *why = "signal must be 1..64", E_BAD_REQUEST;
  return FRAME_OK;
}

int set_clock_parse(const uint8_t *payload, size_t len, struct set_clock_req *out, const char **why) {
  *why = "malformed field";
  int r = one_u64(payload, len, F_REALTIME_US, &out->realtime_us);
  if (r == E_MALFORMED_FRAME) return r;
  if (r != FRAME_OK || out->realtime_us == 0) return *why = "SET_CLOCK needs REALTIME_US", E_BAD_REQUEST;
  return FRAME_OK;
}

static void wr16(uint8_t *p, uint16_t x) {
  p[0] = (uint8_t)x;
  p[1] = (uint8_t)(x >> 8);
}

static void wr32(uint8_t *p, uint32_t x) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}

void frame_begin(struct writer *w, uint16_t type, uint32_t id) {
  w->start = w->len;
  w->overflow = 0;
  if (w->cap - w->len < FRAME_HEADER_SIZE) {
    w->overflow = 1;
    return;
  }
  uint8_t *p = w->buf + w->len;
  wr32(p, 0);
  wr16(p + 4, type);
  wr16(p + 6, 0);
  wr32(p + 8, id);
  w->len += FRAME_HEADER_SIZE;
}

void put_bytes(struct writer *w, uint16_t tag, const void *data, size_t len) {
  if (w->overflow || w->cap - w->len < FIELD_HEADER_SIZE || w->cap - w->len - FIELD_HEADER_SIZE < len) {
    w->overflow = 1;
    return;
  }
  uint8_t *p = w->buf + w->len;
  wr16(p, tag);
  wr32(p + 2, (uint32_t)len);
  if (len) memcpy(p + FIELD_HEADER_SIZE, data, len);
  w->len += FIELD_HEADER_SIZE + len;
}

void put_u64(struct writer *w, uint16_t tag, uint64_t value) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(value >> (8 * i));
  put_bytes(w, tag, b, 8);
}

void put_str(struct writer *w, uint16_t tag, const char *s) { put_bytes(w, tag, s, strlen(s)); }

size_t frame_end(struct writer *w) {
  size_t size = w->len - w->start;
  if (w->overflow || size > FRAME_MAX_SIZE) {
    w->len = w->start;
    return 0;
  }
  wr32(w->buf + w->start, (uint32_t)(size - FRAME_HEADER_SIZE));
  return size;
}
