#define _GNU_SOURCE
#include "CLinuxShim.h"
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

int imgtool_ioctl_ptr(int fd, unsigned long request, void *arg) {
    int r;
    do { r = ioctl(fd, request, arg); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int imgtool_ioctl_int(int fd, unsigned long request, unsigned long arg) {
    int r;
    do { r = ioctl(fd, request, arg); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int imgtool_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) < 0 ? -errno : 0;
}

int imgtool_memfd_create(const char *name) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void imgtool_loop_info_set_file_name(struct loop_info64 *info, const char *name) {
    memset(info->lo_file_name, 0, sizeof info->lo_file_name);
    strncpy((char *)info->lo_file_name, name, sizeof info->lo_file_name - 1);
}

void imgtool_loop_info_get_file_name(const struct loop_info64 *info, char out[LO_NAME_SIZE + 1]) {
    memcpy(out, info->lo_file_name, LO_NAME_SIZE);
    out[LO_NAME_SIZE] = '\0';
}

int imgtool_blkpg(int fd, int op, int number, long long start, long long length) {
    struct blkpg_partition part;
    memset(&part, 0, sizeof part);
    part.start = start;
    part.length = length;
    part.pno = number;
    struct blkpg_ioctl_arg arg = { .op = op, .flags = 0, .datalen = sizeof part, .data = &part };
    return imgtool_ioctl_ptr(fd, BLKPG, &arg);
}

int imgtool_open_tmpfile(const char *dir, unsigned int mode) {
    int fd;
    do { fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode); } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

int imgtool_rename_noreplace(const char *from, const char *to) {
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) < 0 ? -errno : 0;
}

long long imgtool_copy_file_range(int in, long long in_offset, int out, long long out_offset, unsigned long long length) {
    off64_t from = in_offset, to = out_offset;
    ssize_t n;
    do { n = copy_file_range(in, &from, out, &to, length, 0); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}
