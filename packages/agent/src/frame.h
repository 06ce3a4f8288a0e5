/*
 * The shoal-agent wire format (PROTOCOL.md): frame headers, TLV fields, and the parsers of the
 * request frames the agent accepts. Everything here is pure (no I/O, no allocation), so that the
 * fuzz harness in fuzz/ can drive exactly the code that reads untrusted bytes.
 */
#ifndef SHOAL_FRAME_H
#define SHOAL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_MAJOR 1
#define PROTO_MINOR 2

#define FRAME_HEADER_SIZE 12u
#define FRAME_MAX_SIZE (1024u * 1024u) /* header included */
#define FIELD_HEADER_SIZE 6u

/* Limits on an EXEC request, so that a supervisor's allocations stay bounded. */
#define EXEC_MAX_ARGV 4096u
#define EXEC_MAX_ENV 4096u
/* Streamed stdin the host may have sent and the agent not yet delivered (STDIN_ACK tells). */
#define STDIN_WINDOW (1024u * 1024u)

enum frame_type {
  T_HELLO = 0x0001,
  T_PING = 0x0002,
  T_PONG = 0x0003,
  T_ERROR = 0x0004,
  T_SET_CLOCK = 0x0005, /* REALTIME_US: a VM's init sets its clock to the host's (since 1.2) */
  T_EXEC = 0x0010,
  T_EXEC_STARTED = 0x0011,
  T_OUTPUT = 0x0012,
  T_STDIN = 0x0013, /* streamed stdin: DATA, empty = EOF (EXEC with STDIN_STREAM) */
  T_SIGNAL = 0x0014,
  T_EXIT = 0x0015,
  T_EXEC_FAILED = 0x0016,
  T_STDIN_ACK = 0x0017, /* OFFSET: stdin bytes delivered to the process so far */
  T_OUTPUT_ACK = 0x0018, /* STREAM, OFFSET: output the host has consumed (EXEC with OUTPUT_WINDOW) */
  /* 0x0020-0x002F background processes, 0x0030-0x003F PTY, 0x0040-0x005F files,
     0x0060-0x006F tar, 0x0070-0x007F watch: reserved, answered with E_UNSUPPORTED_TYPE. */
};

enum field_tag {
  F_VERSION_MAJOR = 1,
  F_VERSION_MINOR = 2,
  F_SOFTWARE = 3,
  F_MAX_FRAME = 4,
  F_PID = 5,
  F_REALTIME_US = 6,
  F_CODE = 10,
  F_MESSAGE = 11,
  F_ERRNO = 12,
  F_ERRNO_NAME = 13,
  F_STAGE = 14,
  F_ARGV = 20,
  F_SHELL = 21,
  F_ENV = 22,
  F_CWD = 23,
  F_UID = 24,
  F_GID = 25,
  F_STDIN = 26,
  F_TIMEOUT_MS = 27,
  F_OUTPUT_LIMIT = 28,
  F_STDIN_STREAM = 29,
  F_OUTPUT_WINDOW = 33,
  F_STREAM = 30,
  F_OFFSET = 31,
  F_DATA = 32,
  F_SIGNAL = 40,
  F_SIGNAL_NAME = 41,
  F_EXIT_CODE = 42,
  F_TIMED_OUT = 43,
  F_OOM_KILLED = 44,
  F_STDOUT_TRUNCATED = 45,
  F_STDERR_TRUNCATED = 46,
  F_DURATION_MS = 47,
  F_STDOUT_BYTES = 48,
  F_STDERR_BYTES = 49,
};

enum error_code {
  E_MALFORMED_FRAME = 1,
  E_FRAME_TOO_LARGE = 2,
  E_UNSUPPORTED_VERSION = 3,
  E_HELLO_REQUIRED = 4,
  E_UNSUPPORTED_TYPE = 5,
  E_BAD_REQUEST = 6,
  E_DUPLICATE_ID = 7,
  E_TOO_MANY = 8,
  E_NO_SUCH_ID = 9,
  E_INTERNAL = 10,
};

struct frame_header {
  uint32_t length; /* payload bytes after the header */
  uint16_t type;
  uint16_t flags;
  uint32_t id;
};

/* FRAME_OK: header parsed; FRAME_NEED_MORE: fewer than 12 bytes; otherwise an error_code. */
#define FRAME_OK 0
#define FRAME_NEED_MORE (-1)
int frame_header_parse(const uint8_t *buf, size_t len, struct frame_header *out);

struct bytes {
  const uint8_t *ptr;
  uint32_t len;
};

struct field_iter {
  const uint8_t *p;
  size_t left;
};
/* 1: a field; 0: end; -1: a field overruns the payload. */
int field_next(struct field_iter *it, uint16_t *tag, struct bytes *value);

/* Integer fields are exactly 8 bytes, little-endian, unsigned. */
int field_u64(struct bytes v, uint64_t *out);

struct hello_req {
  uint64_t major, minor;
};
int hello_parse(const uint8_t *payload, size_t len, struct hello_req *out);

struct exec_req {
  uint32_t argc; /* ARGV fields; 0 when SHELL is used */
  uint32_t envc;
  int has_shell, has_cwd, has_stdin, stream_stdin;
  struct bytes shell, cwd, stdin_data;
  uint32_t uid, gid;
  uint64_t timeout_ms; /* 0: none */
  uint64_t output_limit;
  uint64_t output_window; /* 0: none */
  const uint8_t *payload; /* ARGV and ENV are read again from here, in order */
  size_t payload_len;
};
/* FRAME_OK, E_MALFORMED_FRAME (bad TLV) or E_BAD_REQUEST (well-formed but invalid); *why says which rule. */
int exec_parse(const uint8_t *payload, size_t len, struct exec_req *out, const char **why);

struct stdin_req {
  struct bytes data; /* empty: EOF */
};
int stdin_parse(const uint8_t *payload, size_t len, struct stdin_req *out, const char **why);

struct output_ack_req {
  uint64_t stream; /* 1 stdout, 2 stderr */
  uint64_t offset;
};
int output_ack_parse(const uint8_t *payload, size_t len, struct output_ack_req *out, const char **why);

struct signal_req {
  uint64_t signo;
};
int signal_parse(const uint8_t *payload, size_t len, struct signal_req *out, const char **why);

struct set_clock_req {
  uint64_t realtime_us; /* microseconds since the epoch */
};
int set_clock_parse(const uint8_t *payload, size_t len, struct set_clock_req *out, const char **why);

/* Bounded writer for building frames; overflow is sticky and reported by frame_end. */
struct writer {
  uint8_t *buf;
  size_t cap, len, start;
  int overflow;
};
void frame_begin(struct writer *w, uint16_t type, uint32_t id);
void put_u64(struct writer *w, uint16_t tag, uint64_t value);
void put_bytes(struct writer *w, uint16_t tag, const void *data, size_t len);
void put_str(struct writer *w, uint16_t tag, const char *s);
/* Fills in the length; returns the frame's size, or 0 if it did not fit. */
size_t frame_end(struct writer *w);

#endif
