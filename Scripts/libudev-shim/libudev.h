/* The part of <libudev.h> that libdevmapper uses; see libudev.c beside this file. Only on the
 * include path while libdm is compiled, never installed. */
#ifndef IMGTOOL_LIBUDEV_SHIM_H
#define IMGTOOL_LIBUDEV_SHIM_H

struct udev;
struct udev_queue;

struct udev *udev_new(void);
struct udev *udev_unref(struct udev *udev);
struct udev_queue *udev_queue_new(struct udev *udev);
struct udev_queue *udev_queue_unref(struct udev_queue *udev_queue);
int udev_queue_get_udev_is_active(struct udev_queue *udev_queue);

#endif
