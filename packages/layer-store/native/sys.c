// Small system calls Node does not expose: mknod, extended attributes on links, flock,
// nanosecond file times (utimensat/futimens; Node's utimes rounds to microseconds), and an
// append-and-sha256 that runs on the thread pool. Each function throws an Error whose `code`
// is the errno name (ENOENT, EPERM, ...).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <limits.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>

#define PATH_MAX_LEN 4096
#define NAME_MAX_LEN 256

static const char *errno_name(int e) {
  switch (e) {
    // the names Node uses where glibc's strerrorname_np gives the alias (EOPNOTSUPP, EAGAIN)
    case ENOTSUP: return "ENOTSUP";
    case EWOULDBLOCK: return "EWOULDBLOCK";
    default: {
      // glibc >= 2.32 names every errno (ENOENT, EFBIG, EMFILE, EXDEV, ...)
      const char *name = strerrorname_np(e);
      return name ? name : "EIO";
    }
  }
}

// An Error for errno `e`: message "ENAME: text, syscall 'path'" (no path part when path is NULL),
// with `code` (the errno name), `errno` (negative, as Node's) and `syscall` set.
static napi_value errno_error(napi_env env, int e, const char *syscall, const char *path) {
  char msg[PATH_MAX_LEN + 128];
  if (path) snprintf(msg, sizeof msg, "%s: %s, %s '%s'", errno_name(e), strerror(e), syscall, path);
  else snprintf(msg, sizeof msg, "%s: %s, %s", errno_name(e), strerror(e), syscall);
  napi_value m, code, err, num, sc;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, m, &err);
  napi_create_int32(env, -e, &num);
  napi_set_named_property(env, err, "errno", num);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, err, "syscall", sc);
  return err;
}

static napi_value throw_errno(napi_env env, int e, const char *syscall, const char *path) {
  napi_throw(env, errno_error(env, e, syscall, path ? path : ""));
  return NULL;
}

// Copy a JS string into buf (cap bytes, NUL included), whole or not at all: N-API truncates a
// string that does not fit at a character boundary, which would name another (shorter) path,
// and a NUL inside it would end the C string early (another name again).
static int get_string(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t need = 0, len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &need) != napi_ok) return -1;
  if (need >= cap) return -1;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok || len != need) return -1;
  if (strlen(buf) != len) return -1;
  return 0;
}

#define TYPE_ERROR(msg)                                                \
  do {                                                                 \
    napi_throw_type_error(env, NULL, msg);                             \
    return NULL;                                                       \
  } while (0)

#define ARGS(n)                                                        \
  size_t argc = n;                                                     \
  napi_value argv[n];                                                  \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);                \
  if (argc < n) {                                                      \
    napi_throw_type_error(env, NULL, "not enough arguments");          \
    return NULL;                                                       \
  }

#define PATH_ARG(i, var)                                               \
  char var[PATH_MAX_LEN];                                              \
  if (get_string(env, argv[i], var, sizeof var) != 0) {                \
    napi_throw_type_error(env, NULL, "path must be a string of < 4096 bytes without NUL"); \
    return NULL;                                                       \
  }

#define NAME_ARG(i, var)                                               \
  char var[NAME_MAX_LEN];                                              \
  if (get_string(env, argv[i], var, sizeof var) != 0) {                \
    napi_throw_type_error(env, NULL, "name must be a string of < 256 bytes without NUL"); \
    return NULL;                                                       \
  }

// mknod(path, mode, major, minor)
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  ARGS(4);
  PATH_ARG(0, path);
  uint32_t mode, major, minor;
  if (napi_get_value_uint32(env, argv[1], &mode) != napi_ok || napi_get_value_uint32(env, argv[2], &major) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &minor) != napi_ok)
    TYPE_ERROR("mode, major and minor must be numbers");
  if (mknod(path, (mode_t)mode, makedev(major, minor)) != 0) return throw_errno(env, errno, "mknod", path);
  return NULL;
}

// lsetxattr(path, name, value: Buffer)
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  ARGS(3);
  PATH_ARG(0, path);
  NAME_ARG(1, name);
  void *data = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "value must be a Buffer");
    return NULL;
  }
  if (lsetxattr(path, name, data, len, 0) != 0) return throw_errno(env, errno, "lsetxattr", path);
  return NULL;
}

// lgetxattr(path, name) -> Buffer | null when absent
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  ARGS(2);
  PATH_ARG(0, path);
  NAME_ARG(1, name);
  for (int attempt = 0; attempt < 4; attempt++) {
    ssize_t n = lgetxattr(path, name, NULL, 0);
    if (n < 0) {
      if (errno == ENODATA || errno == ENOTSUP) {
        napi_value nul;
        napi_get_null(env, &nul);
        return nul;
      }
      return throw_errno(env, errno, "lgetxattr", path);
    }
    void *buf = NULL;
    napi_value out;
    if (napi_create_buffer(env, (size_t)n, &buf, &out) != napi_ok || (n > 0 && buf == NULL)) return throw_errno(env, ENOMEM, "lgetxattr", path);
    ssize_t m = n == 0 ? 0 : lgetxattr(path, name, buf, (size_t)n);
    if (m < 0) {
      if (errno == ERANGE) continue;
      return throw_errno(env, errno, "lgetxattr", path);
    }
    if (m == n) return out;
    napi_value slice;
    if (napi_create_buffer_copy(env, (size_t)m, buf, NULL, &slice) != napi_ok) return throw_errno(env, ENOMEM, "lgetxattr", path);
    return slice;
  }
  return throw_errno(env, ERANGE, "lgetxattr", path);
}

