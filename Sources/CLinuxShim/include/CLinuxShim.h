// Linux kernel interfaces Swift cannot import on its own: ioctl request numbers are function-like
// macros, and struct fields that are C arrays import as tuples. Every function returns -errno on
// failure so the caller sees the error of this call, not of a later one.
#ifndef IMGTOOL_CLINUXSHIM_H
#define IMGTOOL_CLINUXSHIM_H

#include <stddef.h>
#include <stdint.h>
#include <linux/loop.h>
#include <linux/fs.h>
#include <linux/blkpg.h>
#include <linux/hdreg.h>
#include <sys/xattr.h>  // llistxattr, lgetxattr: not in Swift's Glibc module

static const unsigned long IMGTOOL_LOOP_CTL_GET_FREE = LOOP_CTL_GET_FREE;
static const unsigned long IMGTOOL_LOOP_CONFIGURE = LOOP_CONFIGURE;
static const unsigned long IMGTOOL_LOOP_SET_BLOCK_SIZE = LOOP_SET_BLOCK_SIZE;
static const unsigned long IMGTOOL_LOOP_SET_FD = LOOP_SET_FD;
static const unsigned long IMGTOOL_LOOP_CLR_FD = LOOP_CLR_FD;
static const unsigned long IMGTOOL_LOOP_SET_STATUS64 = LOOP_SET_STATUS64;
static const unsigned long IMGTOOL_LOOP_GET_STATUS64 = LOOP_GET_STATUS64;
static const unsigned long IMGTOOL_BLKGETSIZE64 = BLKGETSIZE64;
static const unsigned long IMGTOOL_BLKSSZGET = BLKSSZGET;
static const unsigned long IMGTOOL_BLKPG = BLKPG;
static const unsigned long IMGTOOL_HDIO_GETGEO = HDIO_GETGEO;
static const unsigned long IMGTOOL_FICLONE = FICLONE;

static const uint32_t IMGTOOL_LO_FLAGS_READ_ONLY = LO_FLAGS_READ_ONLY;
static const uint32_t IMGTOOL_LO_FLAGS_AUTOCLEAR = LO_FLAGS_AUTOCLEAR;
static const uint32_t IMGTOOL_LO_FLAGS_PARTSCAN = LO_FLAGS_PARTSCAN;
static const int IMGTOOL_LO_NAME_SIZE = LO_NAME_SIZE;
static const int IMGTOOL_BLKPG_ADD_PARTITION = BLKPG_ADD_PARTITION;
static const int IMGTOOL_BLKPG_DEL_PARTITION = BLKPG_DEL_PARTITION;
static const int IMGTOOL_SEEK_DATA = SEEK_DATA;  // glibc hides these without _GNU_SOURCE
static const int IMGTOOL_SEEK_HOLE = SEEK_HOLE;

/// ioctl(2) with a pointer argument; returns the result or -errno.
int imgtool_ioctl_ptr(int fd, unsigned long request, void *arg);
/// ioctl(2) with an integer argument; returns the result or -errno.
int imgtool_ioctl_int(int fd, unsigned long request, unsigned long arg);

/// pipe2(2) with O_CLOEXEC (Glibc's Swift overlay does not export pipe2); returns 0 or -errno.
int imgtool_pipe_cloexec(int fds[2]);

/// memfd_create(2) with MFD_CLOEXEC (glibc declares it only with _GNU_SOURCE); returns the
/// descriptor or -errno.
int imgtool_memfd_create(const char *name);

/// open(2) of an unnamed file (O_TMPFILE) in directory `dir`, read-write, close-on-exec, with
/// `mode`; returns the descriptor or -errno (EOPNOTSUPP where the filesystem has no O_TMPFILE).
int imgtool_open_tmpfile(const char *dir, unsigned int mode);

/// renameat2(2) of `from` to `to` with RENAME_NOREPLACE (glibc declares it only with
/// _GNU_SOURCE): EEXIST when `to` exists; returns 0 or -errno.
int imgtool_rename_noreplace(const char *from, const char *to);

/// copy_file_range(2) of `length` bytes from `in` at `in_offset` to `out` at `out_offset`;
/// returns the count copied (0 at the end of `in`) or -errno.
long long imgtool_copy_file_range(int in, long long in_offset, int out, long long out_offset, unsigned long long length);

/// Copies `name` (truncated, NUL-terminated) into lo_file_name.
void imgtool_loop_info_set_file_name(struct loop_info64 *info, const char *name);
/// lo_file_name as a NUL-terminated string (the kernel does not guarantee the NUL; this does).
void imgtool_loop_info_get_file_name(const struct loop_info64 *info, char out[LO_NAME_SIZE + 1]);

/// BLKPG_ADD_PARTITION / BLKPG_DEL_PARTITION on a whole-disk block device; bytes, not sectors.
int imgtool_blkpg(int fd, int op, int number, long long start, long long length);

#endif
