/* The five libudev functions libdevmapper calls (libdm/libdm-common.c, _check_udev_is_running),
 * so that libdm can be built with --enable-udev_sync and linked statically: Debian ships no
 * libudev.a. Whether udevd runs is decided as libudev itself decides it (systemd's
 * src/libudev/libudev-queue.c): /run/udev/control exists. Everything else of udev sync (the
 * cookie semaphores that the 55-dm/95-dm udev rules complete with `dmsetup udevcomplete`) is
 * libdm's own code and does not go through libudev. Built by Scripts/build-libdevmapper.sh. */
#include <unistd.h>

#include "libudev.h"

struct udev { int unused; };
struct udev_queue { int unused; };

/* libdm only checks these for NULL and hands them back to the functions below. */
static struct udev imgtool_udev_context;
static struct udev_queue imgtool_udev_queue;

struct udev *udev_new(void) { return &imgtool_udev_context; }
struct udev *udev_unref(struct udev *udev) { (void)udev; return NULL; }
struct udev_queue *udev_queue_new(struct udev *udev) { (void)udev; return &imgtool_udev_queue; }
struct udev_queue *udev_queue_unref(struct udev_queue *queue) { (void)queue; return NULL; }
int udev_queue_get_udev_is_active(struct udev_queue *queue)
{
	(void)queue;
	return access("/run/udev/control", F_OK) >= 0;
}