// llistxattr(path) -> string[]
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  ARGS(1);
  PATH_ARG(0, path);
  for (int attempt = 0; attempt < 4; attempt++) {
    ssize_t n = llistxattr(path, NULL, 0);
    if (n < 0) {
      if (errno == ENOTSUP) {
        napi_value arr;
        napi_create_array(env, &arr);
        return arr;
      }
      return throw_errno(env, errno, "llistxattr", path);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) return throw_errno(env, ENOMEM, "llistxattr", path);
    ssize_t m = n == 0 ? 0 : llistxattr(path, buf, (size_t)n);
    if (m < 0) {
      int e = errno;
      free(buf);
      if (e == ERANGE) continue;
      return throw_errno(env, e, "llistxattr", path);
    }
    napi_value arr;
    napi_create_array(env, &arr);
    uint32_t idx = 0;
    for (ssize_t off = 0; off < m;) {
      size_t l = strnlen(buf + off, (size_t)(m - off));
      if (l > 0) {
        napi_value s;
        napi_create_string_utf8(env, buf + off, l, &s);
        napi_set_element(env, arr, idx++, s);
      }
      off += (ssize_t)l + 1;
    }
    free(buf);
    return arr;
  }
  return throw_errno(env, ERANGE, "llistxattr", path);
}

// lremovexattr(path, name)
static napi_value js_lremovexattr(napi_env env, napi_callback_info info) {
  ARGS(2);
  PATH_ARG(0, path);
  NAME_ARG(1, name);
  if (lremovexattr(path, name) != 0 && errno != ENODATA) return throw_errno(env, errno, "lremovexattr", path);
  return NULL;
}

// flock(fd, exclusive: boolean, wait: boolean) -> boolean (false when non-blocking and held elsewhere)
static napi_value js_flock(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t fd;
  bool exclusive, wait;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_bool(env, argv[1], &exclusive) != napi_ok ||
      napi_get_value_bool(env, argv[2], &wait) != napi_ok)
    TYPE_ERROR("flock(fd: number, exclusive: boolean, wait: boolean)");
  int op = exclusive ? LOCK_EX : LOCK_SH;
  if (!wait) op |= LOCK_NB;
  int r;
  do { r = flock(fd, op); } while (r != 0 && errno == EINTR);
  napi_value out;
  if (r != 0) {
    if (errno == EWOULDBLOCK) {
      napi_get_boolean(env, false, &out);
      return out;
    }
    return throw_errno(env, errno, "flock", NULL);
  }
  napi_get_boolean(env, true, &out);
  return out;
}

// funlock(fd)
static napi_value js_funlock(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok) TYPE_ERROR("fd must be a number");
  if (flock(fd, LOCK_UN) != 0) return throw_errno(env, errno, "flock", NULL);
  return NULL;
}

// syncfs-free directory fsync helper: fsyncdir(path)
// fsync the directory `path`: 0, or an errno with the call that failed in *syscall
static int fsync_dir(const char *path, const char **syscall) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    *syscall = "open";
    return errno;
  }
  int e = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  *syscall = "fsync";
  return e;
}

static napi_value js_fsyncdir(napi_env env, napi_callback_info info) {
  ARGS(1);
  PATH_ARG(0, path);
  const char *syscall;
  int e = fsync_dir(path, &syscall);
  return e ? throw_errno(env, e, syscall, path) : NULL;
}

// Settle a Promise<void>: resolved, or rejected with the errno error for `syscall` on `path`.
static void settle_void(napi_env env, napi_deferred deferred, int err, const char *syscall, const char *path) {
  if (err == 0) {
    napi_value u;
    napi_get_undefined(env, &u);
    napi_resolve_deferred(env, deferred, u);
  } else {
    napi_reject_deferred(env, deferred, errno_error(env, err, syscall, path));
  }
}

static int get_timespecs(napi_env env, napi_value *argv, struct timespec ts[2]) {
  int64_t as, ans, ms, mns;
  if (napi_get_value_int64(env, argv[0], &as) != napi_ok || napi_get_value_int64(env, argv[1], &ans) != napi_ok ||
      napi_get_value_int64(env, argv[2], &ms) != napi_ok || napi_get_value_int64(env, argv[3], &mns) != napi_ok ||
      ans < 0 || ans > 999999999 || mns < 0 || mns > 999999999) {
    napi_throw_type_error(env, NULL, "times must be integers: seconds, nanoseconds (0..999999999)");
    return -1;
  }
  ts[0].tv_sec = (time_t)as;
  ts[0].tv_nsec = (long)ans;
  ts[1].tv_sec = (time_t)ms;
  ts[1].tv_nsec = (long)mns;
  return 0;
}

// lutimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec): nanosecond times, symlinks not followed
static napi_value js_lutimens(napi_env env, napi_callback_info info) {
  ARGS(5);
  PATH_ARG(0, path);
  struct timespec ts[2];
  if (get_timespecs(env, argv + 1, ts) != 0) return NULL;
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) return throw_errno(env, errno, "utimensat", path);
  return NULL;
}

// futimens(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec)
static napi_value js_futimens(napi_env env, napi_callback_info info) {
  ARGS(5);
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok) TYPE_ERROR("fd must be a number");
  struct timespec ts[2];
  if (get_timespecs(env, argv + 1, ts) != 0) return NULL;
  if (futimens(fd, ts) != 0) return throw_errno(env, errno, "futimens", NULL);
  return NULL;
}

// devnums(rdev) -> [major, minor]
static napi_value js_devnums(napi_env env, napi_callback_info info) {
  ARGS(1);
  double rdev;
  if (napi_get_value_double(env, argv[0], &rdev) != napi_ok || !(rdev >= 0)) TYPE_ERROR("rdev must be a number");
  dev_t d = (dev_t)rdev;
  napi_value arr, a, b;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_uint32(env, major(d), &a);
  napi_create_uint32(env, minor(d), &b);
  napi_set_element(env, arr, 0, a);
  napi_set_element(env, arr, 1, b);
  return arr;
}


// ---- sha256 + append, off the JS thread ------------------------------------------------------
// The hash comes from the OpenSSL that Node itself carries (its symbols are exported for
// addons); looked up at run time so that a Node without them still loads this addon and the
// caller falls back to node:crypto. A context is an opaque block larger than OpenSSL's
// SHA256_CTX (112 bytes).
typedef int (*sha_init_fn)(void *);
typedef int (*sha_update_fn)(void *, const void *, size_t);
typedef int (*sha_final_fn)(unsigned char *, void *);
static sha_init_fn sha_init;
static sha_update_fn sha_update;
static sha_final_fn sha_final;
static int sha_state;  // 0 unknown, 1 available, -1 not available

#define SHA_CTX_BYTES 256

typedef struct {
  unsigned char ctx[SHA_CTX_BYTES];
  int busy;      // an append is running on the thread pool
  int finished;  // digest() was called
} hasher_t;

static int sha_available(void) {
  if (sha_state != 0) return sha_state > 0;
  sha_state = -1;
  sha_init = (sha_init_fn)dlsym(RTLD_DEFAULT, "SHA256_Init");
  sha_update = (sha_update_fn)dlsym(RTLD_DEFAULT, "SHA256_Update");
  sha_final = (sha_final_fn)dlsym(RTLD_DEFAULT, "SHA256_Final");
  if (!sha_init || !sha_update || !sha_final) return 0;
  // Known answer: sha256("abc").
  static const unsigned char want[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                         0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  unsigned char ctx[SHA_CTX_BYTES], out[32];
  if (sha_init(ctx) != 1 || sha_update(ctx, "abc", 3) != 1 || sha_final(out, ctx) != 1) return 0;
  if (memcmp(out, want, 32) != 0) return 0;
  sha_state = 1;
  return 1;
}

static void hasher_free(napi_env env, void *data, void *hint) { free(data); }

static hasher_t *get_hasher(napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return (hasher_t *)p;
}

// The context in v, free to use (not busy with an append, not finished); else throws and NULL.
static hasher_t *ready_hasher(napi_env env, napi_value v) {
  hasher_t *h = get_hasher(env, v);
  if (!h) napi_throw_type_error(env, NULL, "not a sha256 context");
  else if (h->busy || h->finished) napi_throw_type_error(env, NULL, "sha256 context is busy or finished");
  else return h;
  return NULL;
}

// sha256Create() -> external, or null when Node carries no usable SHA256_* symbols
static napi_value js_sha256_create(napi_env env, napi_callback_info info) {
  napi_value out;
  if (!sha_available()) {
    napi_get_null(env, &out);
    return out;
  }
  hasher_t *h = calloc(1, sizeof *h);
  if (!h || sha_init(h->ctx) != 1) {
    free(h);
    napi_throw_error(env, NULL, "sha256: cannot create a context");
    return NULL;
  }
  napi_create_external(env, h, hasher_free, NULL, &out);
  return out;
}

// sha256Update(h, buffer): on this thread (for small amounts: resuming an ingest)
static napi_value js_sha256_update(napi_env env, napi_callback_info info) {
  ARGS(2);
  hasher_t *h = ready_hasher(env, argv[0]);
  if (!h) return NULL;
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) TYPE_ERROR("data must be a Buffer");
  if (len > 0) sha_update(h->ctx, data, len);
  return NULL;
}

// sha256Digest(h) -> lowercase hex; the context is finished after this
static napi_value js_sha256_digest(napi_env env, napi_callback_info info) {
  ARGS(1);
  hasher_t *h = ready_hasher(env, argv[0]);
  if (!h) return NULL;
  unsigned char md[32];
  char hex[65];
  sha_final(md, h->ctx);
  h->finished = 1;
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  napi_value out;
  napi_create_string_utf8(env, hex, 64, &out);
  return out;
}

#define APPEND_MAX_BUFFERS 1024

typedef struct {
  napi_async_work write_work;
  napi_async_work hash_work;
  int pending;  // jobs not completed yet (completions run on the JS thread: no race)
  napi_deferred deferred;
  napi_ref buffers_ref;
  napi_ref hasher_ref;
  hasher_t *h;
  int fd;
  int kick;
  int count;
  struct iovec iov[APPEND_MAX_BUFFERS];
  size_t written;
  int err;
  const char *syscall;
} append_t;

// The write and the hash of one append are two jobs: they run on two pool threads at once (both
// only read the buffers), so on 2 cores writing a layer is bound by the slower of the two.
static void append_write_execute(napi_env env, void *data) {
  append_t *a = data;
  int left = a->count;
  // Write everything (the fd is O_APPEND: every write lands at the end).
  struct iovec cur[APPEND_MAX_BUFFERS];
  memcpy(cur, a->iov, sizeof(struct iovec) * (size_t)a->count);
  struct iovec *p = cur;
  while (left > 0) {
    ssize_t n = writev(a->fd, p, left > IOV_MAX ? IOV_MAX : left);
    if (n < 0) {
      if (errno == EINTR) continue;
      a->err = errno;
      a->syscall = "writev";
      return;
    }
    a->written += (size_t)n;
    size_t m = (size_t)n;
    while (left > 0 && m >= p->iov_len) {
      m -= p->iov_len;
      p++;
      left--;
    }
    if (left > 0 && m > 0) {
      p->iov_base = (char *)p->iov_base + m;
      p->iov_len -= m;
    }
  }
  if (a->kick && a->written > 0) {
    // Start writing the file's dirty pages back now (without waiting), so the fsync at commit
    // finds little left to do and the disk works while the data is still arriving.
    sync_file_range(a->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  }
}

static void append_hash_execute(napi_env env, void *data) {
  append_t *a = data;
  for (int i = 0; i < a->count; i++) sha_update(a->h->ctx, a->iov[i].iov_base, a->iov[i].iov_len);
}

static void append_complete(napi_env env, napi_status status, void *data) {
  append_t *a = data;
  if (status != napi_ok && a->err == 0) {
    a->err = EIO;
    a->syscall = "append";
  }
  if (--a->pending > 0) return;
  a->h->busy = 0;
  if (a->err != 0) {
    napi_reject_deferred(env, a->deferred, errno_error(env, a->err, a->syscall, NULL));
  } else {
    napi_value n;
    napi_create_double(env, (double)a->written, &n);
    napi_resolve_deferred(env, a->deferred, n);
  }
  napi_delete_reference(env, a->buffers_ref);
  napi_delete_reference(env, a->hasher_ref);
  if (a->write_work) napi_delete_async_work(env, a->write_work);
  napi_delete_async_work(env, a->hash_work);
  free(a);
}

// Queue the hash (and, for fd >= 0, the write) of `bv`'s buffers; see appendHashed below.
static napi_value start_append(napi_env env, int32_t fd, napi_value hv, napi_value bv, bool kick) {
  hasher_t *h = ready_hasher(env, hv);
  if (!h) return NULL;
  bool is_array = false;
  uint32_t count = 0;
  if (napi_is_array(env, bv, &is_array) != napi_ok || !is_array) TYPE_ERROR("buffers must be an array");
  napi_get_array_length(env, bv, &count);
  if (count == 0 || count > APPEND_MAX_BUFFERS) TYPE_ERROR("buffers must hold 1 to 1024 Buffers");
  append_t *a = calloc(1, sizeof *a);
  if (!a) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < count; i++) {
    napi_value b;
    void *d;
    size_t len;
    bool isbuf = false;
    napi_get_element(env, bv, i, &b);
    if (napi_is_buffer(env, b, &isbuf) != napi_ok || !isbuf || napi_get_buffer_info(env, b, &d, &len) != napi_ok) {
      free(a);
      TYPE_ERROR("buffers must hold Buffers");
    }
    a->iov[i].iov_base = d;
    a->iov[i].iov_len = len;
  }
  a->count = (int)count;
  a->fd = fd;
  a->kick = kick;
  a->h = h;
  napi_value promise, name;
  // The buffers and the context stay alive (and unmoved) until the work completes.
  napi_create_reference(env, bv, 1, &a->buffers_ref);
  napi_create_reference(env, hv, 1, &a->hasher_ref);
  napi_create_promise(env, &a->deferred, &promise);
  napi_create_string_utf8(env, "mybuild.appendHashed", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, append_hash_execute, append_complete, a, &a->hash_work);
  a->pending = 1;
  if (fd < 0) {
    for (int i = 0; i < a->count; i++) a->written += a->iov[i].iov_len;
  } else {
    napi_create_async_work(env, NULL, name, append_write_execute, append_complete, a, &a->write_work);
    a->pending = 2;
    napi_queue_async_work(env, a->write_work);
  }
  h->busy = 1;
  napi_queue_async_work(env, a->hash_work);
  return promise;
}

// appendHashed(fd, h, buffers[], kick) -> Promise<bytes written>: on the thread pool, append the
// buffers to fd (opened O_APPEND) and feed them to h, in order. One call per context at a time.
// A failed write rejects; the hash has then taken bytes the file may lack (the ingest is broken).
static napi_value js_append_hashed(napi_env env, napi_callback_info info) {
  ARGS(4);
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) TYPE_ERROR("fd must be an open file descriptor");
  bool kick = false;
  napi_get_value_bool(env, argv[3], &kick);
  return start_append(env, fd, argv[1], argv[2], kick);
}

// sha256UpdateAsync(h, buffers[]) -> Promise<bytes>: appendHashed without a file: the buffers
// are fed to h on the thread pool. One call per context at a time.
static napi_value js_sha256_update_async(napi_env env, napi_callback_info info) {
  ARGS(2);
  return start_append(env, -1, argv[0], argv[1], false);
}


// ---- readahead of many files -----------------------------------------------------------------
// A copy that reads small files one after another from a cold cache waits on the disk once per
// file; asking the kernel to start reading the next ones (POSIX_FADV_WILLNEED) keeps the device
// queue full while the copy goes on. Only a hint: a file that cannot be opened is skipped.
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char **paths;
  uint32_t count;
  uint32_t done;
} prefetch_t;

#define PREFETCH_WINDOW ((off_t)128 << 10)

static void prefetch_execute(napi_env env, void *data) {
  prefetch_t *p = data;
  for (uint32_t i = 0; i < p->count; i++) {
    int fd = open(p->paths[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) continue;
    // One advice reads no more than the larger of the device's readahead window and its largest
    // request (read_ahead_kb, max_sectors_kb: often 128 KB and 1280 KB; 8 MB here): the rest of
    // a larger file (the tail of an 8.3 MB runc, its .data) would be read by page faults later.
    // Advise windows no device limits, in turn.
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      for (off_t off = 0; off < st.st_size; off += PREFETCH_WINDOW) posix_fadvise(fd, off, PREFETCH_WINDOW, POSIX_FADV_WILLNEED);
    }
    close(fd);
    p->done++;
  }
}

static void prefetch_free(prefetch_t *p) {
  for (uint32_t i = 0; i < p->count; i++) free(p->paths[i]);
  free(p->paths);
  free(p);
}

static void prefetch_complete(napi_env env, napi_status status, void *data) {
  prefetch_t *p = data;
  napi_value n;
  napi_create_uint32(env, p->done, &n);
  napi_resolve_deferred(env, p->deferred, n);
  napi_delete_async_work(env, p->work);
  prefetch_free(p);
}

// prefetch(paths[]) -> Promise<files advised>: on the thread pool, start reading each file into
// the page cache without waiting for it.
static napi_value js_prefetch(napi_env env, napi_callback_info info) {
  ARGS(1);
  bool is_array = false;
  uint32_t count = 0;
  if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array) TYPE_ERROR("paths must be an array");
  napi_get_array_length(env, argv[0], &count);
  if (count > 65536) TYPE_ERROR("at most 65536 paths at once");
  prefetch_t *p = calloc(1, sizeof *p);
  char **paths = calloc(count ? count : 1, sizeof(char *));
  if (!p || !paths) {
    free(p);
    free(paths);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  p->paths = paths;
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    char buf[PATH_MAX_LEN];
    napi_get_element(env, argv[0], i, &v);
    if (get_string(env, v, buf, sizeof buf) != 0) {
      prefetch_free(p);
      TYPE_ERROR("paths must be strings of < 4096 bytes without NUL");
    }
    paths[i] = strdup(buf);
    if (!paths[i]) {
      prefetch_free(p);
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    p->count = i + 1;
  }
  napi_value promise, name;
  napi_create_promise(env, &p->deferred, &promise);
  napi_create_string_utf8(env, "mybuild.prefetch", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, prefetch_execute, prefetch_complete, p, &p->work);
  napi_queue_async_work(env, p->work);
  return promise;
}

// ---- directory listing with lstat ------------------------------------------------------------
// Listing a build context costs a readdir and one lstat per entry; through Node each lstat makes
// a full fs.Stats (with four Date objects). Here one call lists a directory and lstats every
// entry (statx relative to the open directory, as libuv's lstat does), and returns the fields
// packed, in fs.Stats binding order, so JS derives exactly the numbers lstatSync would give.
#include <dirent.h>

#define SCAN_FIELDS 18

static int scan_grow(void **buf, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 4096;
  while (n < need) n *= 2;
  void *p = realloc(*buf, n);
  if (!p) return -1;
  *buf = p;
  *cap = n;
  return 0;
}

// scandir(path) -> [names, stats]: the entries of directory `path` (not '.' and '..') in
// directory order; `names` joined by NUL; `stats` SCAN_FIELDS float64 per entry: dev, mode,
// nlink, uid, gid, rdev, blksize, ino, size, blocks, then atime, mtime, ctime, birthtime as
// (seconds, nanoseconds) pairs. An entry gone before its lstat is left out; one whose lstat
// fails otherwise has mode -1 (the caller lstats it again to report the error). Throws (code =
// errno name, syscall 'scandir') when the directory cannot be opened or read.
static napi_value js_scandir(napi_env env, napi_callback_info info) {
  ARGS(1);
  PATH_ARG(0, path);
  DIR *d = opendir(path);
  if (!d) return throw_errno(env, errno, "scandir", path);
  int dfd = dirfd(d);
  char *names = NULL;
  size_t names_cap = 0, names_len = 0;
  double *nums = NULL;
  size_t nums_cap = 0, count = 0;
  int err = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      err = errno;
      break;
    }
    const char *name = e->d_name;
    if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
    struct statx sx;
    int failed = 0;
    if (statx(dfd, name, AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT, STATX_BASIC_STATS | STATX_BTIME, &sx) != 0) {
      if (errno == ENOENT) continue;  // removed meanwhile
      failed = 1;
    }
    size_t len = strlen(name);
    if (scan_grow((void **)&names, &names_cap, names_len + len + 1) != 0 ||
        scan_grow((void **)&nums, &nums_cap, (count + 1) * SCAN_FIELDS * sizeof(double)) != 0) {
      err = ENOMEM;
      break;
    }
    if (count > 0) names[names_len++] = 0;
    memcpy(names + names_len, name, len);
    names_len += len;
    double *f = nums + count * SCAN_FIELDS;
    if (failed) {
      memset(f, 0, SCAN_FIELDS * sizeof(double));
      f[1] = -1;
    } else {
      // as libuv's statx conversion, then Node's (every field a double)
      f[0] = (double)(uint64_t)makedev(sx.stx_dev_major, sx.stx_dev_minor);
      f[1] = (double)sx.stx_mode;
      f[2] = (double)sx.stx_nlink;
      f[3] = (double)sx.stx_uid;
      f[4] = (double)sx.stx_gid;
      f[5] = (double)(uint64_t)makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
      f[6] = (double)sx.stx_blksize;
      f[7] = (double)sx.stx_ino;
      f[8] = (double)sx.stx_size;
      f[9] = (double)sx.stx_blocks;
      f[10] = (double)(long)sx.stx_atime.tv_sec;
      f[11] = (double)(long)sx.stx_atime.tv_nsec;
      f[12] = (double)(long)sx.stx_mtime.tv_sec;
      f[13] = (double)(long)sx.stx_mtime.tv_nsec;
      f[14] = (double)(long)sx.stx_ctime.tv_sec;
      f[15] = (double)(long)sx.stx_ctime.tv_nsec;
      f[16] = (double)(long)sx.stx_btime.tv_sec;
      f[17] = (double)(long)sx.stx_btime.tv_nsec;
    }
    count++;
  }
  closedir(d);
  if (err != 0) {
    free(names);
    free(nums);
    if (err == ENOMEM) {
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    return throw_errno(env, err, "scandir", path);
  }
  napi_value result, names_str, ab, arr;
  void *data = NULL;
  size_t bytes = count * SCAN_FIELDS * sizeof(double);
  if (napi_create_string_utf8(env, names ? names : "", names_len, &names_str) != napi_ok ||
      napi_create_arraybuffer(env, bytes, &data, &ab) != napi_ok) {
    free(names);
    free(nums);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (bytes > 0) memcpy(data, nums, bytes);
  free(names);
  free(nums);
  napi_create_typedarray(env, napi_float64_array, count * SCAN_FIELDS, ab, 0, &arr);
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, names_str);
  napi_set_element(env, result, 1, arr);
  return result;
}

// ---- mount and umount ------------------------------------------------------------------------
// Every RUN and COPY step mounts an overlay and unmounts it after; running mount(8)/umount(8)
// for that costs a fork, an exec and libmount's parsing (~4 ms a pair here) and blocks the event
// loop during the fork. Both calls run on the thread pool: unmounting an overlay syncs its upper
// filesystem, which can take a while after a step wrote a lot.
#include <sys/mount.h>

#define MOUNT_DATA_CAP 4096 // the kernel copies one page of mount data: longer would be cut

typedef enum { OP_MOUNT, OP_UMOUNT, OP_SYNCFS } mount_op_kind;
static const char *const OP_SYSCALL[] = {"mount", "umount2", "syncfs"};
static const char *const OP_WORK_NAME[] = {"mybuild.mount", "mybuild.umount", "mybuild.syncfs"};

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  mount_op_kind kind;
  unsigned long flags;
  int err;
  char source[PATH_MAX_LEN];
  char target[PATH_MAX_LEN]; // for syncfs: a path on the filesystem
  char fstype[NAME_MAX_LEN];
  char data[MOUNT_DATA_CAP];
} mount_op_t;

static void mount_execute(napi_env env, void *data) {
  mount_op_t *m = data;
  int r;
  switch (m->kind) {
    case OP_SYNCFS: {
      int fd = open(m->target, O_RDONLY | O_CLOEXEC | O_NOCTTY);
      r = fd < 0 ? -1 : syncfs(fd);
      int e = errno;
      if (fd >= 0) close(fd);
      errno = e;
      break;
    }
    case OP_UMOUNT:
      r = umount2(m->target, (int)m->flags);
      break;
    default:
      r = mount(m->source[0] ? m->source : NULL, m->target, m->fstype[0] ? m->fstype : NULL, m->flags, m->data[0] ? m->data : NULL);
  }
  m->err = r == 0 ? 0 : errno;
}

static void mount_complete(napi_env env, napi_status status, void *data) {
  mount_op_t *m = data;
  settle_void(env, m->deferred, m->err, OP_SYSCALL[m->kind], m->target);
  napi_delete_async_work(env, m->work);
  free(m);
}

static napi_value queue_mount(napi_env env, mount_op_t *m) {
  napi_value promise, name;
  napi_create_promise(env, &m->deferred, &promise);
  napi_create_string_utf8(env, OP_WORK_NAME[m->kind], NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, mount_execute, mount_complete, m, &m->work);
  napi_queue_async_work(env, m->work);
  return promise;
}

// A new operation on the non-empty path `target_v`; NULL (with a JS exception) when out of
// memory or the path is not a string of < 4096 bytes without NUL.
static mount_op_t *new_mount_op(napi_env env, mount_op_kind kind, napi_value target_v) {
  mount_op_t *m = calloc(1, sizeof *m);
  if (!m) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  m->kind = kind;
  if (get_string(env, target_v, m->target, sizeof m->target) != 0 || m->target[0] == 0) {
    free(m);
    napi_throw_type_error(env, NULL, "the target path must be a non-empty string of < 4096 bytes without NUL");
    return NULL;
  }
  return m;
}

static int get_flags(napi_env env, napi_value v, unsigned long *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d < 0 || d > 4294967295.0 || d != (double)(unsigned long)d) return -1;
  *out = (unsigned long)d;
  return 0;
}

// mount(source, target, fstype, flags, data) -> Promise<void>: mount(2) on the thread pool;
// '' for source, fstype or data passes NULL. Rejects with the errno name as `code`.
static napi_value js_mount(napi_env env, napi_callback_info info) {
  ARGS(5);
  mount_op_t *m = new_mount_op(env, OP_MOUNT, argv[1]);
  if (!m) return NULL;
  if (get_string(env, argv[0], m->source, sizeof m->source) != 0) {
    free(m);
    TYPE_ERROR("source must be a string of < 4096 bytes without NUL");
  }
  if (get_string(env, argv[2], m->fstype, sizeof m->fstype) != 0) {
    free(m);
    TYPE_ERROR("fstype must be a string of < 256 bytes without NUL");
  }
  if (get_flags(env, argv[3], &m->flags) != 0) {
    free(m);
    TYPE_ERROR("flags must be an unsigned 32-bit integer");
  }
  if (get_string(env, argv[4], m->data, sizeof m->data) != 0) {
    free(m);
    TYPE_ERROR("data must be a string of < 4096 bytes without NUL (the kernel takes one page)");
  }
  return queue_mount(env, m);
}

// umount(target, flags) -> Promise<void>: umount2(2) on the thread pool.
static napi_value js_umount(napi_env env, napi_callback_info info) {
  ARGS(2);
  mount_op_t *m = new_mount_op(env, OP_UMOUNT, argv[0]);
  if (!m) return NULL;
  if (get_flags(env, argv[1], &m->flags) != 0) {
    free(m);
    TYPE_ERROR("flags must be an unsigned 32-bit integer");
  }
  return queue_mount(env, m);
}

// syncfs(path) -> Promise<void>: on the thread pool, write back everything dirty on the
// filesystem holding `path` (one call instead of an fsync per file and directory).
static napi_value js_syncfs(napi_env env, napi_callback_info info) {
  ARGS(1);
  mount_op_t *m = new_mount_op(env, OP_SYNCFS, argv[0]);
  return m ? queue_mount(env, m) : NULL;
}

// writeFileAtomic(path, tmp, data, mode) -> Promise<void>: on the thread pool, in one go: create
// `tmp` (O_EXCL; `mode` exactly, whatever the umask), write `data` (a Uint8Array, copied first),
// fsync, close, rename it to `path`, fsync the directory of `path`. Before the rename, a failure
// removes `tmp`. Rejects with the errno name as `code` and the failed call as `syscall`. One work
// item instead of the seven round trips through the thread pool that fs.promises takes.
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char path[PATH_MAX_LEN];
  char tmp[PATH_MAX_LEN];
  char dir[PATH_MAX_LEN];
  unsigned char *data;
  size_t len;
  mode_t mode;
  int err;
  const char *syscall;
  const char *where;
} atomic_write_t;

static void atomic_write_execute(napi_env env, void *data) {
  atomic_write_t *a = data;
  int fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, a->mode);
  if (fd < 0) {
    a->err = errno, a->syscall = "open", a->where = a->tmp;
    return;
  }
  const char *failed = NULL;
  if (fchmod(fd, a->mode) != 0) failed = "fchmod";
  for (size_t off = 0; !failed && off < a->len;) {
    ssize_t n = write(fd, a->data + off, a->len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      failed = "write";
    } else {
      off += (size_t)n;
    }
  }
  if (!failed && fsync(fd) != 0) failed = "fsync";
  if (failed) {
    a->err = errno;
    close(fd);
  } else if (close(fd) != 0) {
    a->err = errno, failed = "close";
  } else if (rename(a->tmp, a->path) != 0) {
    a->err = errno, failed = "rename";
  }
  if (failed) {
    a->syscall = failed, a->where = a->tmp;
    unlink(a->tmp);
    return;
  }
  a->err = fsync_dir(a->dir, &a->syscall);
  if (a->err) a->where = a->dir;
}

static void atomic_write_complete(napi_env env, napi_status status, void *data) {
  atomic_write_t *a = data;
  settle_void(env, a->deferred, a->err, a->syscall, a->where);
  napi_delete_async_work(env, a->work);
  free(a->data);
  free(a);
}

static napi_value js_write_file_atomic(napi_env env, napi_callback_info info) {
  ARGS(4);
  bool is_typed = false;
  napi_typedarray_type type;
  size_t len = 0, offset = 0;
  void *bytes = NULL;
  napi_value ab;
  if (napi_is_typedarray(env, argv[2], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[2], &type, &len, &bytes, &ab, &offset) != napi_ok || type != napi_uint8_array) {
    TYPE_ERROR("data must be a Uint8Array");
  }
  uint32_t mode = 0;
  if (napi_get_value_uint32(env, argv[3], &mode) != napi_ok || mode > 07777) TYPE_ERROR("mode must be a file mode (0 to 0o7777)");
  atomic_write_t *a = calloc(1, sizeof *a);
  if (!a) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (get_string(env, argv[0], a->path, sizeof a->path) != 0 || a->path[0] == 0 ||
      get_string(env, argv[1], a->tmp, sizeof a->tmp) != 0 || a->tmp[0] == 0) {
    free(a);
    TYPE_ERROR("paths must be non-empty strings of < 4096 bytes without NUL");
  }
  // the directory holding `path`: what is before its last slash ("/" for a top-level name, "." for none)
  char *slash = strrchr(a->path, '/');
  if (!slash) {
    strcpy(a->dir, ".");
  } else if (slash == a->path) {
    strcpy(a->dir, "/");
  } else {
    memcpy(a->dir, a->path, (size_t)(slash - a->path));
    a->dir[slash - a->path] = 0;
  }
  a->data = malloc(len ? len : 1);
  if (!a->data) {
    free(a);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (len) memcpy(a->data, bytes, len);
  a->len = len;
  a->mode = (mode_t)mode;
  napi_value promise, name;
  if (napi_create_promise(env, &a->deferred, &promise) != napi_ok) {
    free(a->data);
    free(a);
    return NULL; // the exception N-API set
  }
  napi_create_string_utf8(env, "mybuild.writeFileAtomic", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, atomic_write_execute, atomic_write_complete, a, &a->work) != napi_ok) {
    free(a->data);
    free(a);
    napi_throw_error(env, NULL, "cannot queue the write");
    return NULL;
  }
  if (napi_queue_async_work(env, a->work) != napi_ok) {
    napi_delete_async_work(env, a->work);
    free(a->data);
    free(a);
    napi_throw_error(env, NULL, "cannot queue the write");
    return NULL;
  }
  return promise;
}

// randomBytes(size) -> Buffer of `size` (1 to 256) bytes from getrandom(2), the kernel's
// cryptographic source (what node:crypto's randomBytes draws on, without loading node:crypto).
static napi_value js_random_bytes(napi_env env, napi_callback_info info) {
  ARGS(1);
  uint32_t size = 0;
  if (napi_get_value_uint32(env, argv[0], &size) != napi_ok || size == 0 || size > 256) TYPE_ERROR("size must be 1 to 256");
  void *data;
  napi_value out;
  if (napi_create_buffer(env, size, &data, &out) != napi_ok) return NULL;
  size_t got = 0;
  while (got < size) {
    ssize_t n = getrandom((char *)data + got, size - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return throw_errno(env, errno, "getrandom", NULL);
    got += (size_t)n;
  }
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lremovexattr", NULL, js_lremovexattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"flock", NULL, js_flock, NULL, NULL, NULL, napi_enumerable, NULL},
    {"funlock", NULL, js_funlock, NULL, NULL, NULL, napi_enumerable, NULL},
    {"fsyncdir", NULL, js_fsyncdir, NULL, NULL, NULL, napi_enumerable, NULL},
    {"devnums", NULL, js_devnums, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lutimens", NULL, js_lutimens, NULL, NULL, NULL, napi_enumerable, NULL},
    {"futimens", NULL, js_futimens, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sha256Create", NULL, js_sha256_create, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sha256Update", NULL, js_sha256_update, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sha256Digest", NULL, js_sha256_digest, NULL, NULL, NULL, napi_enumerable, NULL},
    {"appendHashed", NULL, js_append_hashed, NULL, NULL, NULL, napi_enumerable, NULL},
    {"prefetch", NULL, js_prefetch, NULL, NULL, NULL, napi_enumerable, NULL},
    {"scandir", NULL, js_scandir, NULL, NULL, NULL, napi_enumerable, NULL},
    {"mount", NULL, js_mount, NULL, NULL, NULL, napi_enumerable, NULL},
    {"umount", NULL, js_umount, NULL, NULL, NULL, napi_enumerable, NULL},
    {"syncfs", NULL, js_syncfs, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sha256UpdateAsync", NULL, js_sha256_update_async, NULL, NULL, NULL, napi_enumerable, NULL},
    {"writeFileAtomic", NULL, js_write_file_atomic, NULL, NULL, NULL, napi_enumerable, NULL},
    {"randomBytes", NULL, js_random_bytes, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
